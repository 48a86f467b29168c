"""The app shell and the Runs screen, driven with Pilot on run folders written by hand (no training):
state markers (stale included), order by age, open, delete to the trash after typing the run's name
(never a live run), help, the command palette, NO_COLOR at 80x24, and a start that never imports torch."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from core.runs import run_health
from mdlm_tui.app import MdlmApp
from mdlm_tui.common.confirm import ConfirmScreen
from mdlm_tui.common.state_label import StateLabel
from mdlm_tui.compare.screen import CompareScreen
from mdlm_tui.run_list.screen import RunsScreen
from mdlm_tui.shell.help import HelpScreen
from mdlm_tui.train.screen import TrainScreen
from mdlm_tui.watcher import FileTail, Series


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make_run(
    root: Path,
    name: str,
    state: str,
    pid: int | None = None,
    heartbeat_age: float = 0.0,
    step: int = 20,
    total: int = 20,
    error: str | None = None,
    eval_macro: float | None = None,
) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "eval").mkdir()
    (run / "config.yaml").write_text("name: test\n")
    now = time.time()
    status = {
        "state": state,
        "pid": pid or dead_pid(),
        "host": socket.gethostname(),
        "step": step,
        "total_steps": total,
        "loss": 5.25,
        "heartbeat": now - heartbeat_age,
        "error": error,
        "tokens": step * 1000,
        "eta_s": 0.0,
    }
    (run / "status.json").write_text(json.dumps(status))
    lines = []
    for s in range(1, step + 1):
        lines.append(
            {
                "event": "train",
                "step": s,
                "epoch": s / 100,
                "tokens": s * 1000,
                "loss": 7 - s / 10,
                "masked_ce": 7.1 - s / 10,
                "lr": 1e-3,
                "grad_norm": 1.0,
                "tokens_per_s": 5000.0,
                "mask_rate": 0.4,
                "time": now - (step - s),
                "sys": {
                    "cpu_percent": 50.0,
                    "process_cpu_percent": 99.0,
                    "rss_mb": 512.0,
                    "ram_used_percent": 20.0,
                },
            }
        )
        if s % 10 == 0:
            lines.append(
                {
                    "event": "dev",
                    "step": s,
                    "dev_loss": 6 - s / 20,
                    "dev_masked_ce": 6.1 - s / 20,
                    "time": now,
                }
            )
    if eval_macro is not None:
        lines.append(
            {
                "event": "eval",
                "step": step,
                "suite": "builtin",
                "macro": eval_macro,
                "per_uid": {},
                "time": now,
            }
        )
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


def runs_folder(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "runs"
    return {
        "finished": make_run(root, "done", "finished", eval_macro=0.625),
        "failed": make_run(root, "broken", "failed", step=5, error="loss is not finite"),
        "stale": make_run(root, "crashed", "running", step=7),  # its pid is gone
        "silent": make_run(
            root, "silent", "running", pid=os.getpid(), heartbeat_age=120
        ),  # heartbeat too old
        "live": make_run(root, "live", "running", pid=os.getpid(), step=3),  # this process: alive
    }


def state_cell(app: MdlmApp, run: Path) -> str:
    table = app.screen.query_one("DataTable")
    return table.get_cell(str(run), "state").plain


async def until(pilot, condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.05)


def select(app: MdlmApp, run: Path) -> None:
    table = app.screen.query_one("DataTable")
    table.move_cursor(row=table.get_row_index(str(run)))


def test_runs_screen_shows_every_state_as_a_word(tmp_path):
    runs = runs_folder(tmp_path)

    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, RunsScreen))
            assert "finished" in state_cell(app, runs["finished"])
            assert "failed" in state_cell(app, runs["failed"])
            assert "stale" in state_cell(app, runs["stale"])
            assert "stale" in state_cell(app, runs["silent"])
            assert "running" in state_cell(app, runs["live"])
            table = app.screen.query_one("DataTable")
            assert table.get_cell(str(runs["finished"]), "step") == "20/20"
            assert table.get_cell(str(runs["finished"]), "loss") == "5.2500"
            assert "62.5%" in table.get_cell(str(runs["finished"]), "eval")

    asyncio.run(body())


def tree(path: Path) -> dict[str, bytes]:
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def dialog_word(app: MdlmApp) -> str | None:
    """What is typed in the open confirmation dialog, None when no such field is showing."""
    from textual.widgets import Input

    fields = app.screen.query(Input) if isinstance(app.screen, ConfirmScreen) else []
    return fields[0].value if fields else None


def test_stray_typing_never_deletes_and_delete_moves_the_run_to_the_trash(tmp_path):
    from mdlm_tui.run_list.screen import find_runs

    runs = runs_folder(tmp_path)
    root = tmp_path / "runs"
    before = tree(runs["finished"])

    async def body():
        app = MdlmApp(runs_root=root)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, RunsScreen))
            select(app, runs["finished"])
            await pilot.press(*"hardy")  # d opens the dialog; the y after it must not confirm
            await until(pilot, lambda: dialog_word(app) == "y" or not runs["finished"].exists())
            assert runs["finished"].exists(), "typing 'hardy' deleted the run"
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, RunsScreen))
            assert runs["finished"].exists()

            select(app, runs["finished"])
            await pilot.press("d", *"don", "enter")  # not the name: nothing happens
            await until(pilot, lambda: dialog_word(app) == "don")
            await pilot.pause(0.2)
            assert isinstance(app.screen, ConfirmScreen) and runs["finished"].exists()
            await pilot.press("e", "enter")
            await until(pilot, lambda: not runs["finished"].exists())
            await until(
                pilot,
                lambda: isinstance(app.screen, RunsScreen) and str(runs["finished"]) not in app.screen.rows,
            )
            from core.runs import restore_run, trashed_runs

            trashed = trashed_runs(root)
            assert (
                len(trashed) == 1
                and trashed[0].parent == root / ".trash"
                and trashed[0].name.startswith("done-")
            )
            assert runs["finished"] not in find_runs(root) and trashed[0] not in find_runs(root)

            select(app, runs["live"])  # a trainer works on it: refused, with a sentence
            await pilot.press("d")
            await pilot.pause(0.2)
            assert not isinstance(app.screen, ConfirmScreen)
            assert runs["live"].exists()
            assert any("being trained" in n.message for n in app._notifications)

            select(app, runs["stale"])  # a crashed run is no longer live: it may go
            await pilot.press("d", *"crashed", "enter")
            await until(pilot, lambda: not runs["stale"].exists())

            assert restore_run(trashed[0]) == runs["finished"]
            assert tree(runs["finished"]) == before
            await until(pilot, lambda: str(runs["finished"]) in app.screen.rows)

    asyncio.run(body())


def test_restore_refuses_to_overwrite_a_run_of_the_same_name(tmp_path):
    from core.errors import UserError
    from core.runs import restore_run, trash_run

    root = tmp_path / "runs"
    first = make_run(root, "same", "finished")
    trashed = trash_run(first)
    again = make_run(root, "same", "failed")
    second = trash_run(again)  # the same name twice: both are kept
    assert trashed != second and trashed.exists() and second.exists()
    make_run(root, "same", "finished")
    try:
        restore_run(second)
    except UserError as e:
        assert "already" in str(e)
    else:
        raise AssertionError("restore overwrote a run")
    assert second.exists()


def test_runs_are_listed_newest_first_by_the_age_shown(tmp_path):
    root = tmp_path / "runs"
    old = make_run(root, "old", "finished", heartbeat_age=3600)
    new = make_run(root, "new", "finished", heartbeat_age=60)
    mid = make_run(root, "mid", "finished", heartbeat_age=600)
    for offset, run in enumerate((new, mid, old)):  # folder times say the opposite of the heartbeats
        os.utime(run, (time.time() - 10_000 + offset * 1000,) * 2)

    async def body():
        app = MdlmApp(runs_root=root)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, RunsScreen))
            table = app.screen.query_one("DataTable")

            def order() -> list[str]:
                return [row.key.value for row in table.ordered_rows]

            assert order() == [str(new), str(mid), str(old)]
            ages = [app.screen.rows[key].age_s for key in order()]
            assert ages == sorted(ages)
            select(app, mid)
            status = json.loads((old / "status.json").read_text())
            (old / "status.json").write_text(json.dumps({**status, "heartbeat": time.time()}))
            await until(pilot, lambda: order()[0] == str(old))  # the next refresh moves it up
            assert order() == [str(old), str(new), str(mid)]
            assert app.screen.selected().path == mid  # the cursor stays on the run it was on

    asyncio.run(body())


def test_palette_offers_train_requests_only_for_a_live_trainer(tmp_path):
    from mdlm_tui.app import MdlmCommands

    runs = runs_folder(tmp_path)
    paused = make_run(tmp_path / "runs", "held", "paused", pid=os.getpid())

    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs", watch=runs["finished"])
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, TrainScreen))

            def train_commands() -> set[str]:
                return {
                    text for text, _, _ in MdlmCommands(app.screen)._commands() if text.startswith("Train:")
                }

            for run in (runs["finished"], runs["failed"], runs["stale"], runs["silent"]):
                app.open_run(run)
                await until(pilot, lambda: app.current_run == run)
                assert train_commands() == set(), run.name
            app.open_run(runs["live"])
            await until(pilot, lambda: app.current_run == runs["live"])
            assert train_commands() == {"Train: stop", "Train: pause", "Train: checkpoint"}
            app.open_run(paused)
            await until(pilot, lambda: app.current_run == paused)
            assert train_commands() == {"Train: stop", "Train: resume", "Train: checkpoint"}

    asyncio.run(body())


def test_enter_opens_the_run_on_the_train_screen(tmp_path):
    runs = runs_folder(tmp_path)

    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, RunsScreen))
            select(app, runs["failed"])
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, TrainScreen))
            assert app.current_run == runs["failed"]
            await until(pilot, lambda: app.screen.query_one(StateLabel).health == "failed")
            assert "loss is not finite" in str(app.screen.query_one("#train-detail").render())
            await pilot.press("r")
            await until(pilot, lambda: isinstance(app.screen, RunsScreen))
            select(app, runs["finished"])
            await pilot.press("o")
            await until(
                pilot, lambda: isinstance(app.screen, TrainScreen) and app.screen.run_dir == runs["finished"]
            )
            await until(pilot, lambda: app.screen.query_one(StateLabel).health == "finished")

    asyncio.run(body())


def test_help_screen_and_every_global_key(tmp_path):
    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))
            text = str(app.screen.query_one("#help-text").render())
            assert "ssh server -t mdlm-tui watch runs/NAME" in text and "tmux" in text
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, RunsScreen))
            expected = {"c": "ConfigureScreen", "t": "TrainScreen", "e": "EvalScreen", "s": "SamplesScreen"}
            for key, name in expected.items():  # each screen opens (or its stand-in where not installed)
                await pilot.press(key)
                await until(pilot, lambda: type(app.screen).__name__ in (name, "UnavailableScreen"))
                app.action_show("runs")  # not a key: a form field on the screen may hold the focus
                await until(pilot, lambda: isinstance(app.screen, RunsScreen))
            await pilot.press("question_mark")
            await pilot.press("t")  # a screen key from Help leaves Help
            await until(pilot, lambda: isinstance(app.screen, TrainScreen))
            assert app.screen.run_dir is None
            assert len(app.screen_stack) == 2

    asyncio.run(body())


def test_command_palette_lists_screens_runs_and_opens_one(tmp_path):
    runs = runs_folder(tmp_path)

    async def body():
        from textual.command import CommandList, CommandPalette

        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("ctrl+p")
            await until(pilot, lambda: isinstance(app.screen, CommandPalette))

            def prompts() -> list[str]:
                options = app.screen.query_one(CommandList)
                return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]

            await until(pilot, lambda: any("Screen: train" in p for p in prompts()))
            listed = " ".join(prompts())
            for name in ("runs", "configure", "train", "eval", "samples", "help"):
                assert f"Screen: {name}" in listed
            assert "Open run: done" in listed
            await pilot.press(*"Open run: done")
            await until(pilot, lambda: any("Open run: done" in p for p in prompts()) and len(prompts()) >= 1)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, TrainScreen))
            assert app.current_run == runs["finished"]

    asyncio.run(body())


def test_no_color_at_80x24_reads_states_as_words(tmp_path, monkeypatch):
    runs = runs_folder(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")

    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs", watch=runs["finished"])
        assert app.no_color
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, TrainScreen))
            await until(pilot, lambda: app.screen.query_one(StateLabel).health == "finished")
            assert "finished" in str(app.screen.query_one(StateLabel).render())
            assert app.screen.query_one("#train-log").line_count > 0  # reconstructed from metrics.jsonl
            assert "no GPU" in str(app.screen.query_one("#train-system").render())
            await pilot.press("r")
            await until(pilot, lambda: isinstance(app.screen, RunsScreen))
            assert "stale" in state_cell(app, runs["stale"])

    asyncio.run(body())


def test_creating_the_app_does_not_import_torch():
    code = (
        "import sys; from mdlm_tui.app import MdlmApp; MdlmApp(); "
        "import mdlm_tui.watcher, mdlm_tui.run_list.screen, mdlm_tui.train.screen, mdlm_tui.shell.help; "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_run_health_and_bounded_history():
    now = time.time()
    host = socket.gethostname()
    assert run_health({"state": "finished"}) == "finished"
    assert run_health({"state": "running", "pid": os.getpid(), "host": host, "heartbeat": now}) == "running"
    assert (
        run_health({"state": "running", "pid": os.getpid(), "host": host, "heartbeat": now - 31}) == "stale"
    )
    assert run_health({"state": "paused", "pid": dead_pid(), "host": host, "heartbeat": now}) == "stale"
    assert run_health({"state": "running", "pid": 1, "host": "elsewhere", "heartbeat": now}) == "running"
    # a garbled heartbeat far in the future must not keep a run "alive" forever (pid 1 always exists)
    assert run_health({"state": "running", "pid": 1, "host": host, "heartbeat": 9e99}) == "stale"

    series = Series(cap=100)
    for step in range(100_000):
        series.append(step, float(step))
    assert len(series) <= 100
    assert series.xs[-1] == 99_999 and series.xs[0] == 0  # the newest and the oldest both survive
    assert series.xs == sorted(series.xs)


def test_file_tail_reads_new_lines_and_starts_over_after_a_rewrite(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = FileTail(path)
    assert tail.read_lines() == []
    path.write_text("a\nb\npart")
    assert tail.read_lines() == ["a", "b"]
    with open(path, "a") as f:
        f.write("ial\nc\n")
    assert tail.read_lines() == ["partial", "c"]
    replacement = tmp_path / "new"
    replacement.write_text("a\n")
    os.replace(replacement, path)  # how a resume truncation rewrites the file
    assert tail.read_lines() == ["a"] and tail.reset


def test_palette_sends_train_requests_to_a_live_run_only(tmp_path):
    runs = runs_folder(tmp_path)

    async def body():
        from textual.command import CommandPalette

        app = MdlmApp(runs_root=tmp_path / "runs", watch=runs["live"])
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, TrainScreen))
            await pilot.press("ctrl+p")
            await until(pilot, lambda: isinstance(app.screen, CommandPalette))
            await pilot.press(*"Train: checkpoint")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await until(pilot, lambda: (runs["live"] / "control.json").exists())
            assert json.loads((runs["live"] / "control.json").read_text())["command"] == "checkpoint"

            app.open_run(runs["failed"])  # nobody trains a failed run: nothing is sent
            await until(
                pilot, lambda: isinstance(app.screen, TrainScreen) and app.screen.run_dir == runs["failed"]
            )
            app.action_control("stop")
            await pilot.pause(0.2)
            assert not (runs["failed"] / "control.json").exists()

    asyncio.run(body())


# ---------------------------------------------------------------- columns, sorting, filter, marks, sweeps

FULL_CONFIG = """\
name: cpu-small
schedule: {name: bimodal, power: 0.1}
masking: {kind: frequency, p_freq: 0.02}
model: {num_layers: 4, hidden_size: 256}
"""


def set_status(run: Path, **fields) -> None:
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, **fields}))


def append_record(run: Path, record: dict) -> None:
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def column_keys(app: MdlmApp) -> list[str]:
    return [key.value for key in app.screen.query_one("DataTable").columns]


def shown(app: MdlmApp) -> list[str]:
    return [row.key.value for row in app.screen.query_one("DataTable").ordered_rows]


def cell(app: MdlmApp, run: Path, column: str) -> str:
    value = app.screen.query_one("DataTable").get_cell(str(run), column)
    return getattr(value, "plain", value)


def title(app: MdlmApp) -> str:
    return str(app.screen.query_one("#runs-title").render())


def test_a_wide_terminal_adds_the_recipe_and_the_numbers_a_run_is_judged_by(tmp_path):
    root = tmp_path / "runs"
    run = make_run(root, "recipe", "finished")
    (run / "config.yaml").write_text(FULL_CONFIG)
    append_record(run, {"event": "train", "step": 21, "tokens_per_s": 12_345.0, "elapsed": 125.0})
    plain = make_run(root, "plain", "finished")  # config.yaml holds only a name; no elapsed time recorded

    async def body():
        app = MdlmApp(runs_root=root)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, RunsScreen) and len(shown(app)) == 2)
            assert column_keys(app) == ["mark", "run", "state", "step", "loss", "eval", "age"]
            await pilot.resize_terminal(140, 40)
            await until(pilot, lambda: "parameters" in column_keys(app))
            assert column_keys(app) == [
                *("mark", "run", "preset", "parameters", "state", "step", "loss"),
                *("dev loss", "eval", "tokens/s", "duration", "age"),
            ]
            assert cell(app, run, "preset") == "cpu-small"
            assert cell(app, run, "parameters") == "bimodal p0.1, freq 0.02, 4x256"
            assert cell(app, run, "dev loss") == "5.0000"  # the dev record at step 20
            assert cell(app, run, "tokens/s") == "12.35K"
            assert cell(app, run, "duration") == "2m05s"  # what the trainer counted
            assert cell(app, plain, "preset") == "test" and cell(app, plain, "parameters") == "--"
            assert cell(app, plain, "duration") == "19s"  # first record (step 1) to the heartbeat
            await pilot.resize_terminal(80, 24)
            await until(pilot, lambda: "preset" not in column_keys(app))

    asyncio.run(body())


def test_sorting_cycles_the_columns_reverses_and_puts_missing_values_last(tmp_path):
    root = tmp_path / "runs"
    low, high, mid = (make_run(root, name, "finished") for name in ("low", "high", "mid"))
    for run, loss in ((low, 1.5), (high, 9.0), (mid, 4.0)):
        set_status(run, loss=loss)
    blank = make_run(root, "blank", "finished", step=0)  # no record and no loss: sorts last
    status = json.loads((blank / "status.json").read_text())
    del status["loss"]
    (blank / "status.json").write_text(json.dumps(status))

    async def body():
        app = MdlmApp(runs_root=root)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, RunsScreen) and len(shown(app)) == 4)
            assert "sorted" not in title(app)  # newest first until asked
            select(app, mid)
            for _ in range(10):
                if app.screen.sort == "loss":
                    break
                await pilot.press("S")
            await until(pilot, lambda: shown(app) == [str(low), str(mid), str(high), str(blank)])
            assert "sorted by loss ↑" in title(app)
            assert app.screen.selected().path == mid  # the cursor stays on its run
            await pilot.press("R")
            await until(pilot, lambda: shown(app) == [str(high), str(mid), str(low), str(blank)])
            assert "sorted by loss ↓" in title(app) and app.screen.selected().path == mid
            await pilot.press("f5")
            assert shown(app) == [str(high), str(mid), str(low), str(blank)]  # a refresh keeps the order

    asyncio.run(body())


def test_the_filter_narrows_the_rows_and_escape_restores_them(tmp_path):
    runs = runs_folder(tmp_path)

    async def body():
        from textual.widgets import Input

        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, RunsScreen) and len(shown(app)) == 5)
            await pilot.press("slash")
            field = app.screen.query_one("#runs-filter", Input)
            await until(pilot, lambda: app.focused is field)
            await pilot.press(*"STALE")  # a state, in any case
            stale = sorted([str(runs["stale"]), str(runs["silent"])])
            await until(pilot, lambda: sorted(shown(app)) == stale)
            assert "2 of 5 runs" in title(app)
            await pilot.press("ctrl+u", *"bro")  # ctrl+u empties the field
            await until(pilot, lambda: shown(app) == [str(runs["failed"])])
            await pilot.press("enter")  # keeps the filter, back on the rows: keys act again
            await until(pilot, lambda: app.focused is app.screen.query_one("DataTable"))
            assert shown(app) == [str(runs["failed"])] and field.display
            await pilot.press("escape")
            await until(pilot, lambda: len(shown(app)) == 5 and not field.display)
            assert "of 5 runs" not in title(app)

    asyncio.run(body())


def test_marks_survive_refreshes_and_sorting_and_c_compares_the_marked_runs(tmp_path):
    import shutil

    runs = runs_folder(tmp_path)

    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, RunsScreen) and len(shown(app)) == 5)
            select(app, runs["finished"])
            await pilot.press("C")  # nothing marked: the run under the cursor, and how to mark more
            await until(pilot, lambda: isinstance(app.screen, CompareScreen))
            assert app.screen.paths == [runs["finished"]]
            assert any("space" in n.message for n in app._notifications)
            await pilot.press("escape")  # back to Runs
            await until(pilot, lambda: isinstance(app.screen, RunsScreen))

            for run in (runs["finished"], runs["failed"], runs["stale"]):
                select(app, run)
                await pilot.press("space")
            await until(pilot, lambda: len(app.screen.marks) == 3)
            assert cell(app, runs["finished"], "mark") == "●" and cell(app, runs["live"], "mark") == " "
            select(app, runs["stale"])
            await pilot.press("space")  # again: unmarked
            await until(pilot, lambda: cell(app, runs["stale"], "mark") == " ")
            await pilot.press("f5", "S")
            assert cell(app, runs["finished"], "mark") == "●" and "2 marked" in title(app)

            posted: list[list[Path]] = []
            original = app.open_compare
            app.open_compare = lambda paths: (posted.append(paths), original(paths))
            expected = [key for key in shown(app) if key in {str(runs["finished"]), str(runs["failed"])}]
            await pilot.press("C")
            await until(pilot, lambda: len(posted) == 1)
            assert [str(p) for p in posted[0]] == expected  # in the order shown
            await until(
                pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.paths == posted[0]
            )
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, RunsScreen))

            shutil.rmtree(runs["failed"])  # a run that is gone loses its mark
            await pilot.press("f5")
            await until(pilot, lambda: app.screen.marks == {str(runs["finished"])})
            await pilot.press("a")  # every run shown
            await until(pilot, lambda: len(app.screen.marks) == 4)
            await pilot.press("A")
            await until(pilot, lambda: not app.screen.marks)

    asyncio.run(body())


def test_a_sweep_folder_lists_its_runs_as_a_group_and_garbage_is_skipped(tmp_path):
    from mdlm_tui.run_list.screen import find_runs

    root = tmp_path / "runs"
    sweep = root / "ablation"
    linear = make_run(sweep, "linear", "finished")
    cosine = make_run(sweep, "cosine", "failed", step=5)
    extra = make_run(sweep, "extra", "finished")  # a run folder its index does not name
    index = {
        "name": "ablation",
        "runs": [
            {
                "name": "linear",
                "path": "linear",
                "overrides": {"schedule.name": "linear"},
                "state": "finished",
            },
            {"name": "cosine", "path": "./cosine", "overrides": {}, "state": "failed"},
            {"name": "pending", "path": "pending", "overrides": {}, "state": "pending"},  # no folder yet
            "not a record",
            {"name": "odd", "path": 7},
        ],
    }
    (sweep / "sweep.json").write_text(json.dumps(index))
    junk = root / "junk"
    inside = make_run(junk, "inside", "finished")
    (junk / "sweep.json").write_bytes(b"\xff\xfe{ not json")
    alone = make_run(root, "alone", "finished")
    (alone / "config.yaml").write_bytes(b"model: [unclosed\n\xff")  # garbage YAML
    listed = make_run(root, "listed", "finished")
    (listed / "config.yaml").write_text("- a list, not a mapping\n")

    found = set(find_runs(root))
    assert found == {linear, cosine, extra, inside, alone, listed}  # a sweep folder is no run itself

    async def body():
        app = MdlmApp(runs_root=root)
        async with app.run_test(size=(140, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, RunsScreen) and len(shown(app)) == 6)
            assert cell(app, linear, "run") == "ablation/linear"
            assert cell(app, extra, "run") == "ablation/extra"
            assert cell(app, inside, "run") == "junk/inside"
            assert cell(app, alone, "run") == "alone" and cell(app, alone, "preset") == "--"
            assert cell(app, listed, "parameters") == "--"
            await pilot.press("slash", *"ablation")  # a group's name filters its runs
            await until(pilot, lambda: sorted(shown(app)) == sorted(map(str, (linear, cosine, extra))))
            await pilot.press("escape")
            await until(pilot, lambda: len(shown(app)) == 6)
            select(app, linear)
            await pilot.press("d", *"linear", "enter")  # a sweep's run goes to its sweep folder's trash
            await until(pilot, lambda: not linear.exists() and str(linear) not in app.screen.rows)
            assert (sweep / ".trash").is_dir() and len(shown(app)) == 5

    asyncio.run(body())


def test_columns_come_in_tiers_that_fit_whole():
    from mdlm_tui.run_list.columns import fitting
    from mdlm_tui.run_list.summaries import RunRow

    def row(name: str) -> RunRow:
        status = {"step": 500, "total_steps": 500}
        recipe = "bimodal p0.1, freq 0.02, 12x768"
        return RunRow(
            Path(name), status, "finished", 3.2, "blimp 61.0%", 60.0, [], preset="cpu-small", recipe=recipe
        )

    def keys(rows: list[RunRow], width: int) -> list[str]:
        return [column.key for column in fitting(rows, width)]

    base = ["mark", "run", "state", "step", "loss", "eval", "age"]
    assert keys([row("short")], 80) == base
    assert {"dev loss", "tokens/s", "duration"} <= set(keys([row("short")], 110))
    assert "parameters" in keys([row("short")], 140)
    long_name = row("paper-ablation-cpu-small/cosine-p1-frequency-seed1")  # a sweep's run
    assert "parameters" not in keys([row("short"), long_name], 140) and "preset" in keys([long_name], 140)
    assert keys([long_name], 60) == base  # the narrowest table is always shown, scrolled if need be
