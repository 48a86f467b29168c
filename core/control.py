"""Commands to a running trainer through its run folder: stop, pause, resume, checkpoint.

A watcher (the TUI, or `mdlm-tui` on another SSH session) writes control.json atomically; the
trainer looks at it once a step (one stat call) and acts on a command it has not seen before.
Stop could also be SIGTERM, but a file works across users, containers and hosts sharing a disk.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from core.errors import UserError
from core.runs import atomic_write_json

COMMANDS = ("stop", "pause", "resume", "checkpoint")


def send(run_dir: Path, command: str) -> None:
    if command not in COMMANDS:
        raise UserError(f"Unknown control command '{command}'; use one of {', '.join(COMMANDS)}.")
    atomic_write_json(Path(run_dir) / "control.json", {"command": command, "id": time.time_ns()})


class ControlReader:
    def __init__(self, run_dir: Path, since_ns: int | None = None):
        """Commands sent before since_ns (default: now) were meant for an earlier process; the trainer
        passes its own start time, so a stop sent while it prepares data is obeyed, not dropped."""
        self.path = Path(run_dir) / "control.json"
        self.since = time.time_ns() if since_ns is None else since_ns
        self.seen = None
        self._mtime = None

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    def _read(self) -> dict:
        try:
            message = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        return message if isinstance(message, dict) else {}

    def poll(self) -> str | None:
        """The newest unseen command, or None; cheap when nothing changed."""
        mtime = self._stat()
        if mtime == self._mtime:
            return None
        self._mtime = mtime
        message = self._read()
        sent = message.get("id")
        if not isinstance(sent, int) or sent < self.since or sent == self.seen:
            return None
        if message.get("command") not in COMMANDS:
            return None
        self.seen = message["id"]
        return message["command"]
