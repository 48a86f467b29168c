"""Save an SVG of every main screen, as the README shows them.

    python bench/screenshots.py [--out docs/screens] [--size 120x40]

Opens the app on the fixture runs the snapshot tests use (tests/snapshot_runs.py: a finished
smoke run with curves, eval reports and an unmasking trace, plus a stale, a failed and a stopped
run), brings each screen up the way a person would, with keys, and saves what the app itself
exports (App.export_screenshot, what Textual's own screenshot command saves).
The clock the screens read is frozen, so running this again changes no file unless a screen did.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.snapshot_runs import SCREENS, frozen_clock, make_app, write_fixture_runs  # noqa: E402

TITLES = {
    "runs": "Runs",
    "train": "Train",
    "configure": "Configure",
    "eval": "Eval",
    "samples": "Samples",
    "help": "Help",
    "compare": "Compare",
}


def stable_ids(svg: str) -> str:
    """Rich gives every export a random id in its CSS class names; a fixed one keeps the files diffable."""
    return re.sub(r"\bterminal-\d+-", "terminal-mdlm-", svg)


async def save_screen(screen: str, out: Path, size: tuple[int, int]) -> Path:
    _, bring_up = SCREENS[screen]
    app = make_app(screen)
    async with app.run_test(size=size) as pilot:
        await bring_up(pilot)
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()
        svg = app.export_screenshot(title=f"mdlm-tui: {TITLES[screen]}")
    path = out / f"{screen}.svg"
    path.write_text(stable_ids(svg), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screens"), help="folder for the SVGs")
    parser.add_argument("--size", default="120x40", help="terminal size, COLUMNSxLINES")
    parser.add_argument(
        "--screens", default=",".join(SCREENS), help="comma-separated, from: " + ", ".join(SCREENS)
    )
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.lower().split("x"))
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.pop("NO_COLOR", None)  # the README shows the screens in colour

    # the screens print the runs root: a relative `runs` in a scratch folder, never a temporary path
    home = Path.cwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        try:
            write_fixture_runs(Path("runs"))
            with frozen_clock():
                for screen in args.screens.split(","):
                    path = asyncio.run(save_screen(screen.strip(), out, (width, height)))
                    print(f"saved {path}")
        finally:
            os.chdir(home)


if __name__ == "__main__":
    main()
