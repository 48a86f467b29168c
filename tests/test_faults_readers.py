"""Odd files in a run folder, and failures inside the app.

Readers skip what they cannot read and say so, and the rest of the run still shows: a bad
status.json among good runs, metrics lines that are no record, a report that is not UTF-8, a trace
step whose t is text. A failure in a screen's handler, a key's action, a timer, a render or a worker
is shown naming what failed, and the app goes on; an app that does end on an error exits 1.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from textual.geometry import Region
from textual.widgets import Static

from core.runs import RunDir, read_jsonl
from mdlm_tui.app import MdlmApp, run_app
from mdlm_tui.common.curves import CurvePlot
from mdlm_tui.run_list.screen import RunsScreen
from mdlm_tui.train.screen import TrainScreen
from tests.helpers import show_weight_tab, wait_for
from tests.test_tui_runs import make_run, state_cell

BAD_STATUS = {
    "as-list": b"[1, 2, 3]",
    "as-text": b'"running"',
    "binary": b"\xff\xfe\x00\x81garbage",
    "odd-types": json.dumps(
        {
            "state": "running",
            "heartbeat": "soon",
            "pid": "1234",
            "step": "ten",
            "total_steps": True,
            "loss": [1],
            "host": 7,
        }
    ).encode(),
}


def alive(app: MdlmApp) -> bool:
    return app.is_running and not app._exit and app.return_code is None


def toasts(app: MdlmApp) -> str:
    return "\n".join(str(toast.render()) for toast in app.screen.query("Toast"))


def notified(app: MdlmApp, text: str):
    return lambda: text in toasts(app)


def showing(app: MdlmApp, screen_name: str):
    return lambda: type(app.screen).__name__ == screen_name


def drawn(widget) -> str:
    """The text a widget draws at its size now (its wrapped lines joined), as the screen shows it."""
    lines = widget.render_lines(Region(0, 0, *widget.size))
    return " ".join(" ".join(strip.text for strip in lines).split())


def append(path: Path, *lines: bytes) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(line + b"\n" for line in lines))


def train_record(step: int) -> bytes:
    return json.dumps(
        {
            "event": "train",
            "step": step,
            "loss": 3.0,
            "masked_ce": 3.1,
            "lr": 1e-3,
            "tokens_per_s": 100.0,
            "time": 1.0,
        }
    ).encode()


# ---------------------------------------------------------------- the readers themselves


@pytest.mark.parametrize("name", BAD_STATUS)
def test_read_status_never_raises_and_keeps_only_sane_types(tmp_path, name):
    run = RunDir(tmp_path)
    run.status_path.write_bytes(BAD_STATUS[name])
    status = run.read_status()
    assert isinstance(status, dict) and status.get("state") in (None, "running")
    for key in ("heartbeat", "pid", "step", "total_steps", "loss", "host"):
        assert key not in status
    assert run.live_pid() is None  # what `mdlm-tui control` and `run --resume` ask first
    problems: list[str] = []
    run.read_status(problems)
    assert len(problems) == 1 and "status.json" in problems[0]


def test_read_metrics_skips_lines_that_are_no_record_and_counts_them(tmp_path):
    run = RunDir(tmp_path)
    append(
        run.metrics_path,
        train_record(1),
        b"[1,2,3]",
        b'{"event": "train", "step": "abc", "loss": 1}',
        b"\xff\xfe not utf-8",
        b'{"step": 2, "time": NaN}',
        train_record(3),
    )
    assert [r["step"] for r in run.read_metrics()] == [1, 3]
    problems: list[str] = []
    run.read_metrics(problems)
    assert problems == ["4 unreadable lines skipped in metrics.jsonl"]
    assert [r["step"] for r in read_jsonl(run.metrics_path)] == [1, "abc", 2, 3]  # objects, any fields


# ---------------------------------------------------------------- screens on odd run folders


def test_runs_screen_lists_every_run_past_bad_status_files(tmp_path):
    root = tmp_path / "runs"
    good = make_run(root, "good", "finished")
    bad = {name: make_run(root, name, "finished") for name in BAD_STATUS}
    for name, content in BAD_STATUS.items():
        (bad[name] / "status.json").write_bytes(content)

    async def body():
        app = MdlmApp(runs_root=root)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, showing(app, "RunsScreen"), 60, "the Runs screen")
            await wait_for(pilot, lambda: len(app.screen.rows) == 5, 60, "every run listed")
            assert "finished" in state_cell(app, good)
            for name in ("as-list", "as-text", "binary"):
                assert "unreadable" in state_cell(app, bad[name])
            # its heartbeat cannot be read, so nothing shows a trainer still working on it
            assert "stale" in state_cell(app, bad["odd-types"])
            note = str(app.screen.query_one("#runs-problems").render())
            assert "as-list: status.json is not a JSON object" in note
            assert "binary: status.json is unreadable" in note
            assert "odd-types: status.json: " in note and "heartbeat" in note
            await pilot.press("f5")  # the refresh (also every two seconds) reads them all again
            await pilot.pause(0.1)
            assert alive(app) and len(app.screen.rows) == 5

    asyncio.run(body())


def test_train_screen_draws_the_good_records_past_bad_metrics_lines(tmp_path):
    run = make_run(tmp_path / "runs", "odd", "finished", step=20)
    append(
        run / "metrics.jsonl",
        b"[1,2,3]",
        b'{"event": "train", "step": "abc", "loss": 1.0}',
        b"\xff\xfe not utf-8",
        train_record(21),
    )

    async def body():
        app = MdlmApp(runs_root=run.parent, watch=run)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), 60, "the Train screen")
            plot = app.screen.query_one("#plot-loss", CurvePlot)
            await wait_for(pilot, lambda: plot.points == 2 * 21, 60, "loss and masked CE of 21 good records")
            detail = app.screen.query_one("#train-detail")
            skipped = "3 unreadable lines skipped in metrics.jsonl"
            await wait_for(pilot, lambda: skipped in str(detail.render()), 60, "the skipped lines named")
            assert alive(app)

    asyncio.run(body())


def test_eval_screen_opens_on_the_good_report_past_a_binary_one(tmp_path):
    from tests.snapshot_runs import eval_report

    run = make_run(tmp_path / "runs", "odd", "finished", step=20)
    (run / "eval" / "builtin-step-20-pll.json").write_text(json.dumps(eval_report(250)))
    (run / "eval" / "builtin-step-10-pll.json").write_bytes(b"\xff\xfe{not a report")

    async def body():
        app = MdlmApp(runs_root=run.parent, watch=run)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), 60, "the Train screen")
            await pilot.press("e")
            await wait_for(pilot, showing(app, "EvalScreen"), 60, "the Eval screen")
            status = app.screen.query_one("#eval-status")
            await wait_for(
                pilot,
                lambda: "saved report builtin-step-20-pll.json" in str(status.render()),
                10,
                "the good report shown",
            )
            assert "1 unreadable report skipped (builtin-step-10-pll.json)" in str(status.render())
            assert app.screen.query_one("EvalTable").row_count > 0
            assert alive(app)

    asyncio.run(body())


def test_samples_screen_replays_traces_past_a_step_whose_t_is_text(tmp_path):
    run = make_run(tmp_path / "runs", "odd", "finished", step=20)
    good = [
        {"step": 0, "t": 1.0, "masked": 2, "text": "[MASK] [MASK]"},
        {"step": 1, "t": 0.0, "masked": 0, "text": "in beginning"},
    ]
    odd = [
        {"step": 0, "t": "b", "masked": 2, "text": "[MASK] [MASK]"},
        {"step": 1, "t": 0.5, "masked": 0, "text": "the end"},
    ]
    append(
        run / "samples.jsonl",
        json.dumps({"step": 10, "trace": good}).encode(),
        b"[1,2,3]",
        json.dumps({"step": 20, "trace": odd}).encode(),
    )

    async def body():
        app = MdlmApp(runs_root=run.parent, watch=run)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), 60, "the Train screen")
            await pilot.press("s")
            await wait_for(pilot, showing(app, "SamplesScreen"), 60, "the Samples screen")
            screen = app.screen
            await wait_for(pilot, lambda: len(screen.entries) == 2, 60, "both traces listed")
            # the newest trace, drawn from its good step
            assert "the end" in str(screen.query_one("#samples-replay").render())
            status = str(screen.query_one("#samples-status").render())
            assert "1 unreadable line skipped in samples.jsonl" in status
            assert "1 unreadable trace step skipped in samples.jsonl" in status
            await pilot.press("right")
            assert alive(app)

    asyncio.run(body())


# ---------------------------------------------------------------- failures inside the app


def failing(kind: type[Exception], message: str):
    """A stand-in for a method or function that raises kind(message), whatever it is called with."""

    # `self` by name: the app traces a failure to the widget whose method raised by that local
    def explode(self=None, *args, **kwargs):
        raise kind(message)  # a new one each time, with a traceback of its own

    return explode


def test_a_failing_handler_is_shown_and_the_screen_keeps_updating(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "mdlm_tui.train.system_pane.SystemPane.show_stats", failing(RuntimeError, "system stats exploded")
    )
    run = make_run(tmp_path / "runs", "live", "finished", step=20)

    async def body():
        app = MdlmApp(runs_root=run.parent, watch=run)
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            failure = "SystemPane #train-system failed: RuntimeError: system stats exploded"
            await wait_for(pilot, notified(app, failure), 60, "the failure shown")
            status = json.loads((run / "status.json").read_text())
            (run / "status.json").write_text(json.dumps({**status, "step": 21, "total_steps": 30}))
            numbers = app.screen.query_one("#train-numbers")
            await wait_for(pilot, lambda: "step 21/30" in str(numbers.render()), 60, "the next update shown")
            assert alive(app)

    asyncio.run(body())


def test_a_failing_resize_handler_still_lets_the_screen_lay_out_anew(tmp_path, monkeypatch):
    monkeypatch.setattr(RunsScreen, "on_resize", failing(RuntimeError, "resize exploded"))
    make_run(tmp_path / "runs", "done", "finished")

    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=(100, 30), notifications=True) as pilot:
            failure = "RunsScreen failed: RuntimeError: resize exploded"
            await wait_for(pilot, notified(app, failure), 60, "the failure shown")
            await pilot.resize_terminal(140, 40)
            table = app.screen.query_one("DataTable")
            await wait_for(pilot, lambda: table.region.width > 100, 60, "the table laid out at 140 columns")
            assert alive(app)

    asyncio.run(body())


def test_a_failing_key_action_is_shown_and_keys_still_work(tmp_path, monkeypatch):
    monkeypatch.setattr(TrainScreen, "action_checkpoint", failing(RuntimeError, "checkpoint exploded"))
    run = make_run(tmp_path / "runs", "done", "finished")

    async def body():
        app = MdlmApp(runs_root=run.parent, watch=run)
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), 60, "the Train screen")
            await pilot.press("k")
            failure = "TrainScreen failed: RuntimeError: checkpoint exploded"
            await wait_for(pilot, notified(app, failure), 60, "the failure shown")
            await pilot.press("r")
            await wait_for(pilot, showing(app, "RunsScreen"), 60, "the Runs screen after the failure")
            assert alive(app)

    asyncio.run(body())


def test_a_failing_timer_is_shown_and_the_app_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(RunsScreen, "_refresh_if_shown", failing(RuntimeError, "refresh exploded"))
    make_run(tmp_path / "runs", "done", "finished")

    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            failure = "RunsScreen failed: RuntimeError: refresh exploded"
            await wait_for(pilot, notified(app, failure), 60, "the timer's failure shown")
            await pilot.press("question_mark")
            await wait_for(pilot, showing(app, "HelpScreen"), 60, "Help after the failure")
            assert alive(app)

    asyncio.run(body())


def test_a_failing_render_is_drawn_in_place_of_that_widget_only(tmp_path, monkeypatch):
    monkeypatch.setattr(CurvePlot, "render", failing(ValueError, "cannot draw this"))
    run = make_run(tmp_path / "runs", "done", "finished")

    async def body():
        app = MdlmApp(runs_root=run.parent, watch=run)
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            # three plots fail alike: one notification, and each plot says so in its place
            await wait_for(pilot, notified(app, "failed: ValueError: cannot draw this"), 60, "the failure")
            assert "CurvePlot #plot-" in toasts(app)
            for plot in app.screen.query(CurvePlot):
                assert f"CurvePlot #{plot.id} failed: ValueError: cannot draw this" in drawn(plot)
            await wait_for(
                pilot,
                lambda: "step 20/20" in drawn(app.screen.query_one("#train-numbers")),
                5,
                "the rest of the screen drawn",
            )
            assert alive(app)

    asyncio.run(body())


def test_a_failing_worker_is_shown(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "mdlm_tui.configure.previews.schedule_preview", failing(RuntimeError, "preview exploded")
    )

    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await pilot.press("c")
            failure = "ConfigureScreen: compute_schedule_preview failed: RuntimeError: preview exploded"
            await wait_for(pilot, notified(app, failure), 60, "the worker's failure shown")
            assert alive(app)

    asyncio.run(body())


def body_text(app: MdlmApp) -> str:
    """What the screen's own widgets draw, its toasts left out."""
    return " ".join(drawn(widget) for widget in app.screen.query_children(Static))


def test_a_failing_start_screen_compose_is_shown_in_its_body_and_q_quits(tmp_path, monkeypatch):
    monkeypatch.setattr(RunsScreen, "compose", failing(RuntimeError, "runs list exploded"))
    make_run(tmp_path / "runs", "done", "finished")

    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            failure = "RunsScreen failed: RuntimeError: runs list exploded"
            await wait_for(pilot, notified(app, failure), 60, "the failure notified on the Runs screen")
            await wait_for(pilot, lambda: failure in body_text(app), 10, "the failure in the screen's body")
            assert showing(app, "RunsScreen")() and alive(app)
            assert app.failures == [failure]  # its own handlers do not fail again on what it lacks
            await pilot.press("q")
            await wait_for(pilot, lambda: not app.is_running, 60, "the app ended by q")
        assert app.return_code == 0

    asyncio.run(body())


def test_a_failing_compose_of_a_screen_opened_from_runs_is_shown_and_r_goes_back(tmp_path, monkeypatch):
    from mdlm_tui.eval.screen import EvalScreen

    monkeypatch.setattr(EvalScreen, "compose", failing(RuntimeError, "eval form exploded"))
    make_run(tmp_path / "runs", "done", "finished")

    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await wait_for(pilot, showing(app, "RunsScreen"), 60, "the Runs screen")
            await pilot.press("e")
            await wait_for(pilot, showing(app, "EvalScreen"), 60, "the Eval screen")
            failure = "EvalScreen failed: RuntimeError: eval form exploded"
            await wait_for(pilot, notified(app, failure), 60, "the failure notified on the Eval screen")
            await wait_for(pilot, lambda: failure in body_text(app), 10, "the failure in the screen's body")
            assert alive(app)
            await pilot.press("r")
            await wait_for(pilot, showing(app, "RunsScreen"), 60, "the Runs screen after the failure")
            await wait_for(
                pilot, lambda: app.screen.query_one("#runs-table").row_count == 1, 60, "the run listed"
            )
            assert alive(app) and app.failures == [failure]

    asyncio.run(body())


def test_resizing_on_the_weight_tab_keeps_the_plot_and_the_app(tmp_path):
    from dataclasses import replace

    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await pilot.press("c")
            await wait_for(pilot, showing(app, "ConfigureScreen"), 60, "the Configure screen")
            plot = app.screen.query_one("#configure-weight-plot")
            await wait_for(pilot, lambda: plot.shown is not None, 120, "the schedule preview")
            await show_weight_tab(pilot, app)
            assert "weight, p = " in drawn(plot)
            for width in (121, 120):
                before = plot.size
                await pilot.resize_terminal(width, 40)
                await wait_for(pilot, lambda: plot.size != before, 60, "the plot resized")
                assert "weight, p = " in drawn(plot) and "failed" not in drawn(plot)
                # weights of zero have no place on a log axis: left out, the rest still drawn
                plot.show_preview(replace(plot.shown, weights=[0.0, *plot.shown.weights[1:]]))
            plot.show_preview(replace(plot.shown, weights=[0.0] * len(plot.shown.weights)))
            assert "weight, p = " in drawn(plot)
            assert alive(app) and app.failures == []

    asyncio.run(body())


def test_an_app_that_ends_on_an_error_exits_1_with_one_sentence(tmp_path, monkeypatch, capsys):
    """Textual ends an app whose stylesheet does not parse before any screen is up; `mdlm-tui` (and
    `watch`) then exit 1, not 0."""
    monkeypatch.setattr(MdlmApp, "CSS", "Screen { colour-of-nothing: red; }")
    run = MdlmApp.run
    monkeypatch.setattr(MdlmApp, "run", lambda self, **kwargs: run(self, headless=True, **kwargs))
    with pytest.raises(SystemExit) as ended:
        run_app(tmp_path / "runs")
    assert ended.value.code == 1
    assert "error: mdlm-tui stopped on an unexpected error" in capsys.readouterr().err
