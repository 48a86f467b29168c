"""A run's checkpoint folders, and the picker that offers them on the Eval and Samples screens.

Plain paths: no torch here. The step folders are core.runs.step_dirs, as the trainer lists them.
"""

from __future__ import annotations

from pathlib import Path

from core.runs import milestone_dirs, step_dirs


def list_checkpoints(run: Path) -> list[Path]:
    """checkpoints/step-N folders, newest first, then the chck_* milestones (train.save_at_words), most words
    first: the latest step is the usual choice, a milestone one asked for by name."""
    folder = Path(run) / "checkpoints"
    return step_dirs(folder)[::-1] + milestone_dirs(folder)[::-1]


def fill_checkpoint_picker(picker, run: Path) -> list[Path]:
    """Offer the run's checkpoints in a Select, newest first, keeping the current choice while it exists.
    Cheap to call often: the options are replaced only when the checkpoints changed."""
    checkpoints = list_checkpoints(run)
    options = [(path.name, str(path)) for path in checkpoints]
    if options != getattr(picker, "listed_checkpoints", None):
        picker.listed_checkpoints = options
        picker.set_options(options)
        # the blank row shows the prompt: it must not claim "no checkpoints" next to some
        picker.prompt = "choose a checkpoint" if checkpoints else "no checkpoints"
    if checkpoints and picker.value not in {value for _, value in options}:
        picker.value = options[0][1]
    return checkpoints


def current_run(screen, run: Path | None) -> Path | None:
    """The screen's own run, else the app's current one (the app may not offer one)."""
    if run is not None:
        return run
    current = getattr(screen.app, "current_run", None)
    return Path(current) if current is not None else None
