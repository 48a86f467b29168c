"""`mdlm-tui compare`: runs side by side, against a baseline, with bootstrap intervals; as tables, JSON
and plots. Every destination is checked before anything is computed, so a refusal writes nothing."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional

import typer

from core.errors import UserError


def compare(
    targets: List[Path] = typer.Argument(
        ..., help="Run folders and sweep folders (a sweep's runs form a group).", show_default=False
    ),
    baseline: Optional[str] = typer.Option(
        None,
        "--baseline",
        help="The run the others are measured against: a name or folder (default: the first).",
    ),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write every number to this file."),
    plots: Optional[Path] = typer.Option(
        None, "--plots", help="Write the loss, dev loss and eval curves as PNG and SVG into this folder."
    ),
    fields: bool = typer.Option(False, "--fields", help="Also show each suite's fields, run by run."),
    x: str = typer.Option("step", "--x", help="step | tokens | words | time: the x axis of the loss curves."),
    curves: bool = typer.Option(
        False, "--curves", help="Draw the loss curves here even when the output is not a terminal."
    ),
    resamples: int = typer.Option(1000, "--resamples", help="Bootstrap resamples for each interval."),
    seed: int = typer.Option(0, "--seed", help="The bootstrap's seed: the same seed, the same intervals."),
):
    """Compare runs: final dev loss and each suite's macro with a 95 % bootstrap interval, each run
    against the baseline, optionally per field, as JSON and as plots."""
    from core.compare import X_AXES, compare_runs, load_runs, to_json, with_baseline
    from core.compare import curves as curves_of

    if x not in X_AXES:
        raise UserError(f"--x must be one of {', '.join(X_AXES)}, got '{x}'.")
    if resamples < 1:
        raise UserError(f"--resamples must be at least 1, got {resamples}.")
    check_json_destination(json_out)
    check_plots_destination(plots)
    terminal = sys.stdout.isatty()
    notes: list[str] = []
    runs = load_runs(targets, notes)
    runs, baseline = with_baseline(runs, baseline, notes)
    comparison = compare_runs(runs, baseline, fields, resamples=resamples, seed=seed, notes=notes)
    drawn = curves_of(comparison, x) if plots is not None or terminal or curves else {}

    from mdlm_tui.compare.table import print_comparison

    width = None if terminal else 120
    print_comparison(comparison, fields, width)
    if drawn.get("loss") and (terminal or curves):
        from mdlm_tui.compare.plots import terminal_curves

        print(terminal_curves(drawn, x, shutil.get_terminal_size().columns if terminal else 120, terminal))
    for note in comparison.notes:
        print(f"note: {note}", file=sys.stderr)
    if json_out is not None:
        from core.runs import atomic_write_text

        try:
            atomic_write_text(json_out, json.dumps(to_json(comparison), indent=2) + "\n")
        except OSError as e:
            raise UserError(f"Cannot write {json_out}: {e.strerror or e}.") from None
        print(f"json: {json_out}", file=sys.stderr)
    if plots is not None:
        from mdlm_tui.compare.plots import write_plots
        from mdlm_tui.eval.metrics import METRICS

        labels = {
            suite: METRICS[score.metric][0]
            for scores in comparison.scores.values()
            for suite, score in scores.items()
            if score.metric in METRICS and score.metric != "accuracy"
        }
        try:
            plots.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"Cannot make the folder {plots}: {e.strerror or e}.") from None
        written = write_plots(drawn, plots, x, labels)
        print(f"plots: {len(written)} files in {plots}", file=sys.stderr)


def check_json_destination(path: Path | None) -> None:
    if path is None:
        return
    if path.is_dir():
        raise UserError(f"--json {path} is a folder; give a file to write, such as {path / 'compare.json'}.")
    _check_writable("--json", path, path.parent)


def check_plots_destination(folder: Path | None) -> None:
    """The folder exists and takes files, or can be made; matplotlib is there to draw."""
    if folder is None:
        return
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--plots {folder} is a file; give a folder to write the plots into.")
    nearest = folder
    while not nearest.exists():  # the folder to be made, and any above it: the nearest that exists takes them
        nearest = nearest.parent
    _check_writable("--plots", folder, nearest)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("--plots needs matplotlib; install it with `pip install matplotlib`.") from None


def _check_writable(option: str, path: Path, folder: Path) -> None:
    if not folder.exists():
        raise UserError(f"Cannot write {option} {path}: the folder {folder} does not exist.")
    if not folder.is_dir():
        raise UserError(f"Cannot write {option} {path}: {folder} is not a folder.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"Cannot write {option} {path}: {folder} is not writable.")
