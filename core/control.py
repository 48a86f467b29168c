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
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "control.json"
        self.seen = self._read().get("id")  # a command left from an earlier process is not for us
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def poll(self) -> str | None:
        """The newest unseen command, or None; cheap when nothing changed."""
        mtime = self._stat()
        if mtime == self._mtime:
            return None
        self._mtime = mtime
        message = self._read()
        if message.get("id") is None or message.get("id") == self.seen or message.get("command") not in COMMANDS:
            return None
        self.seen = message["id"]
        return message["command"]
