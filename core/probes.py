"""What a run looks at while it trains: zero-shot evaluations (appended to metrics.jsonl, reports in
eval/) and unmasking traces (samples.jsonl), so the TUI can show both as they arrive."""

from __future__ import annotations

import time
from typing import Callable

from core.config import Config
from core.evaluate import evaluate, make_scorer, save_report
from core.runs import RunDir
from core.sampling import SampleConfig, append_sample, check_config, sample, template_from_prompt
from core.scoring import drop_long_items
from core.suites import load_suite


class Probes:
    def __init__(self, cfg: Config, run: RunDir, tokenizer, device, log: Callable[[str], None]):
        self.cfg, self.run, self.tokenizer, self.device, self.log = cfg, run, tokenizer, device, log
        # Suites load up front: a missing suite stops the run before it trains, not hours later.
        self.suites = []
        if cfg.eval.every:
            self.suites = load_suite(
                cfg.eval.suites,
                cfg.eval.data_dir,
                limit=cfg.eval.limit or None,
                on_bad_line="skip",
                warn=lambda m: log(f"warning: {m}"),
            )
            for suite in self.suites:  # an item longer than the model would stall every evaluation
                if dropped := drop_long_items(suite, tokenizer, cfg.model.max_position):
                    log(f"warning: {suite.name}: {dropped} items longer than model.max_position skipped")
        s = cfg.samples
        self.sample_cfg = SampleConfig.from_settings(s, length=min(s.length, cfg.data.seq_len))
        if s.every:  # a prompt that cannot work fails now, not at the first sample
            check_config(self.sample_cfg)
            template_from_prompt(tokenizer, s.prompt, self.sample_cfg.length)

    def evaluate(self, model, step: int) -> None:
        scorer = make_scorer(model, self.tokenizer, self.cfg, self.device)
        for suite in self.suites:
            report = evaluate(scorer, suite, checkpoint=f"step-{step}")
            save_report(report, self.run.eval_dir, step)
            self.run.append_metrics(
                {
                    "event": "eval",
                    "step": step,
                    "suite": report.suite,
                    "backend": report.backend,
                    "macro": report.macro,
                    "n": report.n,
                    "seconds": report.seconds,
                    "per_field": report.per_field,
                    "per_uid": {uid: row["accuracy"] for uid, row in report.per_uid.items()},
                    "time": time.time(),
                }
            )
            self.log(
                f"step {step} | eval {report.suite}: {100 * report.macro:.1f} % macro over "
                f"{len(report.per_uid)} UIDs, {report.n} items, {report.seconds:.0f}s"
            )

    def sample(self, model, step: int) -> None:
        self.sample_cfg.seed = step  # a new sample each time, reproducible from the step
        result = sample(
            model, self.tokenizer, self.sample_cfg, prompt=self.cfg.samples.prompt, device=self.device
        )
        append_sample(self.run.samples_path, result, step=step)
        self.log(f"step {step} | sample: {result.text[:100]!r}")
