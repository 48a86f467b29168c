"""Saved evaluation reports: what each records, the names they get, and which one a new
evaluation is compared with."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from core.evaluate import evaluate, save_report
from core.saved_reports import earlier_report, read_reports
from core.suites import load_suite
from tests.helpers import mdlm


def made_alike(name: str) -> str:
    """A report's file name without the time it was made: what says how it was made."""
    return re.sub(r"-\d{8}T\d{6}(-\d+)?(?=\.json$)", "", name)


class LengthScorer:
    """Prefers the shorter text: no model needed to make a report."""

    backend = "pll"

    def score_texts(self, texts, contexts=None):
        return [-float(len(text)) for text in texts]


SETTINGS = {"backend": "pll", "limit": 2, "weights": "ema", "rate_value": 0.0, "draws": None}


def report(step: int, accuracy: float, **settings) -> dict:
    per_uid = {"u": {"accuracy": accuracy, "n": 2, "field": None, "term": None}}
    return {
        "suite": "builtin",
        "per_uid": per_uid,
        "per_field": {},
        "macro": accuracy,
        "n": 2,
        "seconds": 1.0,
        "checkpoint": f"step-{step}",
        "skipped": 0,
        **SETTINGS,
        **settings,
    }


def test_reports_with_different_limits_are_kept_apart_and_say_their_limit(tmp_path):
    saved = {}
    for limit in (100, 30, 20):  # builtin has 60 items a UID: a limit of 100 leaves none out
        [suite] = load_suite("builtin", limit=limit)
        saved[limit] = save_report(evaluate(LengthScorer(), suite), tmp_path, step=8)
    assert len(set(saved.values())) == 3, f"a limited evaluation replaced another: {saved}"
    assert {limit: made_alike(path.name) for limit, path in saved.items()} == {
        100: "builtin-step-8-pll.json",
        30: "builtin-step-8-pll-limit30.json",
        20: "builtin-step-8-pll-limit20.json",
    }
    assert {limit: json.loads(path.read_text())["limit"] for limit, path in saved.items()} == {
        100: None,
        30: 30,
        20: 20,
    }


def test_the_comparison_is_the_nearest_earlier_report_made_alike(tmp_path):
    (tmp_path / "eval").mkdir()
    files = {
        "builtin-step-4-pll-limit2.json": report(4, 0.25),
        "builtin-step-5-pll-limit3.json": report(5, 0.5, limit=3),  # other settings
        "builtin-step-6-pll-raw-limit2.json": report(6, 0.5, weights="raw"),
        "builtin-step-7-pll.json": {k: v for k, v in report(7, 0.5).items() if k not in SETTINGS},  # old
        "builtin-step-12-pll-limit2.json": report(12, 0.75),
    }  # later
    for name, data in files.items():
        (tmp_path / "eval" / name).write_text(json.dumps(data))
    reports = read_reports(tmp_path)
    found = earlier_report(reports, "builtin", 8, SETTINGS)
    assert found is not None and found.step == 4, f"compared with {found}"
    assert earlier_report(reports, "builtin", 4, SETTINGS) is None, "nothing earlier: nothing to compare"
    assert earlier_report(reports, "builtin", 13, SETTINGS).step == 12


def test_an_old_report_without_settings_still_loads(tmp_path):
    (tmp_path / "eval").mkdir()
    old = {k: v for k, v in report(7, 0.5).items() if k not in SETTINGS}
    (tmp_path / "eval" / "builtin-step-7-pll.json").write_text(json.dumps(old))
    [loaded] = read_reports(tmp_path)
    assert (loaded.step, loaded.macro, getattr(loaded, "settings", "not read")) == (7, 0.5, None)
    assert "settings unknown" in loaded.label


@pytest.mark.slow
def test_cli_evals_with_two_limits_keep_both_reports(finished_smoke_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_smoke_run, run)
    for limit in (3, 2):
        result = mdlm("eval", run, "--suite", "builtin", "--limit", limit)
        assert result.returncode == 0, result.stderr
    reports = {path.name: json.loads(path.read_text()) for path in (run / "eval").glob("builtin-*.json")}
    assert {made_alike(name): data.get("limit") for name, data in reports.items()} == {
        "builtin-step-8-pll-limit3.json": 3,
        "builtin-step-8-pll-limit2.json": 2,
    }
    assert all(data["weights"] == "ema" for data in reports.values())
    assert "at most 2 items a UID" in result.stdout


def test_a_milestone_report_is_named_by_the_step_in_its_meta(tmp_path):
    from core.evaluate import checkpoint_step

    milestone = tmp_path / "checkpoints" / "chck_2M"
    milestone.mkdir(parents=True)
    (milestone / "meta.json").write_text(json.dumps({"step": 37, "words": 2_000_000, "sizes": {}}))
    assert checkpoint_step(tmp_path / "checkpoints" / "step-8") == 8  # the name wins; no meta.json read
    assert checkpoint_step(milestone) == 37
    assert checkpoint_step(tmp_path / "checkpoints" / "chck_5M") is None  # no meta.json
    [suite] = load_suite("builtin", limit=2)
    saved = save_report(evaluate(LengthScorer(), suite), tmp_path / "eval", checkpoint_step(milestone))
    assert made_alike(saved.name) == "builtin-step-37-pll-limit2.json"
    assert json.loads(saved.read_text())["step"] == 37


def test_checkpoints_list_steps_newest_first_then_milestones(tmp_path):
    from mdlm_tui.common.checkpoints import list_checkpoints

    for name in ("step-4", "step-8", "chck_20K", "chck_2M", "chck_1M", "chck_notes", "step-x"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-8",
        "step-4",
        "chck_2M",
        "chck_1M",
        "chck_20K",
    ]
