"""What a watching TUI costs the trainer, how fast the UI answers a key while training runs, and how
long `mdlm-tui --help` takes.

    python bench/tui_overhead.py [--preset smoke] [--pairs 8] [--window 12] [--presses 40] [--json OUT]

1. `mdlm-tui --help`, wall time of the installed command, median of 10.
2. One training run, in windows: alone, watched by `mdlm-tui watch` in a tmux session of 100x30,
   alone, watched, ... alone (--pairs watched windows). A window's tokens/s comes from the train
   records it holds (metrics.jsonl); it starts SETTLE_S after the TUI came or went. The overhead
   is the median over the watched windows of 1 - watched / (mean of the alone windows either side).
3. While the same run trains: key-press latency, '?' until the Help screen is showing, then back
   to the Train screen with Escape or with t (in turns), (a) in a headless `App.run_test` in this
   process, from the key being posted to the screen being active and refreshed, and (b) end to end
   in tmux, from `send-keys` until `capture-pane` shows the new screen (this includes a few
   milliseconds of tmux round trip per poll, so it reads slightly high). In a terminal a lone
   Escape byte may begin a longer key sequence, so Textual's input thread names it Escape only
   when no byte follows for ESCDELAY (100 ms) and its next 100 ms poll comes round: Escape in
   tmux carries that wait; the headless Escape does not, it never passes through the parser.

Everything runs in a temporary folder with its own corpus cache warmed once before timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.runs import RunDir, read_jsonl  # noqa: E402  (light: no torch)

SETTLE_S = 3.0  # after the TUI comes or goes (and after torch warms up), before a window counts
HELP_MARKER = "SCREENS (their keys work everywhere)"
TRAIN_MARKER = "tok/s"


def mdlm_command() -> list[str]:
    exe = Path(sys.executable).with_name("mdlm-tui")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mdlm_tui"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---------------------------------------------------------------- --help


def time_help(runs: int = 10) -> dict:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(mdlm_command() + ["--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": runs}


# ---------------------------------------------------------------- tmux


class Tmux:
    """A private tmux server (its own socket), so only what the bench started is ever killed."""

    def __init__(self, workdir: Path):
        self.socket = f"mdlm-bench-{uuid.uuid4().hex[:8]}"
        self.config = workdir / "tmux.conf"
        self.config.write_text("set -g status off\n")

    def __call__(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, "-f", str(self.config), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=20,
        ).stdout

    def start(self, session: str, argv: list[str]) -> None:
        self(
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "100",
            "-y",
            "30",
            "-e",
            "TERM=xterm-256color",
            "-e",
            f"MDLM_TUI_CACHE={os.environ['MDLM_TUI_CACHE']}",
            shlex.join(argv),
        )

    def screen(self, session: str) -> str:
        return self("capture-pane", "-p", "-t", session)

    def kill_server(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=20)


# ---------------------------------------------------------------- the trainer


def train_args(args, run_dir: Path, steps: int) -> list[str]:
    sets = [
        f"train.budget={steps} steps",
        f"train.log_every={args.log_every}",
        "train.dev_every=0",
        f"train.checkpoint_every={steps}",
        f"train.threads={args.threads}",
    ]
    return mdlm_command() + [
        "run",
        "--preset",
        args.preset,
        "--run-dir",
        str(run_dir),
        *[a for s in sets for a in ("--set", s)],
    ]


def start_trainer(args, run_dir: Path, steps: int) -> subprocess.Popen:
    log = open(run_dir.parent / f"{run_dir.name}.log", "w")
    return subprocess.Popen(train_args(args, run_dir, steps), stdout=log, stderr=subprocess.STDOUT)


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waiting for {what}")
        time.sleep(0.1)


# ---------------------------------------------------------------- overhead windows


def window_rate(records: list[dict], start: float, end: float) -> float | None:
    """Tokens per second between the first and the last train record logged inside [start, end]."""
    inside = [r for r in records if r.get("event") == "train" and start <= r["time"] <= end]
    if len(inside) < 2:
        return None
    return (inside[-1]["tokens"] - inside[0]["tokens"]) / (inside[-1]["time"] - inside[0]["time"])


def measure_overhead(args, run_dir: Path, tmux: Tmux) -> dict:
    """Windows of the one training run, alone and watched in turns (alone first and last). Each
    window counts from SETTLE_S after the TUI came or went, so Python starting up is left out:
    the steady cost of watching is what a run of hours pays. A watched window is compared with
    the mean of the alone windows either side, which cancels slow drift of the machine."""
    windows = []
    for index in range(2 * args.pairs + 1):
        watched = index % 2 == 1
        if watched:
            tmux.start("watched", mdlm_command() + ["watch", str(run_dir)])
        start = time.time() + SETTLE_S
        time.sleep(SETTLE_S + args.window)
        if watched:  # the TUI must still be there at the end, or the window measured nothing
            assert TRAIN_MARKER in tmux.screen("watched"), "the watching TUI is gone"
            subprocess.run(["tmux", "-L", tmux.socket, "kill-session", "-t", "watched"], capture_output=True)
        windows.append({"watched": watched, "start": start, "end": time.time()})
    records = read_jsonl(run_dir / "metrics.jsonl")
    for window in windows:
        window["tokens_per_s"] = window_rate(records, window["start"], window["end"])
        if window["tokens_per_s"] is None:
            raise RuntimeError(
                "a window holds fewer than two train records: lower --log-every or raise --window"
            )

    def rate(w):
        return w["tokens_per_s"]

    paired = [
        1 - rate(w) / ((rate(before) + rate(after)) / 2)
        for before, w, after in zip(windows[0::2], windows[1::2], windows[2::2])
    ]
    alone = statistics.median(rate(w) for w in windows if not w["watched"])
    watched = statistics.median(rate(w) for w in windows if w["watched"])
    return {
        "alone_tokens_per_s": alone,
        "watched_tokens_per_s": watched,
        "overhead": statistics.median(paired),
        "per_pair": paired,
        "windows": windows,
    }


# ---------------------------------------------------------------- key-press latency


async def headless_latency(run_dir: Path, presses: int) -> dict:
    from textual import events

    from mdlm_tui.app import MdlmApp
    from mdlm_tui.shell.help import HelpScreen
    from mdlm_tui.train.screen import TrainScreen

    app = MdlmApp(runs_root=run_dir.parent, watch=run_dir)
    times: dict[str, list[float]] = {"?": [], "escape": [], "t": []}
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(2.0)  # the watcher's first messages, like a person's first look
        for press in range(presses):
            back = ("escape", None) if press % 2 == 0 else ("t", "t")
            for (key, char), screen_class, name in (
                (("question_mark", "?"), HelpScreen, "?"),
                (back, TrainScreen, back[0]),
            ):
                # the key goes in the way the terminal driver delivers one; done = the screen switched
                # and the app's next refresh has run (what a person would see)
                t0 = time.perf_counter()
                app.post_message(events.Key(key, char))
                while not isinstance(app.screen, screen_class):
                    await asyncio.sleep(0.001)
                await app.screen.wait_for_refresh()
                times[name].append(time.perf_counter() - t0)
                await asyncio.sleep(0.2)
    return summarize_latency(times)


def tmux_latency(tmux: Tmux, run_dir: Path, presses: int) -> dict:
    tmux.start("latency", mdlm_command() + ["watch", str(run_dir)])
    wait_until(lambda: TRAIN_MARKER in tmux.screen("latency"), 60, "the Train screen in tmux")
    time.sleep(2.0)
    times: dict[str, list[float]] = {"?": [], "escape": [], "t": []}
    for press in range(presses):
        back = "Escape" if press % 2 == 0 else "t"
        for key, marker in (("?", HELP_MARKER), (back, TRAIN_MARKER)):
            t0 = time.perf_counter()
            tmux("send-keys", "-t", "latency", key)
            while marker not in tmux.screen("latency"):
                time.sleep(0.005)  # a busy poll would be one more process competing for the two cores
                if time.perf_counter() - t0 > 10:
                    raise TimeoutError(f"the screen did not answer {key} within 10 s")
            times[key.lower()].append(time.perf_counter() - t0)
            time.sleep(0.2)
    return summarize_latency(times)


def summarize_latency(times: dict[str, list[float]]) -> dict:
    """Per key: median, p95 and max in milliseconds."""
    return {
        key: {
            "median_ms": 1000 * statistics.median(values),
            "p95_ms": 1000 * percentile(values, 0.95),
            "max_ms": 1000 * max(values),
            "n": len(values),
            "all_ms": [round(1000 * v, 1) for v in values],
        }
        for key, values in times.items()
    }


def measure_latency(args, run_dir: Path, tmux: Tmux) -> dict:
    return {
        "headless": asyncio.run(headless_latency(run_dir, args.presses)),
        "tmux": tmux_latency(tmux, run_dir, args.presses),
    }


# ---------------------------------------------------------------- main


def machine() -> dict:
    import torch

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?"
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--threads", type=int, default=0, help="trainer threads (0 = all cores)")
    parser.add_argument(
        "--log-every", type=int, default=10, help="steps between train records (smoke: about 1 s)"
    )
    parser.add_argument("--pairs", type=int, default=8, help="watched windows, each between two alone ones")
    parser.add_argument("--window", type=float, default=12.0, help="seconds measured per window")
    parser.add_argument("--presses", type=int, default=40, help="key presses per latency measurement")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not shutil.which("tmux"):
        sys.exit("tmux is needed: the watching TUI runs in a terminal")

    workdir = Path(tempfile.mkdtemp(prefix="mdlm-tui-overhead-"))
    os.environ["MDLM_TUI_CACHE"] = str(workdir / "cache")
    tmux = Tmux(workdir)
    report = {"machine": machine(), "config": vars(args) | {"json": str(args.json)}}
    trainer = None
    try:
        report["help"] = time_help()
        print(f"mdlm-tui --help: median {report['help']['median_s'] * 1000:.0f} ms", flush=True)
        # one short run fills the corpus cache, so the timed run does not build the tokenizer
        warm = start_trainer(args, workdir / "warm-cache", steps=2)
        if warm.wait() != 0:
            sys.exit(f"the warm-up run failed; see {workdir}/warm-cache.log")
        run_dir = workdir / "run"
        trainer = start_trainer(args, run_dir, steps=1_000_000)  # stopped below, once everything is measured
        wait_until(lambda: int(RunDir(run_dir).read_status().get("step") or 0) > 0, 180, "the first step")
        time.sleep(SETTLE_S)  # torch warm-up
        if args.pairs:  # --pairs 0 measures only --help and the key-press latency
            report["overhead"] = measure_overhead(args, run_dir, tmux)
            result = report["overhead"]
            print(
                f"tokens/s alone {result['alone_tokens_per_s']:,.0f}, watched "
                f"{result['watched_tokens_per_s']:,.0f}; "
                f"overhead {100 * result['overhead']:.1f} % (median of pairs: "
                f"{', '.join(f'{100 * o:.1f}' for o in result['per_pair'])})",
                flush=True,
            )
        report["latency"] = measure_latency(args, run_dir, tmux)
        for where, result in report["latency"].items():
            print(
                f"latency {where}: "
                + "; ".join(
                    f"{key} median {r['median_ms']:.0f} ms p95 {r['p95_ms']:.0f} ms"
                    for key, r in result.items()
                ),
                flush=True,
            )
        report["trainer_still_running"] = trainer.poll() is None
    finally:
        if trainer is not None:
            trainer.terminate()  # SIGTERM: the trainer checkpoints and stops
            try:
                trainer.wait(timeout=120)
            except subprocess.TimeoutExpired:
                trainer.kill()
        tmux.kill_server()
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
