"""The run directory: the interface between a training process and anything that watches it.

    config.yaml     resolved config, written first
    status.json     state, pid, step, heartbeat; replaced atomically
    metrics.jsonl   one JSON object a line, appended and flushed
    samples.jsonl   unmasking traces
    eval/           evaluation reports
    checkpoints/    step-N/ folders and a `latest` pointer
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

STATES = ("starting", "running", "paused", "stopping", "stopped", "finished", "failed")
ACTIVE_STATES = ("starting", "running", "paused", "stopping")


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file, fsync, rename: readers see the old or the new file, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    """Complete JSON lines of a file; a torn last line (a crash mid-write) is ignored."""
    records = []
    try:
        with open(path) as f:
            for line in f:
                if not line.endswith("\n"):
                    break
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return records


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

    def read_status(self) -> dict:
        try:
            return json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

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

    def live_pid(self, stale_after_s: float = 30.0) -> int | None:
        """The pid of a trainer still working on this run: its status says so, the process exists
        and its heartbeat is fresh; None for a finished, failed or crashed run."""
        status = self.read_status()
        pid = status.get("pid")
        if status.get("state") not in ACTIVE_STATES or not pid or status.get("host") != socket.gethostname():
            return None
        if time.time() - status.get("heartbeat", 0) > stale_after_s:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # alive, owned by someone else
            pass
        return pid

    def start_heartbeat(self, every_s: float = 5.0) -> threading.Event:
        """Refresh the heartbeat from a daemon thread, so a long step or eval never looks stale."""
        stop = threading.Event()

        def beat():
            while not stop.wait(every_s):
                self.update_status()

        threading.Thread(target=beat, name="heartbeat", daemon=True).start()
        return stop

    # ------------------------------------------------------------ metrics

    def append_metrics(self, record: dict) -> None:
        if self._metrics_file is None:
            self._metrics_file = open(self.metrics_path, "a")
        self._metrics_file.write(json.dumps(record) + "\n")
        self._metrics_file.flush()

    def read_metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_path)

    def truncate_after(self, last_step: int) -> int:
        """Drop metric and sample records past `last_step` (written after the checkpoint a run resumes
        from), so no step is missing or repeated; returns how many metric records went."""
        dropped = 0
        for path in (self.metrics_path, self.samples_path):
            if not path.exists():
                continue
            records = read_jsonl(path)
            kept = [r for r in records if r.get("step", 0) <= last_step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))  # also drops a torn last line
            if path == self.metrics_path:
                dropped = len(records) - len(kept)
        return dropped

    def close(self) -> None:
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None
