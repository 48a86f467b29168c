"""The numbers behind the Configure screen's plots and its run-time warning, computed with the engine itself.

They import torch, so they run in worker threads, never while the app starts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SchedulePreview:
    """Mask rates and NELBO weights of a few thousand draws of one schedule at one training progress."""

    name: str
    power: float
    progress: float
    rates: list[float]
    weights: list[float]
    mean_rate: float
    weight_p50: float
    weight_p99: float
    weight_max: float
    # bimodal only: the rates at the end of training, where the right mode has moved (SPEC 2)
    rates_end: list[float] | None = None
    mean_rate_end: float | None = None


def schedule_preview(
    schedule_cfg, progress: float = 0.0, samples: int = 4000, seed: int = 0
) -> SchedulePreview:
    """Draw t stratified, as training does, and take the schedule's r and w = |alpha'|^p / r."""
    import torch

    from core.schedules import build_schedule, nelbo_weight, stratified_t

    generator = torch.Generator().manual_seed(seed)
    t = stratified_t(samples, generator)
    schedule = build_schedule(schedule_cfg)
    rate, abs_dalpha = schedule.sample(t, progress, generator)
    weight = nelbo_weight(rate, abs_dalpha, schedule_cfg.power).double()
    levels = torch.tensor([0.5, 0.99], dtype=torch.float64)
    p50, p99 = torch.quantile(weight, levels).tolist()
    preview = SchedulePreview(
        name=schedule_cfg.name,
        power=schedule_cfg.power,
        progress=progress,
        rates=rate.tolist(),
        weights=weight.tolist(),
        mean_rate=rate.double().mean().item(),
        weight_p50=p50,
        weight_p99=p99,
        weight_max=weight.max().item(),
    )
    if schedule.progressive:  # its rates move with training (the bimodal one): show the end too
        rate_end, _ = schedule.sample(t, 1.0, generator)
        preview.rates_end, preview.mean_rate_end = rate_end.tolist(), rate_end.double().mean().item()
    return preview


def parameter_count(cfg) -> int:
    """The model's parameter count, as `mdlm-tui inspect` reports it (built on the meta device)."""
    from core.model import count_parameters

    return count_parameters(cfg.model, cfg.data.vocab_size)


LONG_RUN_S = 3 * 3600  # past a few hours, a first run on a CPU is better made with a smaller preset
TRAINING_SHARE_OF_PEAK = 0.65  # training runs at about 65 % of the fp32 matmul peak (BENCHMARKS.md)
TOKENS_PER_WORD = 1.3  # the embedded corpus: 986k tokens for 751k words at a 4,096 vocabulary
_peak_flops: float | None = None
_counted_tokens: dict[str, int] = {}


def cpu_peak_flops() -> float:
    """This CPU's fp32 matmul FLOP/s, measured once (a fifth of a second): best of a few 1024^3 products."""
    global _peak_flops
    if _peak_flops is None:
        import time

        import torch

        a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        _peak_flops = 2 * 1024**3 / best
    return _peak_flops


def epoch_tokens(data_cfg) -> int | None:
    """Train tokens in one epoch: from the data cache when this corpus was prepared before (at any
    vocabulary: close enough here), else counted for the embedded corpus; None when only reading
    the whole corpus could tell."""
    import json

    from core.corpus import cache_root, count_words, find_corpus
    from core.errors import UserError

    try:
        source = find_corpus(data_cfg)
    except UserError:
        return None
    for meta_path in sorted(cache_root(data_cfg).glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("identity") == source.identity:
            if isinstance(meta.get("train_tokens"), int):
                return meta["train_tokens"]
    if source.identity.startswith("embedded:"):  # small: read in a fifth of a second, once
        if source.identity not in _counted_tokens:
            _counted_tokens[source.identity] = round(TOKENS_PER_WORD * count_words(source.read().train))
        return _counted_tokens[source.identity]
    return None


def run_time_warning(cfg, mean_rate: float) -> str | None:
    """A sentence when training `cfg` would take long on this machine's CPU, else None (also with a
    GPU, or when the length of an epoch cannot be told yet).

    Training FLOPs are 3x the forward pass `forward_flops_per_sequence` counts (the head at the
    schedule's mean masked share), over every sequence the budget plans for."""
    import torch

    from core.config import parse_budget
    from core.model import forward_flops_per_sequence
    from core.trainer import plan_steps

    if cfg.train.device != "cpu" and torch.cuda.is_available():
        return None
    batches_per_epoch = 1  # steps and tokens budgets do not depend on it
    if parse_budget(cfg.train.budget)[1] == "epochs":
        tokens = epoch_tokens(cfg.data)
        if tokens is None:
            return None
        batches_per_epoch = max(1, round(tokens / cfg.data.seq_len / cfg.train.global_batch))
    steps = plan_steps(cfg, batches_per_epoch).total_steps
    length, batch = cfg.data.seq_len, cfg.train.micro_batch
    masked = round(mean_rate * length)
    per_sequence = 3 * forward_flops_per_sequence(cfg.model, cfg.data.vocab_size, length, masked, batch)
    speed = TRAINING_SHARE_OF_PEAK * cpu_peak_flops()
    seconds = steps * cfg.train.global_batch * per_sequence / speed
    if seconds < LONG_RUN_S:
        return None
    hours = seconds / 3600
    took = f"{hours:.0f} hours" if hours < 48 else f"{hours / 24:.0f} days"
    return f"⚠ ~{took} on this CPU ({speed / 1e9:.0f} GFLOP/s): try the cpu-small or smoke preset."


@dataclass
class FrequencyPreview:
    """Mean masking probability per frequency-rank bucket (bucket 0 holds the most frequent ids)."""

    buckets: list[str]  # labels, e.g. "0-10%"
    bucket_centres: list[float]  # rank percentile at the bucket's middle, for the x axis
    informed: list[float]  # mean q under the config's masking (frequency-informed, or uniform)
    uniform: list[float]  # mean q under uniform masking at the same per-sequence rates
    # mean q / (the sequence's mean q over its real tokens): the tilt alone, 1 for uniform masking
    relative: list[float]
    kind: str
    power: float  # the softening power shown: p_freq as reached by the end of the curriculum
    sequences: int
    tokens: int
    description: str
    # mean q over real tokens against uniform masking at the same rates: 1 unless the statistics count
    # <s> and the pads (SPEC 3), which lifts real tokens above r_b in padded sequences
    real_token_rate: float = 1.0


def frequency_preview(cfg, bucket_count: int = 10, log=lambda message: None) -> FrequencyPreview:
    """Masking probabilities q on one real batch of the config's corpus, averaged per rank bucket.

    Uses the first train.micro_batch chunks, rates drawn from the configured schedule at progress 0,
    and the final curriculum power (p_freq), where the tilt towards rare tokens is strongest."""
    import numpy as np
    import torch

    from core.dataset import masking_counts, prepare_data
    from core.masking import Masker, frequency_scores, maskable, uniform_mask_probs
    from core.registry import needs_scores
    from core.schedules import build_schedule, stratified_t

    data = prepare_data(cfg.data, log=log)
    batch = np.asarray(data.train[: cfg.train.micro_batch], dtype=np.int64)
    if len(batch) == 0:
        raise ValueError("The corpus gave no training chunks to preview.")
    ids = torch.from_numpy(batch)
    generator = torch.Generator().manual_seed(cfg.seed)
    rates, _ = build_schedule(cfg.schedule).sample(stratified_t(len(ids), generator), 0.0, generator)
    statistics = cfg.masking.statistics
    scores = frequency_scores(masking_counts(data, statistics))
    uniform = uniform_mask_probs(ids, rates)
    # the configured kind (a registered one too) at its final power, without the curriculum; zeroed at
    # specials, as sampling does: with sequence statistics q is not zero there
    masker = Masker(cfg.masking.kind, scores, cfg.masking.p_freq, curriculum=False, statistics=statistics)
    informed = masker.probs(ids, rates, epoch=0, total_epochs=1) * maskable(ids)

    keep = maskable(ids)
    # scores are (rank + 1) / V, so a score is already the rank's place in the vocabulary in (0, 1]
    percentile = scores[ids][keep].double()
    bucket = ((percentile - 1e-12) * bucket_count).long().clamp(0, bucket_count - 1)
    # Dividing by the sequence's realised rate over its real tokens takes out which sequences happened
    # to draw high rates, and (sequence statistics) how much padding lifted it above r_b: the tilt alone.
    realised = informed.sum(1) / keep.sum(1).clamp_min(1)
    relative = informed / realised.clamp_min(1e-6)[:, None]
    labels, centres, informed_means, uniform_means, relative_means = [], [], [], [], []
    for b in range(bucket_count):
        where = bucket == b
        if not where.any():
            continue  # no token of this rank range in the batch
        labels.append(f"{100 * b // bucket_count}-{100 * (b + 1) // bucket_count}%")
        centres.append(100 * (b + 0.5) / bucket_count)
        informed_means.append(informed[keep][where].double().mean().item())
        uniform_means.append(uniform[keep][where].double().mean().item())
        relative_means.append(relative[keep][where].double().mean().item())
    return FrequencyPreview(
        buckets=labels,
        bucket_centres=centres,
        informed=informed_means,
        uniform=uniform_means,
        relative=relative_means,
        kind=cfg.masking.kind,
        power=cfg.masking.p_freq if needs_scores(cfg.masking.kind) else 0.0,
        sequences=len(ids),
        tokens=int(keep.sum()),
        description=data.description,
        real_token_rate=(
            informed[keep].double().sum() / uniform[keep].double().sum().clamp_min(1e-12)
        ).item(),
    )
