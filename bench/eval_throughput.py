"""Evaluation throughput: the fast pseudo-log-likelihood scorer against the naive one.

    python bench/eval_throughput.py [--pairs 200] [--checkpoint RUN_OR_STEP_DIR] [--json OUT]

Both score the same minimal pairs (BLiMP from ../shared/data, a few per paradigm; the builtin suite
when that folder is absent) with the same model (the cpu-small preset at random init, or a
checkpoint) in the same process. The naive scorer masks one token, runs the whole model with the
head at every position, log-softmaxes the full vocabulary and repeats for every token; the fast one
stacks all rows of equal length into batches and runs the head only at the masked slot. The fast
scorer is timed before and after the naive one (the better of the two counts), so a neighbour's load
that comes and goes shows up as a spread rather than a bias. The two must agree on every pair.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import load_config  # noqa: E402
from core.evaluate import evaluate, load_for_eval, pair_credit  # noqa: E402
from core.model import build_model, forward_flops_per_sequence  # noqa: E402
from core.scoring import PLLScorer, encode_for_scoring, naive_pll  # noqa: E402
from core.suites import Suite, builtin_suite, load_suite  # noqa: E402
from core.tokenizer import train_tokenizer  # noqa: E402

TARGET_RATIO = 5.0
TOKENIZER_LINES = 60_000  # per babylm-mini file: enough text for a realistic 8k BPE in a few seconds


class NaiveScorer:
    backend = "naive-pll"

    def __init__(self, model, tokenizer, device, rate_value=0.0):
        self.model, self.tokenizer, self.device, self.rate_value = model, tokenizer, device, rate_value

    def score_texts(self, texts, contexts=None):
        contexts = contexts or [None] * len(texts)
        return [
            naive_pll(self.model, self.tokenizer, t, self.device, self.rate_value, context=c)
            for t, c in zip(texts, contexts)
        ]


class Recording:
    """Passes calls through and keeps every score, to compare the two scorers pair by pair."""

    def __init__(self, inner):
        self.inner, self.backend, self.scores = inner, inner.backend, []

    def score_texts(self, texts, contexts=None):
        scores = self.inner.score_texts(texts, contexts)
        self.scores += scores
        return scores


def cpu_model_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def random_init_model(data: Path):
    cfg = load_config("cpu-small")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    train_dir = data / "babylm-mini" / "train"
    if train_dir.is_dir():
        lines = []
        for path in sorted(train_dir.glob("*.train")):
            with open(path, encoding="utf-8") as f:
                lines += [line for _, line in zip(range(TOKENIZER_LINES), f)]
        source = f"BPE {cfg.data.vocab_size} on {len(lines):,} lines of babylm-mini"
    else:
        suite = builtin_suite()
        lines = [i.good for i in suite.items] + [i.bad for i in suite.items]
        source = "BPE on the builtin suite's sentences"
    tokenizer = train_tokenizer(lines, cfg.data.vocab_size)
    return model, tokenizer, f"cpu-small preset, random init ({source})"


def pick_pairs(data: Path, pairs: int) -> Suite:
    """The first few pairs of every BLiMP paradigm: all paradigms, so all sentence lengths, show up."""
    try:
        [suite] = load_suite("blimp", data_dir=str(data / "evaluation_data"), limit=math.ceil(pairs / 67))
    except Exception:
        suite = builtin_suite()
    suite.items = suite.items[:pairs] if len(suite.items) >= pairs else suite.items
    return suite


def matmul_gflop(model, tokenizer, suite) -> tuple[float, float]:
    """Matmul GFLOP of the two scorers on these pairs: one row per scored token for both; the fast
    one runs the head at one position per row, the naive one at all of them."""
    vocab = model.word_embedding.num_embeddings
    sequences = encode_for_scoring(tokenizer, [t for i in suite.items for t in (i.good, i.bad)])
    fast = naive = 0
    for sequence in sequences:
        rows, length = len(sequence.scored_positions()), len(sequence.ids)
        fast += rows * forward_flops_per_sequence(model.cfg, vocab, length, 1, batch_size=64)
        naive += rows * forward_flops_per_sequence(model.cfg, vocab, length, length, batch_size=1)
    return fast / 1e9, naive / 1e9


def timed_evaluate(scorer, suite):
    recording = Recording(scorer)
    start = time.perf_counter()
    report = evaluate(recording, suite)
    return time.perf_counter() - start, report, recording.scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument(
        "--checkpoint", help="a run folder or checkpoints/step-N folder (default: cpu-small at random init)"
    )
    parser.add_argument(
        "--data",
        default=str(ROOT.parent / "shared" / "data"),
        help="folder with evaluation_data/ and babylm-mini/",
    )
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    data = Path(args.data)
    if args.checkpoint:
        model, tokenizer, _, ckpt = load_for_eval(args.checkpoint, device="cpu")
        model_note = f"checkpoint {ckpt}"
    else:
        model, tokenizer, model_note = random_init_model(data)
    suite = pick_pairs(data, args.pairs)
    n_pairs = len(suite.items)
    tokens = [len(tokenizer.encode(t).ids) for i in suite.items for t in (i.good, i.bad)]

    fast = PLLScorer(model, tokenizer, "cpu", batch_tokens=args.batch_tokens)
    naive = NaiveScorer(model, tokenizer, "cpu")
    warm = Suite("warm-up", suite.items[:4], "")
    evaluate(fast, warm), evaluate(naive, warm)  # first calls pay for allocations and kernel choice

    load_before = os.getloadavg()[0]  # other processes on the machine show up here, and in the timings
    fast_first, fast_report, fast_scores = timed_evaluate(fast, suite)
    naive_seconds, naive_report, naive_scores = timed_evaluate(naive, suite)
    fast_second, _, _ = timed_evaluate(fast, suite)
    fast_seconds = min(fast_first, fast_second)
    load_after = os.getloadavg()[0]

    max_diff = max(abs(a - b) for a, b in zip(fast_scores, naive_scores))
    decisions_differ = sum(
        pair_credit(*fast_scores[k : k + 2]) != pair_credit(*naive_scores[k : k + 2])
        for k in range(0, len(fast_scores), 2)
    )
    ratio = naive_seconds / fast_seconds
    fast_gflop, naive_gflop = matmul_gflop(model, tokenizer, suite)
    result = {
        "machine": {
            "cpu": cpu_model_name(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_1min": [load_before, load_after],
        },
        "model": model_note,
        "suite": f"{suite.name} ({suite.source})",
        "pairs": n_pairs,
        "tokens_per_sentence": sum(tokens) / len(tokens),
        "fast_seconds": fast_seconds,
        "fast_seconds_runs": [fast_first, fast_second],
        "naive_seconds": naive_seconds,
        "fast_pairs_per_s": n_pairs / fast_seconds,
        "naive_pairs_per_s": n_pairs / naive_seconds,
        "ratio": ratio,
        "fast_gflop": fast_gflop,
        "naive_gflop": naive_gflop,
        "fast_gflop_per_s": fast_gflop / fast_seconds,
        "naive_gflop_per_s": naive_gflop / naive_seconds,
        "target_ratio": TARGET_RATIO,
        "max_abs_score_difference": max_diff,
        "pairs_decided_differently": decisions_differ,
        "fast_accuracy": fast_report.macro,
        "naive_accuracy": naive_report.macro,
    }
    m = result["machine"]
    print(
        f"machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, torch {m['torch']}, "
        f"load average {load_before:.2f} before, {load_after:.2f} after"
    )
    print(f"model: {model_note}")
    print(f"pairs: {n_pairs} from {result['suite']}, {result['tokens_per_sentence']:.1f} tokens per sentence")
    print(
        f"fast PLL:  {result['fast_pairs_per_s']:8.1f} pairs/s  ({fast_first:.2f}s, {fast_second:.2f}s; "
        f"{fast_gflop:.0f} GFLOP, {result['fast_gflop_per_s']:.0f} GFLOP/s)"
    )
    print(
        f"naive PLL: {result['naive_pairs_per_s']:8.1f} pairs/s  ({naive_seconds:.2f}s; "
        f"{naive_gflop:.0f} GFLOP, {result['naive_gflop_per_s']:.0f} GFLOP/s)"
    )
    print(
        f"ratio: {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x: "
        f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})"
    )
    print(
        f"agreement: max |score difference| {max_diff:.2e}, {decisions_differ} pairs decided differently, "
        f"accuracy {fast_report.macro:.4f} (fast) vs {naive_report.macro:.4f} (naive)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if decisions_differ == 0 and fast_report.macro == naive_report.macro else 1


if __name__ == "__main__":
    sys.exit(main())
