"""Unmasking traces a run folder holds: the lines of samples.jsonl (written while training) and
trace files (`mdlm-tui sample --trace`, or the Samples screen's own under <run>/traces/).

Plain JSON; no torch, so the list fills at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.runs import read_jsonl

# core.sampling.MASK_TEXT, repeated here because importing core.sampling imports torch.
MASK_TEXT = "[MASK]"
TRACES_FOLDER = "traces"


@dataclass
class TraceEntry:
    label: str
    steps: list[dict]  # {"step", "t", "masked", "text"} per unmasking step, step 0 first
    source: Path
    final_text: str = ""


def _steps(records: list) -> list[dict]:
    return [r for r in records if isinstance(r, dict) and "text" in r and "masked" in r and not r.get("final")]


def read_samples(run: Path) -> list[TraceEntry]:
    """One entry per samples.jsonl line that carries a trace, labelled by its training step."""
    path = Path(run) / "samples.jsonl"
    entries = []
    for number, record in enumerate(read_jsonl(path), 1):
        steps = _steps(record.get("trace") or []) if isinstance(record, dict) else []
        if steps:
            label = f"step {record['step']}" if "step" in record else f"sample {number}"
            entries.append(TraceEntry(label, steps, path, str(record.get("text", steps[-1]["text"]))))
    return entries


def read_trace_file(path: Path) -> TraceEntry | None:
    """A `--trace` file: one JSON object per step, then {"final": true, ...}; None if it holds no steps."""
    records = read_jsonl(path)
    steps = _steps(records)
    if not steps:
        return None
    final = next((r for r in records if isinstance(r, dict) and r.get("final")), {})
    return TraceEntry(path.stem, steps, path, str(final.get("text", steps[-1]["text"])))


def trace_files(run: Path) -> list[Path]:
    """Trace files in the run folder or its traces/ folder, oldest first."""
    run = Path(run)
    known = {"metrics.jsonl", "samples.jsonl"}
    found = [p for p in run.glob("*.jsonl") if p.name not in known] + list((run / TRACES_FOLDER).glob("*.jsonl"))
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def read_run_traces(run: Path) -> list[TraceEntry]:
    entries = read_samples(run)
    for path in trace_files(run):
        try:
            entry = read_trace_file(path)
        except (OSError, json.JSONDecodeError):
            entry = None
        if entry is not None:
            entries.append(entry)
    return entries
