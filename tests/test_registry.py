"""Schedules and masking kinds are registered by name: one registered from outside the package (here,
as a user's module would) is accepted by config validation, `build_schedule`, the trainer and the CLI.

The registrations are made by a fixture and undone after this module's tests, so the other tests of a
worker see only the built-in names. The CLI is called in this process (the `mdlm` helper's process would
not have them).
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml

from core.config import ScheduleConfig, from_dict, load_config, resolve_config, to_dict
from core.errors import UserError
from core.masking import Masker, MaskingKind, maskable, register_masking_kind
from core.registry import MASKING_KINDS, SCHEDULES, Registry, needs_scores
from core.runs import RunDir, read_jsonl
from core.schedules import (
    SAMPLING_SCHEDULES,
    Schedule,
    build_schedule,
    register_schedule,
    sampling_schedule,
    sampling_schedules,
)


class Polynomial(Schedule):
    """alpha = 1 - t^exponent: r = t^exponent, |alpha'| = exponent t^(exponent - 1), E[r] = 1/(1+exponent)."""

    name = "polynomial"
    params = {"exponent": 2.0}  # a key of its own: schedule.exponent
    ranges = {"exponent": "(0, inf)"}  # checked with the config, as the built-in keys are
    sampling = True  # r runs from 0 at t = 0 to 1 at t = 1

    def __init__(self, exponent: float = 2.0):
        self.exponent = exponent

    def _rate_and_slope(self, t, progress, generator):
        return t**self.exponent, self.exponent * t ** (self.exponent - 1)


class Positional(MaskingKind):
    """Later positions masked more: q_l proportional to l + 1, its mean over maskable positions r."""

    name = "positional"

    def probs(self, ids, rates, epoch, total_epochs):
        where = maskable(ids).float()
        ramp = torch.arange(1, ids.shape[1] + 1, device=ids.device, dtype=torch.float32) * where
        mean = ramp.sum(1, keepdim=True) / where.sum(1, keepdim=True).clamp_min(1)
        return (rates.to(ids.device, torch.float32)[:, None] * ramp / mean.clamp_min(1e-12)).clamp(0, 1)


@pytest.fixture(autouse=True, scope="module")
def registered():
    register_schedule(Polynomial)
    register_masking_kind(Positional)
    yield
    SCHEDULES.unregister("polynomial")
    MASKING_KINDS.unregister("positional")


TINY_RUN = ["train.budget=3 steps", "train.log_every=1", "train.dev_every=0", "train.threads=1"]


def test_a_registered_schedule_is_a_config_choice_with_its_own_parameter():
    cfg = load_config("smoke", ["schedule.name=polynomial", "schedule.exponent=3"])
    schedule = build_schedule(cfg.schedule)
    assert isinstance(schedule, Polynomial) and schedule.exponent == 3.0
    rate, slope = schedule.sample(torch.tensor([0.5]))
    assert rate.item() == pytest.approx(0.125) and slope.item() == pytest.approx(0.75)
    # unset, the parameter takes the schedule's default; a ScheduleConfig built by hand too
    assert build_schedule(load_config("smoke", ["schedule.name=polynomial"]).schedule).exponent == 2.0
    assert build_schedule(ScheduleConfig(name="polynomial")).exponent == 2.0


def test_its_parameter_is_typed_suggested_written_and_read_back(tmp_path):
    with pytest.raises(UserError, match="schedule.exponent must be a number"):
        load_config("smoke", ["schedule.name=polynomial", "schedule.exponent=steep"])
    with pytest.raises(UserError, match="schedule.exponent must be positive, got -1.0"):
        load_config("smoke", ["schedule.name=polynomial", "schedule.exponent=-1"])
    with pytest.raises(UserError, match="Did you mean 'schedule.exponent'"):
        load_config("smoke", ["schedule.name=polynomial", "schedule.exponnt=3"])
    preset = tmp_path / "steep.yaml"
    preset.write_text("extends: smoke\nschedule:\n  name: polynomial\n  exponent: 1.5\n")
    resolved = resolve_config(str(preset), ["train.lr=1e-3"])
    assert resolved.config.schedule.exponent == 1.5 and resolved.sources["schedule.exponent"] == "steep"
    written = to_dict(resolved.config)
    assert written["schedule"]["exponent"] == 1.5
    assert from_dict(yaml.safe_load(yaml.safe_dump(written))).schedule.exponent == 1.5
    # a config of another schedule does not carry it
    assert "exponent" not in to_dict(load_config("smoke"))["schedule"]
    assert set(to_dict(load_config("smoke"))["schedule"]) == {
        f.name for f in dataclasses.fields(ScheduleConfig)
    }


def test_a_registered_schedule_can_be_sampled_along():
    assert "polynomial" in sampling_schedules() and "polynomial" not in SAMPLING_SCHEDULES
    rate = sampling_schedule("polynomial").rate(torch.tensor([0.0, 0.5, 1.0]))
    assert rate.tolist() == pytest.approx([0.0, 0.25, 1.0])


def test_a_registered_masking_kind_is_a_config_choice_and_masks_later_positions_more():
    cfg = load_config("smoke", ["masking.kind=positional"])
    masker = Masker(cfg.masking.kind)
    assert isinstance(masker.method, Positional) and repr(masker) == "Masker(positional)"
    ids = torch.full((4000, 8), 100)
    ids[:, 0] = 1  # <s>, never masked
    mask = masker(ids, torch.full((4000,), 0.3), 0, 1, torch.Generator().manual_seed(0))
    per_position = mask.float().mean(0)
    assert per_position[0] == 0 and per_position[1] < per_position[4] < per_position[7]
    assert mask[:, 1:].float().mean().item() == pytest.approx(0.3, abs=0.01)


def test_a_short_training_run_uses_both(tmp_path):
    from core.trainer import start

    cfg = load_config(
        "smoke", ["schedule.name=polynomial", "schedule.exponent=3", "masking.kind=positional", *TINY_RUN]
    )
    trainer = start(cfg, RunDir(tmp_path / "run"), "cpu", False, log=lambda _: None)
    assert isinstance(trainer.schedule, Polynomial) and trainer.schedule.exponent == 3.0
    assert isinstance(trainer.masker.method, Positional)
    steps = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["event"] == "train"]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["schedule"]["name"] == "polynomial" and saved["schedule"]["exponent"] == 3.0
    assert saved["masking"]["kind"] == "positional"


def test_the_schedule_command_shows_a_registered_schedule():
    from typer.testing import CliRunner

    from mdlm_tui.cli import app

    result = CliRunner().invoke(app, ["schedule", "polynomial", "--set", "exponent=3", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["schedule"] == "polynomial" and summary["progress"] == 0.0  # one point: not progressive
    assert summary["mean_rate"] == pytest.approx(1 / 4, abs=2e-3)  # E[t^3]


def test_an_unknown_name_lists_the_registered_ones():
    with pytest.raises(UserError, match="Did you mean 'polynomial'") as caught:
        load_config("smoke", ["schedule.name=polynomal"])
    assert "linear, cosine, cosine-squared, log-linear, gaussian, bimodal, polynomial" in str(caught.value)
    with pytest.raises(
        ValueError, match="Unknown schedule 'polynomal'. Did you mean 'polynomial'?"
    ) as caught:
        build_schedule(ScheduleConfig(name="polynomal"))
    assert str(caught.value).endswith(
        "Registered: linear, cosine, cosine-squared, log-linear, gaussian, bimodal, polynomial."
    )
    with pytest.raises(UserError, match="Did you mean 'positional'"):
        load_config("smoke", ["masking.kind=positonal"])
    with pytest.raises(ValueError, match="Unknown masking kind 'positonal'. Did you mean 'positional'?"):
        Masker("positonal")


def test_a_name_is_registered_once():
    for again in (lambda: register_schedule(Polynomial), lambda: register_masking_kind(Positional)):
        with pytest.raises(UserError) as caught:
            again()
        sentence = str(caught.value)
        assert "is already registered" in sentence and "another name" in sentence
        assert sentence.count(". ") == 0 and sentence.endswith(".") and "\n" not in sentence

    class MyCosine(Polynomial):
        name = "cosine"

    with pytest.raises(UserError, match="A schedule named 'cosine' is already registered"):
        register_schedule(MyCosine)
    with pytest.raises(UserError, match="subclass of core.schedules.Schedule"):
        register_schedule(Positional)
    assert SCHEDULES.get("cosine").__name__ == "Cosine"


def test_a_built_in_name_is_reserved_before_its_module_is_imported():
    registry = Registry("widget", "x.kind", "somewhere.else", ("plain",))
    assert registry.names() == ("plain",) and "plain" in registry

    class Plain:
        name = "plain"

    with pytest.raises(UserError, match="'plain' is already registered \\(built in, somewhere.else\\)"):
        registry.register(Plain)


def test_the_built_ins_declare_the_shared_keys_at_their_defaults():
    defaults = ScheduleConfig()
    built_in = {name: cls for name, cls in SCHEDULES.registered().items() if name in SCHEDULES.builtin}
    assert tuple(built_in) == SCHEDULES.builtin
    for cls in built_in.values():
        for param, default in cls.params.items():
            assert getattr(defaults, param) == default, (cls.name, param)
    assert SAMPLING_SCHEDULES == ("linear", "cosine", "cosine-squared", "log-linear")
    assert tuple(MASKING_KINDS.registered())[:2] == MASKING_KINDS.builtin == ("uniform", "frequency")


def test_built_in_traits_read_before_import_agree_with_the_classes():
    # a torch-free reader (the Configure form) asks the registry before core.masking is imported
    before = Registry("masking kind", "masking.kind", "core.masking", ("uniform", "frequency"))
    before._traits = MASKING_KINDS._traits
    for name in MASKING_KINDS.builtin:
        assert before.trait(name, "needs_scores", False) == MASKING_KINDS.get(name).needs_scores, name
    schedules = Registry("schedule", "schedule.name", "core.schedules", SCHEDULES.builtin)
    schedules._traits = SCHEDULES._traits
    for name in SCHEDULES.builtin:
        for attribute in ("sampling", "progressive"):
            assert schedules.trait(name, attribute, False) == getattr(SCHEDULES.get(name), attribute), name
    assert schedules.having("sampling") == SAMPLING_SCHEDULES
    assert needs_scores("frequency") and not needs_scores("uniform")

    @register_masking_kind
    class Tilted(MaskingKind):
        name = "tilted-test"
        needs_scores = True

    try:
        assert needs_scores("tilted-test")  # a registered kind's own attribute
    finally:
        MASKING_KINDS.unregister("tilted-test")
