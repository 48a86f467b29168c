"""Starting a training run from the TUI: the same `mdlm-tui run` a person would type, as its own process.

Training never runs inside the TUI. The child gets its own session (so closing the terminal or
pressing Ctrl+C in the TUI never reaches it) and writes its log to <run>/train.log; the TUI follows
the run folder like any other watcher. Nothing here imports torch.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from core.errors import UserError
from core.runs import RunDir, step_dirs

# A new override starts where whitespace is followed by `key=` or `section.key=`, so a value with
# spaces ("train.budget=20 steps") stays whole while "a.b=1 c.d=2" splits in two.
_OVERRIDE_START = re.compile(r"\s+(?=[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)?=)")
# The CLI spelling is accepted too, so a line copied from a shell works: --set k=v -s k=v
_SET_FLAG = re.compile(r"(?:^|\s)(?:--set|-s)(?:\s+|=)")


def parse_extra_overrides(text: str) -> list[str]:
    """'--set train.budget=20 steps; model.num_layers=3 train.lr=1e-3' -> three key=value overrides."""
    pieces = []
    for chunk in re.split(r";|\n", _SET_FLAG.sub(" ; ", f" {text}")):
        pieces += [part.strip() for part in _OVERRIDE_START.split(chunk.strip())]
    return [piece for piece in pieces if piece]


def validate_overrides(preset: str, overrides: list[str]) -> str | None:
    """The sentence `mdlm-tui run --preset PRESET --set ...` would fail with, or None when it would start.

    Beyond the config itself this checks that data.path exists, because the CLI would otherwise
    only say so after the run folder was created."""
    from core.config import load_config

    try:
        cfg = load_config(preset, list(overrides))
        if cfg.data.source == "auto" and cfg.data.path:
            from core.corpus import detect_source

            detect_source(cfg.data.path)
    except UserError as e:
        return str(e)
    return None


# A run's folder name as a person types it: no path separators, no hidden or relative names.
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def preset_stem(preset: str) -> str:
    return Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset


def run_name_error(runs_root: Path, name: str) -> str | None:
    """Why `name` cannot be a new run's folder under runs_root, or None (an empty name picks the default)."""
    name = name.strip()
    if not name:
        return None
    if not _RUN_NAME.fullmatch(name):
        return (
            f"Run name '{name}' is not a simple folder name: use up to 100 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit."
        )
    folder = Path(runs_root) / name
    if folder.exists() and not ended_before_a_checkpoint(folder):
        return f"A run named '{name}' already exists in {runs_root}; choose another name."
    return None


def ended_before_a_checkpoint(folder: Path) -> bool:
    """A run whose trainer ended before its first checkpoint (a bad path, a kill in the first steps):
    `mdlm-tui run` starts it afresh in place, so its name may be given again."""
    run = RunDir(folder)
    return (
        run.is_run()
        and run.read_status().get("state") is not None
        and run.live_pid() is None
        and not step_dirs(run.checkpoints_dir)  # as the trainer decides to start afresh
    )


def new_run_dir(runs_root: Path, preset: str, name: str = "") -> Path:
    """runs_root/name when named, else runs_root/<preset>-<YYYYmmdd-HHMMSS>, with -2, -3 ... when two
    runs start in the same second."""
    if name.strip():
        return Path(runs_root) / name.strip()
    base = Path(runs_root) / f"{preset_stem(preset)}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 2
    while candidate.exists():
        candidate, n = base.with_name(f"{base.name}-{n}"), n + 1
    return candidate


def processes_error(text: str) -> str | None:
    """Why `text` cannot be the processes per node (Configure's devices field), or None; empty means 1."""
    text = text.strip()
    if text and not (text.isascii() and text.isdigit() and int(text) >= 1):
        return f"devices must be a whole number of processes, 1 or more; got '{text}'."
    return None


def run_command(preset: str, overrides: list[str], run_dir: Path, nproc: int = 1) -> list[str]:
    sets = [arg for override in overrides for arg in ("--set", override)]
    # one process is an ordinary run: the flag appears only when the elastic launcher is wanted
    workers = ["--nproc-per-node", str(nproc)] if nproc > 1 else []
    return [
        sys.executable,
        "-m",
        "mdlm_tui",
        "run",
        "--preset",
        preset,
        *sets,
        *workers,
        "--run-dir",
        str(run_dir),
    ]


def spawn_run(preset: str, overrides: list[str], run_dir: Path, nproc: int = 1) -> subprocess.Popen:
    """Start `mdlm-tui run` (with nproc workers) detached from the TUI, logging to run_dir/train.log."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "train.log", "ab") as log:
        # The child keeps its own copy of the log descriptor; ours closes when this block ends.
        process = subprocess.Popen(
            run_command(preset, overrides, run_dir, nproc),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    # Reap the child when it ends, so a long TUI session leaves no zombie behind; the run's outcome
    # is read from its status.json like any other run's.
    threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()
    return process
