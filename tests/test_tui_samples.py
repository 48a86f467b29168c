"""Samples screen, driven with Pilot at 80x24 and NO_COLOR: step through a real unmasking trace
with the keys, and sample now from a checkpoint into a new trace."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import Input, OptionList, TabbedContent

from mdlm_tui.samples.replay import MASK_GLYPH, ReplayView, render_masked
from mdlm_tui.samples.screen import SamplesScreen
from mdlm_tui.samples.traces import MASK_TEXT, read_run_traces
from tests.helpers import wait_for
from tests.test_tui_eval import TINY_STEPS, trained_tiny_run

SIZE = (80, 24)
TRACE_STEPS = 8


@pytest.fixture(scope="module")
def run_with_samples(tmp_path_factory) -> Path:
    """The shared tiny run with one real trace in samples.jsonl, as training writes it."""
    from core.evaluate import load_for_eval
    from core.sampling import SampleConfig, append_sample, sample

    run = trained_tiny_run(tmp_path_factory)
    samples = run / "samples.jsonl"
    if not samples.exists():
        model, tokenizer, _, _ = load_for_eval(str(run), device="cpu")
        result = sample(model, tokenizer, SampleConfig(length=24, steps=TRACE_STEPS, seed=1), device="cpu")
        append_sample(samples, result, step=TINY_STEPS)
    return run


class SamplesHost(App):
    def __init__(self, run: Path) -> None:
        super().__init__()
        self.run_path = run

    def on_mount(self) -> None:
        self.push_screen(SamplesScreen(self.run_path))


def test_masked_positions_are_a_reverse_block():
    from core.sampling import MASK_TEXT as ENGINE_MASK_TEXT

    assert MASK_TEXT == ENGINE_MASK_TEXT
    text = render_masked(f"In the{MASK_TEXT}{MASK_TEXT} God")
    assert text.plain == f"In the{MASK_GLYPH}{MASK_GLYPH} God"
    assert [(span.start, span.end, str(span.style)) for span in text.spans] == [
        (6, 7, "reverse"),
        (7, 8, "reverse"),
    ]


def test_step_through_a_trace_with_the_keys(run_with_samples, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")

    async def drive():
        app = SamplesHost(run_with_samples)
        async with app.run_test(size=SIZE) as pilot:
            assert app.no_color
            screen = app.screen
            replay = screen.query_one(ReplayView)
            assert [entry.label for entry in screen.entries] == [f"step {TINY_STEPS}"]
            assert len(replay.steps) == TRACE_STEPS + 1 and replay.index == 0
            assert screen.focused is screen.query_one(OptionList)
            first = replay.current
            assert first["masked"] > 0 and MASK_GLYPH in str(replay.render())

            seen = [first]
            for _ in range(TRACE_STEPS):
                await pilot.press("right")
                seen.append(replay.current)
            assert replay.index == TRACE_STEPS
            masked = [step["masked"] for step in seen]
            assert (
                masked == sorted(masked, reverse=True) and masked[-1] == 0
            )  # never more masked, none at the end
            assert seen[-1]["text"] != first["text"] and MASK_GLYPH not in str(replay.render())
            await pilot.press("right")  # past the end stays at the end
            assert replay.index == TRACE_STEPS

            await pilot.press("left", "left")
            assert replay.index == TRACE_STEPS - 2
            await pilot.press("enter")  # from the list into the replay view, keeping the step
            assert screen.focused is replay and replay.index == TRACE_STEPS - 2
            await pilot.press("end")
            assert replay.index == TRACE_STEPS
            await pilot.press("home")
            assert replay.index == 0

            await pilot.press("plus", "plus", "plus")  # fastest: 16 steps a second
            assert replay.speed == 16
            await pilot.press("space")
            assert replay.playing
            await wait_for(pilot, lambda: not replay.playing, 60, "the replay to play to the end")
            assert replay.index == TRACE_STEPS
            await pilot.press("minus")
            assert replay.speed == 8

            # a training run appends another sample: it is listed, and the replay stays where it was
            await pilot.press("left")
            samples = run_with_samples / "samples.jsonl"
            record = json.loads(samples.read_text().splitlines()[0])
            with open(samples, "a") as f:
                f.write(json.dumps({**record, "step": 2 * TINY_STEPS}) + "\n")
            await wait_for(pilot, lambda: len(screen.entries) == 2, 60, "the new sample to be listed")
            assert [entry.label for entry in screen.entries] == [
                f"step {TINY_STEPS}",
                f"step {2 * TINY_STEPS}",
            ]
            await pilot.pause(0.2)
            assert replay.label == f"step {TINY_STEPS}" and replay.index == TRACE_STEPS - 1

    asyncio.run(drive())


def test_sample_now_adds_a_trace(run_with_samples):
    async def drive():
        app = SamplesHost(run_with_samples)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            before = len(screen.entries)
            screen.query_one("#sample-length", Input).value = "20"
            screen.query_one("#sample-steps", Input).value = "6"
            screen.query_one("#sample-seed", Input).value = "7"
            live = []
            original = screen.query_one(ReplayView).add_live_step
            screen.query_one(ReplayView).add_live_step = lambda step: (live.append(step), original(step))
            await pilot.press("ctrl+n")
            await wait_for(
                pilot, lambda: not screen.sampling and len(screen.entries) > before, 120, "the new trace"
            )
            replay = screen.query_one(ReplayView)
            assert [step["step"] for step in live] == list(range(7))  # replayed live, step by step
            assert len(replay.steps) == 7 and replay.index == 6 and replay.current["masked"] == 0
            new = screen.entries[-1]
            assert new.source.parent == run_with_samples / "traces" and "seed7" in new.source.name
            assert len(read_run_traces(run_with_samples)) == before + 1

            # a bad option is reported inline, not raised
            screen.query_one("#sample-steps", Input).value = "many"
            await pilot.press("ctrl+n")
            assert not screen.sampling
            assert "steps must be a whole number" in str(screen.query_one("#samples-status").render())

    asyncio.run(drive())


def test_home_and_end_move_the_replay_whatever_has_focus(tmp_path):
    """home/end reach the first/last step of the trace on show, also while the trace list has focus
    (where the list's own home/end would move its highlight to another trace)."""
    run = tmp_path / "run"
    run.mkdir()
    trace = [
        {"step": i, "t": 1 - i / 4, "masked": 4 - i, "text": MASK_TEXT * (4 - i) + "a" * i} for i in range(5)
    ]
    (run / "samples.jsonl").write_text(
        "".join(json.dumps({"step": s, "text": "aaaa", "trace": trace}) + "\n" for s in (10, 20))
    )

    async def drive():
        app = SamplesHost(run)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            replay = screen.query_one(ReplayView)
            await wait_for(pilot, lambda: replay.label == "step 20", 60, "the newest trace on show")
            for focus in (screen.query_one(OptionList), replay):
                focus.focus()
                await pilot.pause()
                await pilot.press("end")
                assert (replay.label, replay.index) == ("step 20", 4), (
                    f"end with {type(focus).__name__} focused"
                )
                await pilot.press("home")
                assert (replay.label, replay.index) == ("step 20", 0), (
                    f"home with {type(focus).__name__} focused"
                )
            screen.query_one(TabbedContent).active = "tab-sample"
            seed = screen.query_one("#sample-seed", Input)
            seed.focus()
            await pilot.pause()
            seed.cursor_position = 0
            await pilot.press("end")  # in a text field home/end still move the cursor
            assert seed.cursor_position == len(seed.value)

    asyncio.run(drive())
