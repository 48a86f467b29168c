"""Unmasking traces a run folder holds: the lines of samples.jsonl (written while training) and
trace files (`mdlm-tui sample --trace`, or the Samples screen's own under <run>/traces/).

Plain JSON; no torch, so the list fills at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.runs import is_number, read_jsonl

# core.sampling.MASK_TEXT, repeated here because importing core.sampling imports torch.
MASK_TEXT = "[MASK]"
TRACES_FOLDER = "traces"


@dataclass
class TraceEntry:
    label: str
    steps: list[dict]  # {"step", "t", "masked", "text"} per unmasking step, step 0 first
    source: Path
    final_text: str = ""


def _steps(records: list) -> tuple[list[dict], int]:
    """The unmasking steps among `records`, and how many were left out because the replay could not
    draw them (a text or a t of another type: the file may have been written by anyone)."""
    steps = [
        r for r in records if isinstance(r, dict) and "text" in r and "masked" in r and not r.get("final")
    ]
    good = [r for r in steps if isinstance(r["text"], str) and is_number(r.get("t", 0.0))]
    return good, len(steps) - len(good)


def _note_bad_steps(problems: list[str] | None, bad: int, path: Path) -> None:
    if bad and problems is not None:
        problems.append(f"{bad} unreadable trace step{'s' if bad > 1 else ''} skipped in {path.name}")


def read_samples(run: Path, problems: list[str] | None = None) -> list[TraceEntry]:
    """One entry per samples.jsonl line that carries a trace, labelled by its training step."""
    path = Path(run) / "samples.jsonl"
    entries, bad = [], 0
    for number, record in enumerate(read_jsonl(path, problems), 1):
        trace = record.get("trace")
        steps, left_out = _steps(trace if isinstance(trace, list) else [])
        bad += left_out
        if steps:
            label = f"step {record['step']}" if "step" in record else f"sample {number}"
            entries.append(TraceEntry(label, steps, path, str(record.get("text", steps[-1]["text"]))))
    _note_bad_steps(problems, bad, path)
    return entries


def read_trace_file(path: Path, problems: list[str] | None = None) -> TraceEntry | None:
    """A `--trace` file: one JSON object per step, then {"final": true, ...}; None if it holds no steps."""
    records = read_jsonl(path, problems)
    steps, bad = _steps(records)
    _note_bad_steps(problems, bad, path)
    if not steps:
        return None
    final = next((r for r in records if r.get("final")), {})
    return TraceEntry(path.stem, steps, path, str(final.get("text", steps[-1]["text"])))


def trace_files(run: Path) -> list[Path]:
    """Trace files in the run folder or its traces/ folder, oldest first."""
    run = Path(run)
    known = {"metrics.jsonl", "samples.jsonl"}
    found = [p for p in run.glob("*.jsonl") if p.name not in known] + list(
        (run / TRACES_FOLDER).glob("*.jsonl")
    )
    return sorted(found, key=lambda p: (_mtime(p), p.name))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # deleted since it was listed
        return 0.0


def read_run_traces(run: Path, problems: list[str] | None = None) -> list[TraceEntry]:
    """Every trace of the run; what could not be read is skipped, with a sentence in `problems`."""
    entries = read_samples(run, problems)
    for path in trace_files(run):
        entry = read_trace_file(path, problems)
        if entry is not None:
            entries.append(entry)
    return entries
