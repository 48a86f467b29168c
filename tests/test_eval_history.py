"""A run's evaluation history: every report keeps each item's credit, says its step and when it was
made, is never replaced by a later evaluation, and the Eval screen opens any of them and plots a
suite's macro and per-field numbers against the step."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import pytest
from textual.widgets import Select, Static

from core.eval_report import name_time, summarise
from core.evaluate import evaluate, save_report
from core.saved_reports import assemble_report, history, read_reports
from core.suite_types import Item, Suite
from core.suites import load_suite
from tests.helpers import wait_for
from tests.test_tui_eval import EvalHost

SETTINGS = {"backend": "pll", "limit": 2, "weights": "ema", "rate_value": 0.0, "draws": None}
NAME = re.compile(r"^builtin-step-8-pll-limit2-\d{8}T\d{6}(-\d+)?\.json$")


class LengthScorer:
    """Prefers the shorter text: a report without a model."""

    backend = "pll"

    def score_texts(self, texts, contexts=None):
        return [-float(len(text)) for text in texts]


class EvenScorer(LengthScorer):
    """Every text scores the same: every pair a tie, half a point each."""

    def score_texts(self, texts, contexts=None):
        return [0.0] * len(texts)


def report(step: int, macro: float, fields: dict[str, float] | None = None, time: float = 0.0, **settings):
    """A saved report as `mdlm-tui eval` writes it, with one UID per field."""
    fields = fields or {"syntax": macro}
    per_uid = {
        f"u_{name}": {"accuracy": value, "n": 2, "field": name, "term": None}
        for name, value in fields.items()
    }
    return {
        "suite": "builtin",
        "per_uid": per_uid,
        "per_field": fields,
        "macro": macro,
        "n": 2 * len(fields),
        "seconds": 1.0,
        "checkpoint": f"step-{step}",
        "skipped": 0,
        **SETTINGS,
        **settings,
        "step": step,
        "time": time,
        "credits": {uid: [1, 0] for uid in per_uid},
    }


def write(run: Path, name: str, data: dict) -> Path:
    (run / "eval").mkdir(parents=True, exist_ok=True)
    path = run / "eval" / name
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------- credits


def test_each_item_credit_is_saved_in_suite_order_and_averages_to_its_uid(tmp_path):
    [suite] = load_suite("builtin", limit=4)
    predictions: list[dict] = []
    path = save_report(evaluate(LengthScorer(), suite, predictions=predictions), tmp_path, step=8)
    saved = json.loads(path.read_text())
    assert set(saved["credits"]) == set(saved["per_uid"])
    for uid, credits in saved["credits"].items():
        assert len(credits) == saved["per_uid"][uid]["n"] == 4
        assert sum(credits) / len(credits) == pytest.approx(saved["per_uid"][uid]["accuracy"])
        assert all(type(c) is int for c in credits if c in (0, 1)), "whole credits are saved as 0 and 1"
    # credit i of a UID is the credit of its i-th item, as --predictions lists them
    assert all(saved["credits"][p["uid"]][p["index"]] == p["credit"] for p in predictions)


def test_a_tie_is_saved_as_half_a_point(tmp_path):
    [suite] = load_suite("builtin", limit=2)
    saved = json.loads(save_report(evaluate(EvenScorer(), suite), tmp_path, step=8).read_text())
    assert {c for credits in saved["credits"].values() for c in credits} == {0.5}


def test_a_correlation_report_has_no_credits(tmp_path):
    items = [Item("wug_adj", None, None, f"good {i}", "bad", ratio=i / 4) for i in range(4)]
    saved = json.loads(
        save_report(
            evaluate(LengthScorer(), Suite("wug_adj", items, "test", metric="spearman")), tmp_path, 8
        ).read_text()
    )
    assert saved["metric"] == "spearman" and saved["credits"] is None


def test_a_report_built_uid_by_uid_matches_the_whole_suite(tmp_path):
    """The Eval screen scores one UID at a time: its report holds the same numbers and credits."""
    [suite] = load_suite("builtin", limit=3)
    whole = evaluate(LengthScorer(), suite)
    parts = {
        uid: evaluate(LengthScorer(), Suite(suite.name, [i for i in suite.items if i.uid == uid], "t"))
        for uid in suite.uids()
    }
    built = assemble_report(
        suite.name,
        {uid: part.per_uid[uid] for uid, part in parts.items()},
        1.0,
        "step-8",
        SETTINGS,
        credits={uid: part.credits[uid] for uid, part in parts.items()},
    )
    assert built.credits == whole.credits
    assert (built.per_field, built.macro) == (whole.per_field, whole.macro)


def test_macro_over_uids_or_over_fields():
    per_uid = {
        "a": {"accuracy": 1.0, "field": "x"},
        "b": {"accuracy": 0.0, "field": "x"},
        "c": {"accuracy": 1.0, "field": "y"},
    }
    assert summarise(per_uid) == ({"x": 0.5, "y": 1.0}, pytest.approx(2 / 3))
    assert summarise(per_uid, macro_by_field=True) == ({"x": 0.5, "y": 1.0}, 0.75)


def test_blimp_credits_and_fields(shared_data, tmp_path):
    [suite] = load_suite("blimp", str(shared_data / "evaluation_data" / "full_eval"), limit=2)
    saved = json.loads(save_report(evaluate(LengthScorer(), suite), tmp_path, step=8).read_text())
    assert sum(len(c) for c in saved["credits"].values()) == saved["n"]
    for field, mean in saved["per_field"].items():
        uids = [u for u, row in saved["per_uid"].items() if row["field"] == field]
        assert mean == pytest.approx(sum(saved["per_uid"][u]["accuracy"] for u in uids) / len(uids))


# ---------------------------------------------------------------- names and history


def test_every_evaluation_is_kept_with_its_step_and_time(tmp_path):
    run = tmp_path
    paths = []
    for limit, weights in ((2, "ema"), (3, "ema"), (2, "raw"), (2, "ema")):  # the last: the first again
        [suite] = load_suite("builtin", limit=limit)
        scorer = LengthScorer()
        scorer.model_weights = weights
        paths.append(save_report(evaluate(scorer, suite), run / "eval", step=8))
    assert len(set(paths)) == 4 and all(path.is_file() for path in paths), "an evaluation replaced another"
    assert NAME.match(paths[0].name) and NAME.match(paths[3].name), paths
    assert "-limit3-" in paths[1].name and "-raw-limit2-" in paths[2].name
    saved = [json.loads(path.read_text()) for path in paths]
    assert all(data["step"] == 8 and data["time"] > 1.7e9 for data in saved)
    listed = read_reports(run)
    assert {r.path for r in listed} == set(paths)
    alike = [r for r in listed if r.settings == listed[0].settings]
    assert len(alike) == 2 and alike[0].time >= alike[1].time, "newest first among reports made alike"


def test_old_names_without_a_time_are_still_read(tmp_path):
    old = {key: value for key, value in report(7, 0.5).items() if key not in ("step", "time", "credits")}
    write(tmp_path, "builtin-step-7-pll-limit2.json", old)
    write(tmp_path, "builtin-step-9-pll-limit2-20261130T174500.json", report(9, 0.75, time=1_796_060_700))
    newer, older = read_reports(tmp_path)
    assert (newer.step, older.step) == (9, 7)
    assert newer.settings == older.settings == SETTINGS
    assert newer.label.startswith("builtin step-9 pll-limit2 2026-11-30 17:45 UTC (75.0")
    assert older.label.startswith("builtin step-7 pll-limit2 ")  # the time its file was written
    assert [label for label, steps, _ in history([newer, older], "builtin", SETTINGS)] == ["macro"]
    assert history([newer, older], "builtin", SETTINGS)[0][1] == [7, 9]


def test_history_is_one_point_a_step_from_the_newest_report(tmp_path):
    files = {
        "builtin-step-4-pll-limit2-20261130T100000.json": report(
            4, 0.5, {"syntax": 0.4, "morphology": 0.6}, 1
        ),
        "builtin-step-8-pll-limit2-20261130T110000.json": report(
            8, 0.55, {"syntax": 0.5, "morphology": 0.6}, 2
        ),
        "builtin-step-8-pll-limit2-20261130T120000.json": report(
            8, 0.6, {"syntax": 0.5, "morphology": 0.7}, 3
        ),
        "builtin-step-12-pll-limit2-20261130T130000.json": report(12, 0.7, {"syntax": 0.6}, 4),
        "builtin-step-10-pll-limit3-20261130T130000.json": report(10, 0.9, limit=3),  # other settings
        "blimp-step-10-pll-limit2-20261130T130000.json": {**report(10, 0.9), "suite": "blimp"},
    }
    for name, data in files.items():
        write(tmp_path, name, data)
    series = {
        label: (steps, values)
        for label, steps, values in history(read_reports(tmp_path), "builtin", SETTINGS)
    }
    assert series["macro"] == ([4, 8, 12], [0.5, 0.6, 0.7])
    assert series["syntax"] == ([4, 8, 12], [0.4, 0.5, 0.6])
    assert series["morphology"] == ([4, 8], [0.6, 0.7]), "a field a report lacks has no point there"


# ---------------------------------------------------------------- the Eval screen


def shown_lines(widget) -> list[str]:
    from textual.geometry import Region

    return [strip.text for strip in widget.render_lines(Region(0, 0, widget.size.width, widget.size.height))]


def test_the_eval_screen_opens_any_saved_report_and_plots_its_history(tmp_path):
    from mdlm_tui.eval.history import HistoryPlot
    from mdlm_tui.eval.table import EvalTable

    shutil.copy(Path(__file__).resolve().parents[1] / "presets" / "smoke.yaml", tmp_path / "config.yaml")
    fields = {4: {"syntax": 0.25, "morphology": 0.75}, 8: {"syntax": 0.5, "morphology": 1.0}}
    for step, time in ((4, 1_796_000_000), (8, 1_796_100_000)):
        name = f"builtin-step-{step}-pll-limit2-{name_time(time)}.json"
        write(tmp_path, name, report(step, 0.25 + step / 16, fields[step], time))
    write(tmp_path, "builtin-step-6-pll.json", report(6, 0.9, limit=None))  # an older name, other settings

    async def drive():
        app = EvalHost(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.screen
            picker, table = screen.query_one("#eval-report", Select), screen.query_one(EvalTable)
            status = screen.query_one("#eval-status", Static)
            await wait_for(pilot, lambda: table.row_count == 2, 30, "the newest report in the table")
            assert f"builtin-step-8-pll-limit2-{name_time(1_796_100_000)}.json" in str(status.render())
            labels = [label for label, _ in picker._options if label]  # the blank row has none
            assert len(labels) == 3 and labels[0].startswith("builtin step-8 pll-limit2 ")

            step4 = f"builtin-step-4-pll-limit2-{name_time(1_796_000_000)}.json"
            picker.value = str(tmp_path / "eval" / step4)
            await wait_for(pilot, lambda: step4 in str(status.render()), 30, "the step-4 report opened")
            assert table.get_cell("builtin/u_syntax", "now") == "25.0"
            assert "builtin macro 50.0" in str(screen.query_one("#eval-macro", Static).render())

            await pilot.press("ctrl+g")
            plot = screen.query_one(HistoryPlot)
            await wait_for(pilot, lambda: plot.display and not table.display, 30, "the history plot")
            assert plot.shown == [
                ("macro", [4, 8], [50.0, 75.0]),
                ("morphology", [4, 8], [75.0, 100.0]),
                ("syntax", [4, 8], [25.0, 50.0]),
            ]
            assert "builtin pll-limit2" in plot.title
            # each series is told by its marker, not only by its colour (NO_COLOR)
            shown = "\n".join(shown_lines(plot))
            assert all(legend in shown for legend in ("* macro", "o morphology", "x syntax")), shown
            await pilot.press("ctrl+g")
            await wait_for(pilot, lambda: table.display and not plot.display, 30, "the table back")

    asyncio.run(drive())
