"""What the Runs screen knows of each run folder, read cheaply enough to repeat every couple of seconds:
the runs under the runs root (a sweep folder's runs included), and each run's latest numbers and recipe.

metrics.jsonl is read incrementally and config.yaml again only when it changes; everything here
skips what it cannot read, since a run folder holds whatever anyone wrote into it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.runs import TRASH_FOLDER, RunDir, is_number, run_health, valid_metrics_record
from mdlm_tui.common import formatting as fmt
from mdlm_tui.watcher import FileTail, latest_eval_report, mtime_or_zero

SWEEP_INDEX = "sweep.json"  # written by `mdlm-tui sweep` in its sweep folder
# what a metrics line of each kind holds, found without parsing the line
MARKERS = {"train": '"event": "train"', "dev": '"dev_loss"', "eval": '"event": "eval"'}
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader where PyYAML has it


@dataclass
class RunRow:
    path: Path
    status: dict
    health: str
    loss: float | None
    eval_label: str
    age_s: float | None
    problems: list[str]  # what could not be read (and was skipped)
    group: str | None = None  # the sweep the run belongs to
    eval_macro: float | None = None
    preset: str = ""
    recipe: str = ""  # schedule, masking and model size in a few words
    dev_loss: float | None = None
    tokens_per_s: float | None = None
    duration_s: float | None = None

    @property
    def name(self) -> str:
        """`sweep/run` for a sweep's run, the folder's name otherwise."""
        return f"{self.group}/{self.path.name}" if self.group else self.path.name


# ---------------------------------------------------------------- finding runs


def _is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file() or (path / "status.json").is_file()


@dataclass
class _SweepCache:
    """sweep.json's run paths, parsed again only when the file changes: the screen lists every 2 s."""

    parsed: dict[Path, tuple[float, list[Path]]] = field(default_factory=dict)

    def paths(self, folder: Path) -> list[Path]:
        index = folder / SWEEP_INDEX
        mtime = mtime_or_zero(index)
        cached = self.parsed.get(folder)
        if cached is None or cached[0] != mtime:
            cached = self.parsed[folder] = (mtime, _sweep_paths(folder, _json(index)))
        return cached[1]


def _sweep_paths(folder: Path, index: dict) -> list[Path]:
    """The run folders a sweep index names (paths relative to the sweep folder); [] for a garbage index."""
    entries = index.get("runs")
    if not isinstance(entries, list):
        return []
    found = []
    for entry in entries:
        path = entry.get("path") if isinstance(entry, dict) else None
        if isinstance(path, str) and path.strip():
            found.append(Path(os.path.normpath(folder / path)))
    return found


_SWEEPS = _SweepCache()


def find_grouped_runs(root: Path) -> list[tuple[Path, str | None]]:
    """(run folder, sweep name or None) of every run under root, each once, newest folder first.

    A folder directly under root is a run when it holds config.yaml or status.json; one holding
    sweep.json is a sweep, never a run itself: its runs are the folders its index names and its
    direct subfolders that are runs (so a garbage index still lists them)."""
    if not root.is_dir():
        return []
    found: dict[Path, str | None] = {}
    for folder in _subfolders(root):
        if (folder / SWEEP_INDEX).is_file():
            for run in [*_SWEEPS.paths(folder), *_subfolders(folder)]:
                if run not in found and _is_run(run):
                    found[run] = folder.name
        elif _is_run(folder):
            found.setdefault(folder, None)
    return sorted(found.items(), key=lambda item: mtime_or_zero(item[0]), reverse=True)


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.name != TRASH_FOLDER and p.is_dir()]
    except OSError:  # gone or unreadable since it was seen
        return []


def find_runs(root: Path) -> list[Path]:
    """Every run folder under root (a sweep's included), newest first."""
    return [path for path, _group in find_grouped_runs(root)]


# ---------------------------------------------------------------- reading one run


class RunSummaries:
    """The latest numbers of each run, read incrementally so a refresh costs only new lines."""

    def __init__(self):
        self._tails: dict[Path, FileTail] = {}
        self._latest: dict[Path, dict] = {}
        self._eval_reports: dict[Path, tuple[float, dict]] = {}
        self._recipes: dict[Path, tuple[float, dict]] = {}

    def row(self, path: Path, now: float, group: str | None = None) -> RunRow:
        run = RunDir(path)
        problems: list[str] = []
        status = run.read_status(problems)
        latest = self._read_new_records(run)
        train = latest.get("train", {})
        loss = status.get("loss", train.get("loss"))
        # the newest saved report first, as the Train screen shows it; else the trainer's own eval event
        evaluation = self._latest_report(run) or latest.get("eval")
        heartbeat = status.get("heartbeat")
        # a status.json that is there but could not be read at all marks the run, rather than hiding it
        health = "unreadable" if problems and not status else run_health(status)
        recipe = self._recipe(run)
        return RunRow(
            path,
            status,
            health,
            loss,
            fmt.eval_label(evaluation),
            now - heartbeat if heartbeat else None,
            problems,
            group=group,
            eval_macro=_number((evaluation or {}).get("macro")),
            preset=recipe.get("preset", ""),
            recipe=recipe.get("summary", ""),
            dev_loss=_number(latest.get("dev", {}).get("dev_loss", status.get("dev_loss"))),
            tokens_per_s=_number(train.get("tokens_per_s")),
            duration_s=_duration(status, train, latest.get("first_time")),
        )

    def _read_new_records(self, run: RunDir) -> dict:
        """The newest train, dev and eval records and the first record's time, updated from new lines."""
        tail = self._tails.setdefault(run.path, FileTail(run.metrics_path))
        lines = tail.read_lines()
        latest = self._latest.setdefault(run.path, {})
        if tail.reset:
            latest.clear()
        # parse only the newest line of each kind: a refresh stays cheap
        for kind, marker in MARKERS.items():
            for line in reversed(lines):
                if marker in line and valid_metrics_record(record := _json(line)):
                    latest[kind] = record
                    break
        if "first_time" not in latest:
            for line in lines:
                if valid_metrics_record(record := _json(line)) and is_number(record.get("time")):
                    latest["first_time"] = record["time"]
                    break
        return latest

    def _latest_report(self, run: RunDir) -> dict:
        """The newest saved eval report, re-read only when the eval/ folder changes."""
        mtime = mtime_or_zero(run.eval_dir)
        cached = self._eval_reports.get(run.path)
        if cached is None or cached[0] != mtime:
            cached = self._eval_reports[run.path] = (mtime, latest_eval_report(run.eval_dir))
        return cached[1]

    def _recipe(self, run: RunDir) -> dict:
        """The preset and recipe of config.yaml, re-read only when the file changes."""
        mtime = mtime_or_zero(run.config_path)
        cached = self._recipes.get(run.path)
        if cached is None or cached[0] != mtime:
            cached = self._recipes[run.path] = (mtime, read_recipe(run.config_path))
        return cached[1]

    def forget(self, path: Path) -> None:
        for cache in (self._tails, self._latest, self._eval_reports, self._recipes):
            cache.pop(path, None)


def _duration(status: dict, train: dict, first_time: float | None) -> float | None:
    """The training time the trainer counted (at its end, or at its latest train record: both grow
    across resumes, and a resumed run's status still holds the last end's until it ends again), else
    the wall time from the first record to the latest heartbeat."""
    counted = [value for value in (status.get("elapsed_s"), train.get("elapsed")) if is_number(value)]
    if counted and max(counted) >= 0:
        return float(max(counted))
    heartbeat = status.get("heartbeat")
    if heartbeat and first_time is not None and heartbeat >= first_time:
        return heartbeat - first_time
    return None


def _number(value) -> float | None:
    return float(value) if is_number(value) else None


def _json(source: str | Path) -> dict:
    """A JSON object from a line or a file; {} for anything else (run folders hold what anyone wrote)."""
    try:
        found = json.loads(source.read_bytes() if isinstance(source, Path) else source)
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        return {}
    return found if isinstance(found, dict) else {}


# ---------------------------------------------------------------- the recipe


def read_recipe(config_path: Path) -> dict:
    """{"preset": config's name, "summary": "cosine p1, freq 0.02, 2x128"}; a part the file does
    not hold (or holds with the wrong type) is left out, and a file that is no YAML mapping gives {}."""
    try:
        config = yaml.load(config_path.read_bytes(), Loader=_YAML_LOADER)
    except (OSError, ValueError, yaml.YAMLError):  # missing, unreadable, not UTF-8, not YAML
        return {}
    if not isinstance(config, dict):
        return {}
    name = config.get("name")
    return {"preset": name if isinstance(name, str) else "", "summary": recipe_summary(config)}


def recipe_summary(config: dict) -> str:
    schedule, masking, model = (_section(config, key) for key in ("schedule", "masking", "model"))
    parts = []
    if isinstance(schedule.get("name"), str):
        power = schedule.get("power")
        parts.append(schedule["name"] + (f" p{power:g}" if is_number(power) else ""))
    kind = masking.get("kind")
    if isinstance(kind, str):
        p_freq = masking.get("p_freq")
        # "freq": the recipe is the widest column, and whether it fits decides whether it is shown
        parts.append(f"freq {p_freq:g}" if kind == "frequency" and is_number(p_freq) else kind)
    layers, hidden = model.get("num_layers"), model.get("hidden_size")
    if is_number(layers) and is_number(hidden):
        parts.append(f"{layers:g}x{hidden:g}")
    return ", ".join(parts)


def _section(config: dict, key: str) -> dict:
    value = config.get(key)
    return value if isinstance(value, dict) else {}
