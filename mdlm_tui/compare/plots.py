"""The comparison's curves: PNG and SVG files drawn with matplotlib, and the loss curves in the terminal
with plotext. matplotlib is imported only here, only when files are asked for; its Figure is used
without pyplot, so no global backend is chosen for anyone else."""

from __future__ import annotations

import itertools
from pathlib import Path

from core.compare import Series
from core.errors import UserError

# a line style and a marker for each run as well as a colour, so the lines part in greyscale too
STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"), ((0, (1, 3)), "x")]
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
TITLES = {"loss": "training loss", "dev_loss": "dev loss"}
X_LABELS = {"step": "step", "tokens": "tokens", "words": "words"}


def file_stem(name: str) -> str:
    """A curve's file name: a suite name may hold / or :, as a report's file name replaces them."""
    return name.replace("/", "_").replace(":", "_")


def time_scale(curves: dict[str, list[Series]]) -> tuple[float, str]:
    """(divisor, label) for seconds of training: hours for a long run, minutes for a short one."""
    longest = max((max(s.xs, default=0) for k in ("loss", "dev_loss") for s in curves.get(k, [])), default=0)
    return (3600.0, "training time (h)") if longest > 2 * 3600 else (60.0, "training time (min)")


def write_plots(
    curves: dict[str, list[Series]], folder: Path, x: str, metric_labels: dict[str, str]
) -> list[Path]:
    """loss.png/.svg, dev_loss.*, eval-<suite>.* in `folder`; returns the files written."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("--plots needs matplotlib; install it with `pip install matplotlib`.") from None
    divisor, x_label = time_scale(curves) if x == "time" else (1.0, X_LABELS[x])
    written = []
    for name, series in curves.items():
        evaluation = name.startswith("eval-")
        fig = Figure(figsize=(7, 4.2), layout="constrained")
        ax = fig.add_subplot()
        for one, (line, marker), colour in zip(series, itertools.cycle(STYLES), itertools.cycle(COLOURS)):
            xs = one.xs if evaluation else [v / divisor for v in one.xs]
            ys = [100 * v for v in one.ys] if evaluation else one.ys
            ax.plot(
                xs,
                ys,
                label=one.name,
                color=colour,
                linestyle=line,
                marker=marker,
                markevery=max(1, len(xs) // 12),
                markersize=5,
                linewidth=1.4,
            )
        suite = name[len("eval-") :]
        ax.set_title(f"{suite}: macro" if evaluation else TITLES.get(name, name))
        ax.set_xlabel("step" if evaluation else x_label)
        ax.set_ylabel(metric_labels.get(suite, "accuracy x100") if evaluation else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
        for suffix in ("png", "svg"):
            path = folder / f"{file_stem(name)}.{suffix}"
            try:
                fig.savefig(path, dpi=150)
            except OSError as e:
                raise UserError(f"Cannot write {path}: {e.strerror or e}.") from None
            written.append(path)
    return written


def terminal_curves(curves: dict[str, list[Series]], x: str, width: int, colour: bool) -> str:
    """The runs' training loss overlaid, a few lines high, as plotext draws it."""
    import plotext as plt

    series = curves.get("loss", [])
    if not series:
        return ""
    divisor, x_label = time_scale(curves) if x == "time" else (1.0, X_LABELS[x])
    plt.clear_figure()
    plt.plotsize(width, 14)
    plt.theme("pro" if colour else "clear")
    for one, marker in zip(series, itertools.cycle(["braille", "dot", "+", "x", "•"])):
        plt.plot([v / divisor for v in one.xs], one.ys, label=one.name, marker=marker)
    plt.title("training loss")
    plt.xlabel(x_label)
    text = plt.build()
    plt.clear_figure()
    return text if colour else plt.uncolorize(text)
