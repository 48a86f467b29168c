"""Run folders that look the same every time they are written, for snapshot tests and the README's
screenshots: fixed heartbeats, curves, eval reports, a hand-written unmasking trace and a fixed
train.log, plus a frozen clock for the only text that depends on the time (ages such as "3h00m ago").

SCREENS says how to bring each screen up on that set with a Pilot; the snapshot tests
(tests/test_tui_snapshots.py) and the README's screenshots (bench/screenshots.py) share it.
Nothing here imports torch or trains: a fixture set is written in milliseconds.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path

from core.config import load_config, to_yaml

# 2026-01-01 00:00 UTC: the instant the screens believe it is while frozen_clock() is active
FROZEN_NOW = 1_767_225_600.0
DEMO_RUN = "smoke-demo"  # the finished run the run-bound screens open
MASK_TEXT = "[MASK]"  # what the sampler writes for a masked position (core.sampling.MASK_TEXT)
MASK_ID = 4

# name, preset, state, step, total steps, heartbeat hours before FROZEN_NOW, host, error
RUNS = (
    (DEMO_RUN, "smoke", "finished", 500, 500, 2, "laptop", None),
    ("cosine-gpu", "cosine", "running", 1200, 60000, 3, "gpu-server", None),  # silent for hours: stale
    ("bimodal-p0", "bimodal-p0", "failed", 840, 60000, 26, "gpu-server", "loss is not finite at step 840"),
    ("cpu-small", "cpu-small", "stopped", 450, 900, 50, "laptop", None),
)
TRACE_WORDS = (
    "And the LORD said unto Moses , Go in unto the people , and they shall know that I am "
    "the LORD their God , which brought them out of the land ."
).split()
TRACE_STEPS = 8
TOKENS_PER_STEP = 16 * 128  # the smoke preset's batch
CORPUS_TOKENS = 790_000  # about the embedded corpus: a little over 385 steps an epoch


# ---------------------------------------------------------------- curves and records


def loss_at(step: int, total: int) -> float:
    """A falling training loss with a little deterministic wiggle, as a real one looks."""
    return 3.2 + 6.0 * math.exp(-step / (0.18 * total)) + 0.08 * math.sin(step / 7.0)


def epoch_at(step: int) -> float:
    return step * TOKENS_PER_STEP / CORPUS_TOKENS


def lr_at(step: int, total: int) -> float:
    warmup = max(1, total // 50)
    if step < warmup:
        return 3e-3 * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 3e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def metrics_records(step: int, total: int, started: float) -> list[dict]:
    """metrics.jsonl as the trainer writes it: a train line every 10 steps, dev every 50, eval every 250."""
    records = []
    for s in range(10, step + 1, 10):
        loss = loss_at(s, total)
        records.append(
            {
                "event": "train",
                "step": s,
                "epoch": epoch_at(s),
                "tokens": s * TOKENS_PER_STEP,
                "loss": round(loss, 4),
                "masked_ce": round(loss - 0.35, 4),
                "lr": lr_at(s, total),
                "grad_norm": 1.2,
                "tokens_per_s": 8400.0,
                "mask_rate": 0.5,
                "p_freq": 0.0,
                "time": started + s * 0.25,
                "sys": {
                    "cpu_percent": 96.0,
                    "process_cpu_percent": 188.0,
                    "rss_mb": 612.0,
                    "ram_used_percent": 41.0,
                    "gpus": [],
                },
            }
        )
        if s % 50 == 0:
            dev = loss_at(s, total) + 0.15
            records.append(
                {
                    "event": "dev",
                    "step": s,
                    "dev_loss": round(dev, 4),
                    "dev_masked_ce": round(dev - 0.3, 4),
                    "time": started + s * 0.25,
                }
            )
        if s % 250 == 0 and total <= 1000:  # the long server runs have not reached their first eval
            report = eval_report(s)
            records.append(
                {
                    "event": "eval",
                    "step": s,
                    "suite": "builtin",
                    "macro": report["macro"],
                    "per_uid": report["per_uid"],
                    "per_field": report["per_field"],
                    "time": started + s * 0.25,
                }
            )
    return records


BUILTIN_UIDS = (
    "subject_verb_agreement",
    "agreement_with_attractor",
    "determiner_noun_agreement",
    "anaphor_gender_agreement",
    "anaphor_number_agreement",
    "irregular_past_tense",
    "irregular_plural_nouns",
)


def eval_report(step: int, run: str = DEMO_RUN) -> dict:
    """A builtin-suite report as `mdlm-tui eval` saves it, with each item's credit; accuracies grow
    with the step."""
    per_uid, credits = {}, {}
    for index, uid in enumerate(BUILTIN_UIDS):
        right = round(60 * (0.5 + (0.03 + 0.02 * index) * step / 250))
        credits[uid] = [1] * right + [0] * (60 - right)
        random.Random(f"{uid}-{step}").shuffle(credits[uid])
        per_uid[uid] = {"accuracy": round(right / 60, 4), "n": 60, "field": "morphology", "term": uid}
    macro = sum(r["accuracy"] for r in per_uid.values()) / len(per_uid)
    return {
        "suite": "builtin",
        "per_uid": per_uid,
        "per_field": {"morphology": macro},
        "macro": macro,
        "n": 60 * len(per_uid),
        "seconds": 41.5,
        "backend": "pll",
        "checkpoint": f"runs/{run}/checkpoints/step-{step}",
        "limit": None,
        "weights": "ema",
        "rate_value": 0.0,
        "draws": None,
        "credits": credits,
    }


def unmasking_trace(seed: int) -> list[dict]:
    """A trace in the sampler's format: step 0 all masked, then a fixed share unmasked each step."""
    order = list(range(len(TRACE_WORDS)))
    random.Random(seed).shuffle(order)
    token_ids = [100 + 7 * i for i in range(len(TRACE_WORDS))]
    trace = []
    for step in range(TRACE_STEPS + 1):
        shown = set(order[: round(len(order) * step / TRACE_STEPS)])
        words = [
            (" " if i and word not in ",." else "") + word if i in shown else MASK_TEXT
            for i, word in enumerate(TRACE_WORDS)
        ]
        trace.append(
            {
                "step": step,
                "t": round(1 - step / TRACE_STEPS, 4),
                "tokens": [token_ids[i] if i in shown else MASK_ID for i in range(len(TRACE_WORDS))],
                "masked": len(TRACE_WORDS) - len(shown),
                "text": "".join(words).strip(),
            }
        )
    return trace


def train_log(step: int, total: int) -> str:
    """The lines the trainer logs (as in core/trainer.py), stamped from a fixed 09:00:00."""

    def stamped(seconds: int, line: str) -> str:
        clock = 9 * 3600 + seconds
        return f"[{clock // 3600:02d}:{clock % 3600 // 60:02d}:{clock % 60:02d}] {line}"

    per_epoch = CORPUS_TOKENS / TOKENS_PER_STEP
    lines = [
        stamped(
            0,
            f"model: 1,106,048 parameters on cpu; {total:,} steps (2 epoch(s), "
            f"{per_epoch:,.1f} steps an epoch)",
        )
    ]
    for s in range(10, step + 1, 10):
        loss = loss_at(s, total)
        lines.append(
            stamped(
                s // 4,
                f"step {s}/{total} | epoch {epoch_at(s):.2f} | loss {loss:.4f} | "
                f"masked CE {loss - 0.35:.4f} | lr {lr_at(s, total):.2e} | 8,400 tok/s | "
                f"mask 0.500 | eta {(total - s) // 4}s",
            )
        )
        if s % 50 == 0:
            dev = loss_at(s, total) + 0.15
            lines.append(
                stamped(
                    s // 4, f"step {s} | dev loss {dev:.4f} | dev masked CE {dev - 0.3:.4f} (ema weights)"
                )
            )
    lines.append(
        stamped(
            step // 4,
            f"finished at step {step} after 2m05s; checkpoint runs/{DEMO_RUN}/checkpoints/step-{step}",
        )
    )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- folders


def write_run(
    root: Path,
    name: str,
    preset: str,
    state: str,
    step: int,
    total: int,
    heartbeat_hours: float,
    host: str,
    error: str | None,
) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "eval").mkdir()
    (run / "config.yaml").write_text(to_yaml(load_config(preset)))
    heartbeat = FROZEN_NOW - heartbeat_hours * 3600
    started = heartbeat - step * 0.25
    records = metrics_records(step, total, started)
    last_train = [r for r in records if r["event"] == "train"][-1]
    status = {
        "state": state,
        "pid": 4242,
        "host": host,
        "step": step,
        "total_steps": total,
        "tokens": last_train["tokens"],
        "loss": last_train["loss"],
        "heartbeat": heartbeat,
        "error": error,
        "eta_s": None,
        "dev_loss": round(loss_at(step - step % 50, total) + 0.15, 4),
        # a run that ended saved a checkpoint at its last step; the others have the last periodic one
        "checkpoint": f"step-{step if state in ('finished', 'stopped') else step - step % 250}",
    }
    (run / "status.json").write_text(json.dumps(status, indent=1))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def write_demo_extras(run: Path) -> None:
    """What only the finished demo run has: checkpoints, saved eval reports, samples and a log."""
    for step in (250, 500):
        (run / "checkpoints" / f"step-{step}").mkdir()
        (run / "eval" / f"builtin-step-{step}-pll.json").write_text(json.dumps(eval_report(step), indent=1))
    samples = [
        {
            "step": step,
            "text": trace[-1]["text"],
            "tokens": trace[-1]["tokens"],
            "forward_passes": TRACE_STEPS,
            "seconds": 0.4,
            "trace": trace,
        }
        for step, trace in ((250, unmasking_trace(1)), (500, unmasking_trace(2)))
    ]
    (run / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (run / "train.log").write_text(train_log(500, 500))


def write_fixture_runs(root: Path) -> dict[str, Path]:
    """The fixture set under `root` (which should be a relative path such as `runs`, so the screens
    never show a temporary folder); returns name -> run folder."""
    root = Path(root)
    runs = {spec[0]: write_run(root, *spec) for spec in RUNS}
    write_demo_extras(runs[DEMO_RUN])
    # the stopped cpu-small run was evaluated where it stopped: a second run to compare with
    stopped = runs["cpu-small"]
    (stopped / "checkpoints" / "step-450").mkdir()
    (stopped / "eval" / "builtin-step-450-pll.json").write_text(json.dumps(eval_report(450, "cpu-small")))
    # the Runs screen lists newest first by folder time: fix those times, and every file's
    for age_rank, run in enumerate(runs.values()):
        stamp = FROZEN_NOW - 3600 * (age_rank + 1)
        for path in sorted(run.rglob("*"), reverse=True):
            os.utime(path, (stamp, stamp))
        os.utime(run, (stamp, stamp))
    return runs


# ---------------------------------------------------------------- time


class FrozenClock:
    """Stands in for the `time` module of the screens that print ages: time() is FROZEN_NOW,
    everything else (monotonic for timers, strftime ...) is the real module."""

    def time(self) -> float:
        return FROZEN_NOW

    def __getattr__(self, name):
        return getattr(time, name)


FROZEN_MODULES = ("mdlm_tui.run_list.screen", "mdlm_tui.train.screen")


# what the system pane reads "live" while frozen: a machine without a GPU, half busy
FROZEN_MACHINE = {"cpu_percent": 50.0, "ram_used_percent": 40.0}


@contextmanager
def frozen_clock():
    """Ages on the Runs and Train screens are measured from FROZEN_NOW while this is active, and the
    system pane reads FROZEN_MACHINE rather than this machine."""
    import importlib

    from core.telemetry import LiveStats

    modules = [importlib.import_module(name) for name in FROZEN_MODULES]
    saved = [module.time for module in modules]
    saved_reads = LiveStats.machine, LiveStats.process
    for module in modules:
        module.time = FrozenClock()
    LiveStats.machine = lambda self: dict(FROZEN_MACHINE)
    LiveStats.process = lambda self, pid: None
    try:
        yield
    finally:
        for module, original in zip(modules, saved):
            module.time = original
        LiveStats.machine, LiveStats.process = saved_reads


# ---------------------------------------------------------------- bringing each screen up


async def until(pilot, condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await pilot.pause(0.05)


def showing(pilot, class_name: str) -> bool:
    return type(pilot.app.screen).__name__ == class_name


async def show_runs(pilot) -> None:
    await until(pilot, lambda: showing(pilot, "RunsScreen"), "the Runs screen")
    await until(
        pilot, lambda: pilot.app.screen.query_one("#runs-table").row_count == len(RUNS), "every run listed"
    )


async def show_train(pilot) -> None:
    await until(pilot, lambda: showing(pilot, "TrainScreen"), "the Train screen")
    screen = pilot.app.screen
    # the numbers come with the first watcher message, the curves at the next replot
    await until(pilot, lambda: screen.query_one("#train-state").health == "finished", "the run's state")
    await until(
        pilot,
        lambda: all(screen.query_one(f"#plot-{name}").points for name in ("loss", "dev", "lr")),
        "the curves",
    )
    await until(pilot, lambda: screen.query_one("#train-log").line_count > 0, "the log")
    await pilot.pause()  # the state label and the log laid out anew before the picture is taken


async def show_configure(pilot) -> None:
    await show_runs(pilot)
    await pilot.press("c")
    await until(pilot, lambda: showing(pilot, "ConfigureScreen"), "the Configure screen")
    screen = pilot.app.screen
    # the schedule plots and the parameter count are computed in a worker thread
    await until(
        pilot, lambda: "parameters" in str(screen.query_one("#configure-verdict").render()), "the previews"
    )
    await until(
        pilot, lambda: screen.query_one("#configure-weight-plot").shown is not None, "the weight plot"
    )


async def show_eval(pilot) -> None:
    await show_train(pilot)
    await pilot.press("e")
    await until(pilot, lambda: showing(pilot, "EvalScreen"), "the Eval screen")
    await until(
        pilot,
        lambda: pilot.app.screen.query_one("#eval-table").row_count == len(BUILTIN_UIDS),
        "the saved report",
    )


REPLAY_STEP = 4  # mid-replay: half the positions unmasked


async def show_samples(pilot) -> None:
    await show_train(pilot)
    await pilot.press("s")
    await until(pilot, lambda: showing(pilot, "SamplesScreen"), "the Samples screen")
    replay = pilot.app.screen.query_one("#samples-replay")
    await until(pilot, lambda: len(replay.steps) == TRACE_STEPS + 1, "the newest trace")
    await pilot.press(*["right"] * REPLAY_STEP)
    await until(pilot, lambda: replay.index == REPLAY_STEP and not replay.playing, "the replay step")


async def show_help(pilot) -> None:
    await show_runs(pilot)
    await pilot.press("question_mark")
    await until(pilot, lambda: showing(pilot, "HelpScreen"), "the Help screen")


async def show_compare(pilot) -> None:
    """The finished demo run against the stopped cpu-small run: marked on Runs with space, then C."""
    await show_runs(pilot)
    await pilot.press("space", "down", "down", "down", "space")
    await until(pilot, lambda: len(pilot.app.screen.marks) == 2, "the two marks")
    await pilot.press("C")
    await until(pilot, lambda: showing(pilot, "CompareScreen"), "the Compare screen")
    title = pilot.app.screen.query_one("#compare-title")
    await until(pilot, lambda: "baseline" in str(title.render()), "the comparison")
    await until(pilot, lambda: pilot.app.screen.query_one("#compare-curves").points, "the curves")


# screen name -> (whether the app opens on the demo run, how to bring the screen up)
SCREENS = {
    "runs": (False, show_runs),
    "train": (True, show_train),
    "configure": (False, show_configure),
    "eval": (True, show_eval),
    "samples": (True, show_samples),
    "help": (False, show_help),
    "compare": (False, show_compare),
}


def make_app(screen: str, runs_root: Path = Path("runs")):
    """The app as `mdlm-tui` (or `mdlm-tui watch runs/smoke-demo`) would start on the fixture set."""
    from mdlm_tui.app import MdlmApp

    opens_run, _ = SCREENS[screen]
    return MdlmApp(runs_root=runs_root, watch=runs_root / DEMO_RUN if opens_run else None)
