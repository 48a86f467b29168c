"""Sampling from a checkpoint for the Samples screen, in a worker thread (it imports torch).

Loaded models are kept per checkpoint, so sampling again with other options starts at once. The
finished trace is written under <run>/traces/ in the `mdlm-tui sample --trace` format, where the
Samples screen lists it with the others.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from core.config import SamplesConfig
from mdlm_tui.samples.traces import TRACES_FOLDER


@dataclass
class SampleOptions(SamplesConfig):
    """The sample-now form: the fields and defaults of a run's `samples` settings (core.config, no
    torch), and a seed; `every` (how often training samples) plays no part here."""

    seed: int = 0


class CheckpointSampler:
    """Samples from checkpoints, keeping each loaded model for the next request."""

    def __init__(self, device: str = "auto") -> None:
        self.device = device
        self._loaded: dict[str, tuple] = {}

    def _load(self, checkpoint: Path, status: Callable[[str], None]):
        key = str(checkpoint)
        if key not in self._loaded:
            from core.evaluate import load_for_eval

            status(f"loading {checkpoint} ...")
            model, tokenizer, _, ckpt = load_for_eval(key, weights="ema", device=self.device, warn=status)
            self._loaded = {key: (model, tokenizer, ckpt)}  # one model at a time: they can be large
        return self._loaded[key]

    def sample(
        self,
        checkpoint: Path,
        options: SampleOptions,
        on_step: Callable[[dict], None],
        status: Callable[[str], None] = lambda line: None,
    ) -> Path:
        """Run the sampler, calling on_step with each step as a dict; returns the trace file written."""
        from core.sampling import SampleConfig, check_config, sample, trace_to_jsonl

        cfg = SampleConfig.from_settings(options)
        check_config(cfg)  # before loading a model: a bad option is reported at once
        model, tokenizer, ckpt = self._load(checkpoint, status)
        status(f"sampling {options.length} tokens in {options.steps} steps from {ckpt.name} ...")
        device = str(next(model.parameters()).device)
        result = sample(
            model,
            tokenizer,
            cfg,
            prompt=options.prompt or None,
            device=device,
            on_step=lambda step: on_step({k: v for k, v in asdict(step).items() if k != "tokens"}),
        )
        folder = ckpt.parent.parent / TRACES_FOLDER
        folder.mkdir(exist_ok=True)
        stem = f"{ckpt.name}-{options.sampler}-seed{options.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = folder / f"{stem}.jsonl", 2
        while path.exists():  # two samples in one second keep both traces
            path, n = folder / f"{stem}-{n}.jsonl", n + 1
        trace_to_jsonl(result, path)
        return path
