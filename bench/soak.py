"""Memory soak: does a long CPU run's resident memory stay flat?

    python bench/soak.py [--preset cpu-small] [--steps 3000] [--set KEY=VALUE ...] [--json OUT]

Trains the preset for --steps steps with the installed `mdlm-tui run` (the corpus: babylm-mini from
the shared data folder when present, else the preset's own), then reads the trainer's RSS and
tokens/s from its metrics.jsonl. RSS growth is measured from step 500 (the allocator's working set
has formed by then) to the last record; the target is under 5 %. Tokens/s is the median over the
records after step 100, so start-up does not count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.runs import read_jsonl  # noqa: E402

BABYLM_MINI = (
    Path(os.environ.get("MDLM_TUI_SHARED_DATA", ROOT.parent / "shared" / "data")) / "babylm-mini" / "train"
)


def rss_at(records: list[dict], step: int) -> float:
    """RSS of the first record at or past `step`."""
    return next(r["sys"]["rss_mb"] for r in records if r["step"] >= step)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--from-step", type=int, default=500, help="growth is measured from this step")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    run_dir = Path(tempfile.mkdtemp(prefix="soak-")) / "run"
    data = ["--set", f"data.path={BABYLM_MINI}"] if BABYLM_MINI.is_dir() else []
    settings = [
        "--set",
        f"train.budget={args.steps} steps",
        "--set",
        "train.log_every=50",
        "--set",
        "train.dev_every=0",
        "--set",
        f"train.checkpoint_every={args.steps}",
    ]
    extra = [arg for o in args.overrides for arg in ("--set", o)]
    # `python -m` runs the package on sys.path: PYTHONPATH=OTHER_CHECKOUT measures another version
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mdlm_tui",
            "run",
            "--preset",
            args.preset,
            "--run-dir",
            str(run_dir),
            *data,
            *settings,
            *extra,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )

    records = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "train"]
    start, end = rss_at(records, args.from_step), records[-1]["sys"]["rss_mb"]
    result = {
        "preset": args.preset,
        "steps": args.steps,
        "overrides": args.overrides,
        "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "rss_mb": {str(r["step"]): r["sys"]["rss_mb"] for r in records},
        "rss_step_100_mb": rss_at(records, 100),
        f"rss_step_{args.from_step}_mb": start,
        "rss_end_mb": end,
        "growth_percent": round(100 * (end - start) / start, 2),
        "tokens_per_s_median": round(
            statistics.median(r["tokens_per_s"] for r in records if r["step"] > 100)
        ),
    }
    print(
        f"RSS {result['rss_step_100_mb']:.0f} MB at step 100, {start:.0f} MB at step {args.from_step}, "
        f"{end:.0f} MB at step {records[-1]['step']}: {result['growth_percent']:+.1f} % "
        f"(target < 5 %); median {result['tokens_per_s_median']:,} tokens/s"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
