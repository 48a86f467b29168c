"""Follow a run folder from a thread: status.json, metrics.jsonl, samples.jsonl and train.log.

The watcher only reads. Each poll it takes what is new in every file, folds it into a bounded
history and posts one `RunUpdated` message to its target (at most `1 / interval` a second), so the
UI thread never touches the disk and a long run never grows memory. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from textual.message import Message

from core.runs import RunDir, valid_metrics_record

LOG_TAIL_LINES = 400
HISTORY_POINTS = 5000
SERIES = ("loss", "masked_ce", "dev_loss", "dev_masked_ce", "lr", "tokens_per_s")


# ---------------------------------------------------------------- tailing files


class FileTail:
    """New complete lines of a growing file, from a remembered offset.

    A file that was replaced (a new inode: resume truncation rewrites metrics.jsonl atomically) or
    that shrank is read again from the start, and `reset` says so, so the caller drops what it had.
    """

    MAX_READ_BYTES = (
        8 * 2**20
    )  # attaching to a days-long run loads its history over a few polls, in bounded memory

    def __init__(self, path: Path, start_at_end_bytes: int | None = None):
        self.path = Path(path)
        self.offset = 0
        self.identity: tuple[int, int] | None = None
        self.reset = False
        self._start_at_end_bytes = start_at_end_bytes  # a log only needs its tail on first read

    def read_lines(self) -> list[str]:
        self.reset = False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self.identity is not None:
                self.identity, self.offset, self.reset = None, 0, True
            return []
        identity = (st.st_dev, st.st_ino)
        skip_fragment = False
        if self.identity is None:
            if self._start_at_end_bytes is not None:
                self.offset = max(0, st.st_size - self._start_at_end_bytes)
                skip_fragment = self.offset > 0  # opened part-way: the first line is a fragment
        elif identity != self.identity or st.st_size < self.offset:
            self.offset, self.reset = 0, True
        self.identity = identity
        if st.st_size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.MAX_READ_BYTES)
        end = data.rfind(b"\n")
        if end < 0:
            return []  # a line still being written: wait for its newline
        self.offset += end + 1
        lines = data[: end + 1].decode("utf-8", errors="replace").splitlines()
        return lines[1:] if skip_fragment else lines


class JsonlTail(FileTail):
    """The JSON objects of new lines; a line that is no object (or that `valid` refuses) is skipped
    and counted in `skipped` (since the file was last read from its start)."""

    def __init__(self, path: Path, valid=None):
        super().__init__(path)
        self.valid = valid
        self.skipped = 0

    def read_records(self) -> list[dict]:
        records = []
        lines = self.read_lines()
        if self.reset:
            self.skipped = 0
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict) and (self.valid is None or self.valid(record)):
                records.append(record)
            elif line.strip():
                self.skipped += 1
        return records


# ---------------------------------------------------------------- bounded history


class Series:
    """(x, y) points capped at `cap`: when full, the older half is thinned to every other point,
    so recent steps keep full detail and days-old ones grow coarser, in bounded memory."""

    def __init__(self, cap: int = HISTORY_POINTS):
        self.cap = max(cap, 4)
        self.xs: list[float] = []
        self.ys: list[float] = []

    def append(self, x: float, y: float) -> None:
        self.xs.append(x)
        self.ys.append(y)
        if len(self.xs) > self.cap:
            half = len(self.xs) // 2
            self.xs = self.xs[:half:2] + self.xs[half:]
            self.ys = self.ys[:half:2] + self.ys[half:]

    def __len__(self) -> int:
        return len(self.xs)

    def copy(self) -> tuple[list[float], list[float]]:
        return list(self.xs), list(self.ys)


class Pace:
    """Tokens per second and the ETA, smoothed over train records: each record measures only its own
    interval, so one slow step (a checkpoint, another job) would swing a raw ETA from 18s to 1m30s
    and back. An exponential moving average moves a tenth of the way to each new record."""

    SMOOTHING = 0.1

    def __init__(self):
        self.tokens_per_s: float | None = None
        self.tokens_per_step: float | None = None
        self._last: tuple[float, float] | None = None  # (step, tokens) of the previous record

    def add(self, record: dict) -> None:
        rate, step, tokens = record.get("tokens_per_s"), record.get("step"), record.get("tokens")
        if _positive(rate):
            self.tokens_per_s = (
                rate
                if self.tokens_per_s is None
                else self.tokens_per_s + self.SMOOTHING * (rate - self.tokens_per_s)
            )
        if _positive(step) and isinstance(tokens, (int, float)):
            if self._last is not None and step > self._last[0]:
                self.tokens_per_step = (tokens - self._last[1]) / (step - self._last[0])
            self._last = (step, tokens)

    def eta_s(self, step, total_steps) -> float | None:
        if not (
            _positive(self.tokens_per_s)
            and _positive(self.tokens_per_step)
            and isinstance(step, (int, float))
            and isinstance(total_steps, (int, float))
        ):
            return None
        return max(total_steps - step, 0) * self.tokens_per_step / self.tokens_per_s


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0 and value != float("inf")


@dataclass
class RunHistory:
    """What the Train screen plots, built from metrics records."""

    cap: int = HISTORY_POINTS
    series: dict[str, Series] = field(default_factory=dict)
    latest_train: dict = field(default_factory=dict)
    latest_dev: dict = field(default_factory=dict)
    latest_eval: dict = field(default_factory=dict)
    pace: Pace = field(default_factory=Pace)

    def __post_init__(self):
        self.series = {name: Series(self.cap) for name in SERIES}

    def add(self, record: dict) -> None:
        event, step = record.get("event"), record.get("step")
        if step is None:
            return
        keys = {
            "train": ("loss", "masked_ce", "lr", "tokens_per_s"),
            "dev": ("dev_loss", "dev_masked_ce"),
        }.get(event, ())
        for key in keys:
            value = record.get(key)
            if isinstance(value, (int, float)):
                self.series[key].append(step, value)
        if event == "train":
            self.latest_train = record
            self.pace.add(record)
        elif event == "dev":
            self.latest_dev = record
        elif event == "eval":
            self.latest_eval = record

    def snapshot(self) -> dict[str, tuple[list[float], list[float]]]:
        return {name: s.copy() for name, s in self.series.items()}


def latest_eval_report(eval_dir: Path) -> dict:
    """The newest suite report in a run's eval/ folder, {} when there is none.

    Newest by modification time (an evaluation of an older checkpoint is still the latest result
    asked for), then by the step in the name, as files written together may share a time. Any *.json
    is read whatever else its name holds (suite, limit, backend); a dev report (no macro) and a file
    that is no report are passed over."""

    def newest(path: Path) -> tuple[float, int]:
        step = re.search(r"-step-(\d+)", path.name)
        return mtime_or_zero(path), int(step[1]) if step else -1

    try:
        paths = sorted(Path(eval_dir).glob("*.json"), key=newest, reverse=True)
    except OSError:
        return {}
    for path in paths:
        try:
            report = json.loads(path.read_bytes())
        except (OSError, ValueError):  # being written, or not JSON: anything may sit in a run folder
            continue
        if isinstance(report, dict) and isinstance(report.get("macro"), (int, float)):
            return {**report, "suite": str(report.get("suite") or path.stem)}
    return {}


def mtime_or_zero(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # deleted since it was listed
        return 0.0


def headless_line(record: dict, total_steps: int | None) -> str | None:
    """The line the headless trainer would have logged for a metrics record (used when no train.log)."""

    def value(key: str, default: float = float("nan")) -> float:  # a field may be absent or null
        found = record.get(key)
        return found if isinstance(found, (int, float)) else default

    step = record.get("step")
    when = time.strftime("%H:%M:%S", time.localtime(record["time"])) if record.get("time") else "--:--:--"
    event = record.get("event")
    if event == "train":
        total = f"/{total_steps}" if total_steps else ""
        return (
            f"[{when}] step {step}{total} | loss {value('loss'):.4f} | "
            f"masked CE {value('masked_ce'):.4f} | lr {value('lr', 0):.2e} | "
            f"{value('tokens_per_s', 0):,.0f} tok/s"
        )
    if event == "dev":
        return f"[{when}] step {step} | dev loss {value('dev_loss'):.4f}"
    if event == "eval":
        return f"[{when}] step {step} | eval {record.get('suite')}: {100 * value('macro', 0):.1f} % macro"
    return None


# ---------------------------------------------------------------- the watcher


def run_milestones(run_dir: Path) -> list[int]:
    """The word counts a run saves milestone checkpoints at (train.save_at_words); [] when it has none
    or its config.yaml cannot be read: only a readout depends on it."""
    from core.config import parse_milestones, read_yaml
    from core.errors import UserError

    try:
        train = read_yaml(run_dir / "config.yaml").get("train")
        return parse_milestones(train.get("save_at_words") if isinstance(train, dict) else None)
    except (UserError, OSError, AttributeError):
        return []


class RunUpdated(Message):
    """Everything new about a run since the last message (coalesced)."""

    def __init__(
        self,
        run_dir: Path,
        status: dict,
        history: dict,
        latest_train: dict,
        latest_dev: dict,
        latest_eval: dict,
        new_records: list[dict],
        new_samples: list[dict],
        log_lines: list[str],
        log_reset: bool,
        from_log_file: bool,
        metrics_changed: bool = True,
        problems: list[str] | None = None,
        latest_report: dict | None = None,
        tokens_per_s: float | None = None,
        eta_s: float | None = None,
        milestones: list[int] | None = None,
    ):
        super().__init__()
        self.run_dir = run_dir
        self.status = status
        self.history = history
        self.latest_train = latest_train
        self.latest_dev = latest_dev
        self.latest_eval = latest_eval
        self.new_records = new_records
        self.new_samples = new_samples
        self.log_lines = log_lines
        self.log_reset = log_reset  # the log (or metrics) started over: drop the lines shown so far
        self.from_log_file = from_log_file
        self.metrics_changed = metrics_changed  # the curves need redrawing
        self.problems = problems or []  # what could not be read and was skipped, one sentence each
        self.latest_report = latest_report or {}  # the newest saved suite report (latest_eval_report)
        self.tokens_per_s = tokens_per_s  # smoothed (Pace)
        self.eta_s = eta_s  # from the smoothed pace
        self.milestones = milestones or []  # train.save_at_words as word counts, ascending


class RunWatcher:
    """A daemon thread polling one run folder and posting `RunUpdated` to `target`.

    `target` is any Textual message pump (a screen or widget); `post_message` is thread-safe.
    At least one message goes out every `heartbeat_every` seconds even when nothing changed, so
    the screen can notice a heartbeat going stale.
    """

    MAX_RECORDS_PER_MESSAGE = (
        1000  # new_records is for listeners that want raw events; the history has it all
    )

    def __init__(
        self,
        run_dir: Path,
        target,
        interval: float = 0.25,
        heartbeat_every: float = 2.0,
        history_points: int = HISTORY_POINTS,
    ):
        self.run = RunDir(run_dir)
        self.target = target
        self.interval = interval
        self.heartbeat_every = heartbeat_every
        self.history = RunHistory(cap=history_points)
        self._metrics = JsonlTail(self.run.metrics_path, valid=valid_metrics_record)
        self._samples = JsonlTail(self.run.samples_path)
        self._log = FileTail(self.run.path / "train.log", start_at_end_bytes=256 * 1024)
        self._status_mtime: int | None = None
        self._status: dict = {}
        self._status_problems: list[str] = []
        self._eval_mtime: int | None = None  # eval/ changes its mtime when a report lands (written by rename)
        self._report: dict = {}
        self._config_mtime: int | None = None
        self._milestones: list[int] = []
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"watch {self.run.path.name}", daemon=True)

    def start(self) -> "RunWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def poll(self) -> RunUpdated | None:
        """One round of reading; the message to post, or None when nothing changed."""
        changed = False
        try:
            mtime = os.stat(self.run.status_path).st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime != self._status_mtime:
            self._status_problems = []
            self._status_mtime, changed = mtime, True
            self._status = self.run.read_status(self._status_problems)

        records = self._metrics.read_records()
        reset = self._metrics.reset
        if reset:
            self.history = RunHistory(cap=self.history.cap)
        for record in records:
            self.history.add(record)

        try:
            eval_mtime = os.stat(self.run.eval_dir).st_mtime_ns
        except OSError:
            eval_mtime = None
        if eval_mtime != self._eval_mtime:
            self._eval_mtime, changed = eval_mtime, True
            self._report = latest_eval_report(self.run.eval_dir)

        try:
            config_mtime = os.stat(self.run.path / "config.yaml").st_mtime_ns
        except OSError:
            config_mtime = None
        if config_mtime != self._config_mtime:  # a resume may rewrite it with other milestones
            self._config_mtime, changed = config_mtime, True
            self._milestones = run_milestones(self.run.path)

        samples = self._samples.read_records()
        log_lines = self._log.read_lines()
        from_log_file = self._log.identity is not None
        log_reset = self._log.reset or (reset and not from_log_file)
        if not from_log_file:
            total = self._status.get("total_steps")
            log_lines = [line for r in records if (line := headless_line(r, total))]
        log_lines = log_lines[-LOG_TAIL_LINES:]
        changed = changed or bool(records or samples or log_lines or reset or self._log.reset)
        if not changed:
            return None
        metrics_changed = bool(records) or reset
        history = self.history.snapshot() if metrics_changed else {}  # copied only when the curves change
        return RunUpdated(
            self.run.path,
            dict(self._status),
            history,
            self.history.latest_train,
            self.history.latest_dev,
            self.history.latest_eval,
            records[-self.MAX_RECORDS_PER_MESSAGE :],
            samples[-self.MAX_RECORDS_PER_MESSAGE :],
            log_lines,
            log_reset,
            from_log_file,
            metrics_changed=metrics_changed,
            problems=self.problems(),
            **self._latest(),
        )

    def _latest(self) -> dict:
        """The newest report and the smoothed pace, for every message."""
        pace, status = self.history.pace, self._status
        step = status.get("step", self.history.latest_train.get("step"))
        return {
            "latest_report": self._report,
            "tokens_per_s": pace.tokens_per_s,
            "eta_s": pace.eta_s(step, status.get("total_steps")),
            "milestones": self._milestones,
        }

    def problems(self) -> list[str]:
        """What this watcher could not read so far, one sentence each."""
        found = list(self._status_problems)
        for tail in (self._metrics, self._samples):
            if tail.skipped:
                lines = "lines" if tail.skipped > 1 else "line"
                found.append(f"{tail.skipped} unreadable {lines} skipped in {tail.path.name}")
        if self.last_error:
            found.append(f"reading the run failed: {self.last_error}")
        return found

    def _loop(self) -> None:
        last_post = 0.0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                message = self.poll()
                self.last_error = None
            except Exception as e:  # a file vanishing mid-read (a deleted run): keep watching, and say so
                self.last_error = f"{type(e).__name__}: {e}"
                message = None
            if message is None and started - last_post >= self.heartbeat_every:
                message = self._unchanged_message()
            if message is not None and not self._stop.is_set():
                self.target.post_message(message)
                last_post = started
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def _unchanged_message(self) -> RunUpdated:
        """Nothing new, but time passed: lets the screen re-judge the heartbeat (stale or not)."""
        return RunUpdated(
            self.run.path,
            dict(self._status),
            {},
            self.history.latest_train,
            self.history.latest_dev,
            self.history.latest_eval,
            [],
            [],
            [],
            False,
            self._log.identity is not None,
            metrics_changed=False,
            problems=self.problems(),
            **self._latest(),
        )
