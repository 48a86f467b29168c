"""The run directory: the interface between a training process and anything that watches it.

    config.yaml     resolved config, written first
    status.json     state, pid, step, heartbeat; replaced atomically
    metrics.jsonl   one JSON object a line, appended and flushed
    samples.jsonl   unmasking traces
    eval/           evaluation reports
    checkpoints/    step-N/ folders and a `latest` pointer

A deleted run is moved, not erased: to <runs root>/.trash/<name>-<time>, whence restore_run brings it back.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

from core.config import MILESTONE_PREFIX, milestone_words
from core.errors import UserError

STEP_NAME = re.compile(r"step-(\d+)")  # checkpoints/step-N


def step_dirs(root: Path) -> list[Path]:
    """Checkpoint folders step-N under `root` (whole or not), oldest first. Here, with no torch, so the
    TUI lists what the trainer and core.checkpoint list."""
    found = [d for d in Path(root).glob("step-*") if STEP_NAME.fullmatch(d.name) and d.is_dir()]
    return sorted(found, key=lambda d: int(d.name[5:]))


def milestone_dirs(root: Path) -> list[Path]:
    """Milestone checkpoint folders chck_<words> under `root` (train.save_at_words), fewest words first
    (chck_2M before chck_10M); a chck_* folder whose name reads as no word count is not one. Torch-free,
    for the exporter and the TUI's pickers alike."""
    found = [
        d
        for d in Path(root).glob(f"{MILESTONE_PREFIX}*")
        if d.is_dir() and milestone_words(d.name) is not None
    ]
    return sorted(found, key=lambda d: milestone_words(d.name))


STATES = ("starting", "running", "paused", "stopping", "stopped", "finished", "failed")
ACTIVE_STATES = ("starting", "running", "paused", "stopping")
IMPORTED_MARKER = "imported.json"  # in a run made by `mdlm-tui import`: weights only, nothing to resume


STALE_AFTER_S = 30.0  # a heartbeat older than this means its trainer is gone


def run_health(status: dict, now: float | None = None) -> str:
    """The one answer to "is the trainer alive": status.json's state, or "stale" for an active state
    whose trainer is gone (heartbeat older than STALE_AFTER_S, or its pid missing on this host). A
    trainer on another host sharing the disk is judged by its heartbeat alone."""
    state = status.get("state") or "unknown"
    if state not in ACTIVE_STATES:
        return state
    now = time.time() if now is None else now
    # A heartbeat from the future is as untrustworthy as an old one: a hand-edited or garbled
    # status.json must not make a run look alive forever.
    if abs(now - float(status.get("heartbeat") or 0)) > STALE_AFTER_S:
        return "stale"
    pid = status.get("pid")
    if status.get("host") == socket.gethostname():
        if not pid:
            return "stale"
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return "stale"
        except PermissionError:  # alive, owned by another user
            pass
    return state


def trainer_alive(status: dict) -> bool:
    """A trainer is working on the run (here or on another host sharing the disk)."""
    return run_health(status) in ACTIVE_STATES


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file, fsync, rename: readers see the old or the new file, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not also collect half-written files
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_jsonl(path: Path, problems: list[str] | None = None, valid=None) -> list[dict]:
    """The JSON objects of a file's complete lines; a torn last line (a crash mid-write) is ignored.

    Anything may have written the file: a line that is not a UTF-8 JSON object (or that `valid`
    refuses) is skipped, and `problems`, when given, gets one sentence saying how many were."""
    records, skipped = [], 0
    try:
        with open(path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                if not line.strip():
                    continue
                try:
                    record = json.loads(line.decode("utf-8"))
                except ValueError:  # not UTF-8, not JSON
                    record = None
                if isinstance(record, dict) and (valid is None or valid(record)):
                    records.append(record)
                else:
                    skipped += 1
    except FileNotFoundError:
        pass
    except OSError as e:
        _note(problems, f"cannot read {Path(path).name}: {e.strerror or e}")
    if skipped:
        _note(problems, f"{skipped} unreadable line{'s' if skipped > 1 else ''} skipped in {Path(path).name}")
    return records


def _note(problems: list[str] | None, sentence: str) -> None:
    if problems is not None:
        problems.append(sentence)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # JSON true is no number here


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _finite(value) -> bool:
    return is_number(value) and math.isfinite(value)


def _text(value) -> bool:
    return isinstance(value, str)


# What a reader of status.json relies on, field by field: a value failing its check is dropped, so
# arithmetic on a heartbeat or os.kill on a pid never meets a string (or a pid no system has).
STATUS_CHECKS = {
    "state": _text,
    "host": _text,
    "error": _text,
    "message": _text,
    "checkpoint": _text,
    "pid": lambda v: _count(v) and 0 < v < 2**31,
    "step": _count,
    "total_steps": _count,
    "tokens": _count,
    "words": _count,
    "heartbeat": _finite,
    **{key: is_number for key in ("loss", "dev_loss", "eta_s", "elapsed_s")},
}

# The same for a metrics record, except that a record failing any check is skipped whole: its step
# would otherwise be plotted against text, or its time formatted as a date that does not exist.
METRICS_CHECKS = {
    "step": _count,
    "event": _text,
    "suite": _text,
    "time": _finite,
    "words": _count,
    **{
        key: is_number
        for key in (
            "tokens",
            "epoch",
            "loss",
            "masked_ce",
            "lr",
            "grad_norm",
            "tokens_per_s",
            "mask_rate",
            "dev_loss",
            "dev_masked_ce",
            "macro",
        )
    },
    "sys": lambda v: isinstance(v, dict),
    "per_uid": lambda v: isinstance(v, dict),
}


def valid_metrics_record(record) -> bool:
    """A metrics.jsonl record whose known fields have the types a reader relies on (None = absent)."""
    return isinstance(record, dict) and all(
        check(record[key]) for key, check in METRICS_CHECKS.items() if record.get(key) is not None
    )


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / "config.yaml"
        self.status_path = self.path / "status.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.samples_path = self.path / "samples.jsonl"
        self.eval_dir = self.path / "eval"
        self.checkpoints_dir = self.path / "checkpoints"
        self._status: dict = {}
        self._lock = threading.Lock()
        self._metrics_file = None

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def create(self, config_yaml: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints_dir.mkdir(exist_ok=True)
        self.eval_dir.mkdir(exist_ok=True)
        atomic_write_text(self.config_path, config_yaml)

    # ------------------------------------------------------------ status

    def read_status(self, problems: list[str] | None = None) -> dict:
        """status.json as a dict whose known fields have sane types (see STATUS_CHECKS); {} when the
        file is missing or unreadable. Never raises: `problems`, when given, gets what was wrong."""
        try:
            status = json.loads(self.status_path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:  # unreadable, not UTF-8, not JSON
            _note(problems, f"status.json is unreadable ({type(e).__name__})")
            return {}
        if not isinstance(status, dict):
            _note(problems, "status.json is not a JSON object")
            return {}
        bad = [
            key
            for key, check in STATUS_CHECKS.items()
            if status.get(key) is not None and not check(status[key])
        ]
        if bad:
            _note(problems, f"status.json: {', '.join(bad)} ignored (wrong type)")
        return {
            key: value
            for key, value in status.items()
            if key not in STATUS_CHECKS or (value is not None and key not in bad)
        }

    def update_status(self, **fields) -> dict:
        """Merge fields into status.json and stamp the heartbeat."""
        with self._lock:
            if not self._status:
                self._status = self.read_status()
                self._status.update(pid=os.getpid(), host=socket.gethostname())
            self._status.update(fields)
            self._status["heartbeat"] = time.time()
            atomic_write_json(self.status_path, self._status)
            return dict(self._status)

    def replace_status(self, status: dict) -> None:
        """Write status.json back as it was read (a refused resume leaves no trace in it)."""
        with self._lock:
            self._status = dict(status)
            atomic_write_json(self.status_path, self._status)

    def live_pid(self) -> int | None:
        """The pid of a trainer still working on this run on this host; None for a finished, failed or
        crashed run, or one trained on another host."""
        status = self.read_status()
        if status.get("host") != socket.gethostname() or not trainer_alive(status):
            return None
        return status.get("pid")

    def start_heartbeat(self, every_s: float = 5.0) -> threading.Event:
        """Refresh the heartbeat from a daemon thread, so a long step or eval never looks stale."""
        stop = threading.Event()

        def beat():
            while not stop.wait(every_s):
                try:
                    self.update_status()
                except OSError:  # the folder went read-only or away; the trainer reports it on its next write
                    pass

        threading.Thread(target=beat, name="heartbeat", daemon=True).start()
        return stop

    # ------------------------------------------------------------ metrics

    def append_metrics(self, record: dict) -> None:
        if self._metrics_file is None:
            self._metrics_file = open(self.metrics_path, "a")
        self._metrics_file.write(json.dumps(record) + "\n")
        self._metrics_file.flush()

    def read_metrics(self, problems: list[str] | None = None) -> list[dict]:
        """The records of metrics.jsonl that pass valid_metrics_record; the rest are skipped and counted."""
        return read_jsonl(self.metrics_path, problems, valid_metrics_record)

    def truncate_after(self, last_step: int) -> int:
        """Drop metric and sample records past `last_step` (written after the checkpoint a run resumes
        from), so no step is missing or repeated; returns how many metric records went."""
        dropped = 0
        for path in (self.metrics_path, self.samples_path):
            if not path.exists():
                continue
            records = read_jsonl(path)
            # a record whose step is no number is not ours to judge: it stays where it was
            kept = [r for r in records if not is_number(r.get("step", 0)) or r.get("step", 0) <= last_step]
            atomic_write_text(
                path, "".join(json.dumps(r) + "\n" for r in kept)
            )  # also drops a torn last line
            if path == self.metrics_path:
                dropped = len(records) - len(kept)
        return dropped

    def close(self) -> None:
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None

    def clear(self) -> None:
        """Empty a run folder that holds no checkpoint, so that it can start afresh: its records
        describe a run that can never be continued."""
        self.close()
        self._status = {}
        for path in (
            self.config_path,
            self.status_path,
            self.metrics_path,
            self.samples_path,
            self.path / "control.json",
            self.path / "config-history.jsonl",
        ):
            path.unlink(missing_ok=True)
        for folder in (self.eval_dir, self.checkpoints_dir):
            shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- trash

TRASH_FOLDER = ".trash"  # under the runs root: a dot folder, so nothing that lists runs shows it
_TRASH_SUFFIX = re.compile(r"-\d{8}-\d{6}(-\d+)?$")  # what trash_run adds to a run's name


def trash_run(path: str | Path) -> Path:
    """Move a run folder to <its parent>/.trash/<name>-<time> and return the new path. A rename on
    the same disk: instant, and the run stays whole for restore_run."""
    path = Path(path)
    trash = path.parent / TRASH_FOLDER
    trash.mkdir(exist_ok=True)
    target = trash / f"{path.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    count = 1
    while target.exists():  # the same name deleted twice within a second
        count += 1
        target = target.with_name(f"{path.name}-{time.strftime('%Y%m%d-%H%M%S')}-{count}")
    os.rename(path, target)
    return target


def trashed_runs(root: str | Path) -> list[Path]:
    """The runs in root's trash, most recently deleted first."""
    trash = Path(root) / TRASH_FOLDER
    found = [p for p in trash.iterdir() if p.is_dir()] if trash.is_dir() else []
    return sorted(found, key=lambda p: (p.stat().st_ctime, p.name), reverse=True)


def original_name(trashed: Path) -> str:
    return _TRASH_SUFFIX.sub("", Path(trashed).name)


def restore_run(trashed: str | Path) -> Path:
    """Move a trashed run back under its runs root with its own name; never over another run."""
    trashed = Path(trashed)
    target = trashed.parent.parent / original_name(trashed)
    if target.exists():
        raise UserError(
            f"{target} already exists; rename or move it first, then restore {trashed.name} again."
        )
    os.rename(trashed, target)
    return target
