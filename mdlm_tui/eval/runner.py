"""Evaluating a checkpoint UID by UID, so a screen can show each paradigm's accuracy as it lands.

`core.evaluate.evaluate` scores a whole suite in large batches and reports at the end; here each
UID is its own small Suite, scored with the same scorer and credit rules, and the suite's report
is assembled from the parts and saved where `mdlm-tui eval` saves it. Runs in a worker thread:
it imports torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass
class EvalRequest:
    checkpoint: Path  # runs/NAME/checkpoints/step-N (or a run folder: its latest checkpoint)
    suites: str = "builtin"  # comma-separated specs, as `mdlm-tui eval --suite`
    data_dir: str | None = None
    limit: int | None = None  # items per UID; None = all
    backend: str = "pll"
    device: str = "auto"


def run_evaluation(
    request: EvalRequest,
    on_uid: Callable[[str, str, dict], None],
    on_suite: Callable[[object, Path], None],
    on_status: Callable[[str], None] = lambda line: None,
    cancelled: Callable[[], bool] = lambda: False,
    on_dev: Callable[[dict, Path], None] = lambda result, path: None,
    on_suite_start: Callable[[str, int | None, dict], None] = lambda suite, step, settings: None,
) -> list[Path]:
    """Score every UID of every suite; on_suite_start(suite, step, settings) before each (settings as
    core.evaluate.report_settings), on_uid(suite, uid, result) after each UID, on_suite(report, path)
    after each suite's report is saved. The spec "dev" computes the dev-set NELBO as `mdlm-tui eval
    --suite dev` does and reports it to on_dev. Returns the saved report paths."""
    from core.config import apply_overrides
    from core.evaluate import (
        checkpoint_step,
        evaluate,
        load_for_eval,
        make_scorer,
        report_settings,
        save_report,
    )
    from core.saved_reports import assemble_report
    from core.scoring import drop_long_items
    from core.suites import Suite, load_suite

    on_status(f"loading {Path(request.checkpoint).name} ...")

    def warn(message):
        return on_status(message)

    model, tokenizer, cfg, ckpt = load_for_eval(
        str(request.checkpoint), weights="ema", device=request.device, warn=warn
    )
    # the CLI's check and message; the weights as loaded, for the reports
    cfg = apply_overrides(cfg, [f"eval.backend={request.backend}", "eval.weights=ema"])
    specs = [part.strip() for part in request.suites.split(",") if part.strip()]
    run_dir, step = ckpt.parent.parent, checkpoint_step(ckpt)
    saved = []
    if "dev" in specs:
        specs.remove("dev")
        saved.append(_dev_nelbo(model, cfg, ckpt, run_dir, step, on_status, on_dev))
    if not specs:
        return saved
    suites = load_suite(
        ",".join(specs), request.data_dir or cfg.eval.data_dir, limit=request.limit, warn=warn
    )
    for suite in suites:  # an item longer than the model would stall the whole evaluation
        if dropped := drop_long_items(suite, tokenizer, cfg.model.max_position):
            warn(f"{suite.name}: {dropped} items longer than model.max_position skipped")
    scorer = make_scorer(model, tokenizer, cfg, str(next(model.parameters()).device))
    for suite in suites:
        started = time.perf_counter()
        per_uid: dict[str, dict] = {}
        credits: dict[str, list[float]] = {}  # uid -> each item's credit, as evaluate saves them
        uids = suite.uids()
        settings = report_settings(scorer, suite)
        on_suite_start(suite.name, step, settings)
        if suite.metric != "accuracy" or suite.macro_by_field:
            # a correlation, an R^2 gain or a mean over files is a whole-suite number: scored at once
            if cancelled():
                return saved
            on_status(f"{suite.name}: scoring {len(suite.items):,} items ...")
            report = evaluate(scorer, suite, checkpoint=str(ckpt))
            for uid, result in report.per_uid.items():
                on_uid(suite.name, uid, result)
            saved.append(save_report(report, run_dir / "eval", step))
            on_suite(report, saved[-1])
            continue
        for index, uid in enumerate(uids, 1):
            if cancelled():
                return saved
            on_status(f"{suite.name}: {uid} ({index}/{len(uids)})")
            part = Suite(
                name=suite.name, items=[item for item in suite.items if item.uid == uid], source=suite.source
            )
            scored = evaluate(scorer, part, checkpoint=str(ckpt))
            per_uid[uid], credits[uid] = scored.per_uid[uid], scored.credits[uid]
            on_uid(suite.name, uid, per_uid[uid])
        report = assemble_report(
            suite.name,
            per_uid,
            time.perf_counter() - started,
            str(ckpt),
            settings,
            getattr(suite, "skipped", 0),
            credits,
        )
        path = save_report(report, run_dir / "eval", step)
        saved.append(path)
        on_suite(report, path)
    return saved


def _dev_nelbo(model, cfg, ckpt: Path, run_dir: Path, step, on_status, on_dev) -> Path:
    """The dev-set NELBO with the CLI's fixed seeds, saved as `eval --suite dev` saves it."""
    from core.evaluate import dev_report, save_dev_report

    on_status("dev NELBO: preparing the data ...")
    result = dev_report(model, cfg, ckpt, log=on_status)
    path = save_dev_report(result, run_dir / "eval", step)
    on_dev(result, path)
    return path
