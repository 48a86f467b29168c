"""The Configure screen's form: the keys a person most often changes, a free `--set` line, the
run's folder name and how many processes train it (devices).

The form shows a preset's values; every field whose text differs from the preset becomes a
`key=value` override, exactly what would follow `--set` on the command line. So the form never
holds a config of its own: the engine's `load_config(preset, overrides)` decides what is valid.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Grid
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input, Label, Select

from core.config import CHOICES, Config
from mdlm_tui.common.guard import Guarded
from mdlm_tui.launch import parse_extra_overrides


@dataclass(frozen=True)
class FormField:
    key: str  # the config key, as after --set
    label: str
    choices: tuple[str, ...] | None = None  # a Select instead of an Input
    placeholder: str = ""


FIELDS = (
    FormField("schedule.name", "schedule", CHOICES["schedule.name"]),
    FormField("schedule.power", "power p"),
    FormField("masking.kind", "masking", CHOICES["masking.kind"]),
    FormField("masking.p_freq", "p_freq"),
    FormField("masking.curriculum", "curriculum", ("true", "false")),
    FormField("model.hidden_size", "hidden size"),
    FormField("model.num_layers", "layers"),
    FormField("model.num_heads", "heads"),
    FormField("data.path", "data path", placeholder="embedded corpus"),
    FormField("train.budget", "budget", placeholder="e.g. 500 steps, 50M tokens, 10 epochs"),
)
EXTRA_ID = "extra-overrides"
RUN_NAME_ID = "configure-run-name"
DEVICES_ID = "configure-devices"


def field_id(key: str) -> str:
    return "field-" + key.replace(".", "-").replace("_", "-")


def config_text(cfg: Config, key: str) -> str:
    """A config value as the form shows it: booleans as true/false, None as empty."""
    section, name = key.split(".")
    value = getattr(getattr(cfg, section), name)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class ConfigureForm(Guarded, Widget):
    """Fields for the common keys and a free line of extra overrides; posts Edited on any change."""

    DEFAULT_CSS = """
    ConfigureForm { height: auto; }
    ConfigureForm Grid { grid-size: 2; grid-columns: 12 1fr; grid-rows: 1; grid-gutter: 0 1; height: auto; }
    ConfigureForm Grid Label { width: 12; }
    ConfigureForm .configure-extra-label { margin-top: 1; width: 1fr; }
    ConfigureForm #configure-run-name-row { margin-top: 1; }
    """

    class Edited(Message):
        """Some field changed; the screen re-validates (debounced)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._baseline: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        with Grid():
            for spec in FIELDS:
                yield Label(spec.label)
                if spec.choices:
                    yield Select(
                        [(c, c) for c in spec.choices], allow_blank=False, compact=True, id=field_id(spec.key)
                    )
                else:
                    yield Input(placeholder=spec.placeholder, compact=True, id=field_id(spec.key))
        yield Label("extra --set  (k=v; k=v ...)", classes="configure-extra-label")
        yield Input(placeholder="e.g. train.budget=20 steps; train.lr=1e-3", compact=True, id=EXTRA_ID)
        # after the --set line, so the Tabs that reach it from the preset picker stay the same
        with Grid(id="configure-run-name-row"):
            yield Label("run name")
            yield Input(compact=True, id=RUN_NAME_ID)
            # processes on this node (`--nproc-per-node`), last so every Tab count above still holds
            yield Label("devices")
            yield Input(placeholder="1 (one process)", compact=True, id=DEVICES_ID)

    def show_config(self, cfg: Config, default_run_name: str = "") -> None:
        """Fill the fields with a freshly loaded preset; that preset becomes the baseline. A field
        already changed from the previous preset keeps its text: a person's edit is never overwritten,
        it stays an override on the new preset."""
        edited = {
            spec.key
            for spec in FIELDS
            if spec.key in self._baseline and self.field_text(spec.key) != self._baseline[spec.key]
        }
        self._baseline = {spec.key: config_text(cfg, spec.key) for spec in FIELDS}
        self.query_one(f"#{RUN_NAME_ID}", Input).placeholder = default_run_name
        for spec in FIELDS:
            if spec.key in edited:
                continue
            widget = self.query_one(f"#{field_id(spec.key)}")
            text = self._baseline[spec.key]
            if isinstance(widget, Select):
                # a preset may hold a value the Select does not list; the baseline then stays as is
                if text in (spec.choices or ()):
                    widget.value = text
            else:
                widget.value = text

    def field_text(self, key: str) -> str:
        widget = self.query_one(f"#{field_id(key)}")
        value = widget.value
        return "" if value is Select.NULL or value is None else str(value).strip()

    def run_name(self) -> str:
        return self.query_one(f"#{RUN_NAME_ID}", Input).value.strip()

    def devices(self) -> str:
        return self.query_one(f"#{DEVICES_ID}", Input).value.strip()

    def set_field(self, key: str, text: str) -> None:
        self.query_one(f"#{field_id(key)}").value = text

    def overrides(self) -> list[str]:
        """`key=value` for each field that differs from the preset, then the extra line's."""
        changed = [
            f"{spec.key}={self.field_text(spec.key)}"
            for spec in FIELDS
            if spec.key in self._baseline and self.field_text(spec.key) != self._baseline[spec.key]
        ]
        return changed + parse_extra_overrides(self.query_one(f"#{EXTRA_ID}", Input).value)

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Edited())

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.post_message(self.Edited())
