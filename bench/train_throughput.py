"""Training throughput and MFU of the MDLM, against a Hugging Face BERT of the same shape.

    python bench/train_throughput.py [--preset cpu-small] [--set KEY=VALUE ...] [--steps N] [--json OUT]

One run measures (1) this machine's fp32 matmul peak, (2) forward + backward + AdamW step of our
model at the preset's size, the head only at the ~36 % masked positions, and (3) the same for
transformers.BertForMaskedLM of equal width, depth, heads, FFN size, vocabulary and sequence length
(random init, full MLM head, as Hugging Face runs it), fed the same batches. Warm-up steps are not
timed. FLOPs are matmul FLOPs (2 m n k) of each model's own forward pass, times 3 for training;
MFU = achieved FLOP/s / measured peak. The peer needs the bench extra: pip install 'mdlm-tui[bench]'
(or: pip install transformers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.allocator import tune_allocator  # noqa: E402
from core.config import load_config  # noqa: E402
from core.model import build_model, forward_flops_per_sequence  # noqa: E402
from core.specials import MASK_ID, NUM_SPECIAL  # noqa: E402


def measure_peak(size: int = 2048, repeats: int = 8) -> float:
    """Best fp32 GFLOP/s of large square matmuls: the ceiling MFU is measured against."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)
    best = min(_timed(lambda: torch.mm(a, b, out=out)) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def make_batches(count: int, batch_size: int, seq_len: int, vocab_size: int, seed: int = 0):
    """Random tokens, masked at a per-sequence rate drawn from the cosine schedule (mean ~0.36)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        tokens = torch.randint(NUM_SPECIAL, vocab_size, (batch_size, seq_len), generator=g)
        t = torch.rand(batch_size, generator=g)
        rate = 1 - torch.cos(torch.pi / 2 * (1 - t))
        mask = torch.rand(batch_size, seq_len, generator=g) < rate[:, None]
        mask[:, 0] = False  # <s>
        batches.append((tokens, rate, mask, torch.where(mask, MASK_ID, tokens)))
    return batches


def ours_step(model, optimizer, batch):
    tokens, rate, mask, noised = batch
    logits = model(noised, rate=rate, output_mask=mask)
    loss = F.cross_entropy(logits, tokens[mask])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def peer_step(model, optimizer, batch):
    tokens, _, mask, noised = batch
    loss = model(input_ids=noised, labels=torch.where(mask, tokens, -100)).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def time_interleaved(runs, batches, warmup: int, steps: int, rounds: int) -> list[list[float]]:
    """Step times per model, alternating models round by round so that a noisy neighbour on the
    machine slows them alike. runs: (step function, model, optimizer) per model."""
    for step, model, optimizer in runs:
        model.train()
        for i in range(warmup):
            step(model, optimizer, batches[i % len(batches)])
    times = [[] for _ in runs]
    per_round = max(1, steps // rounds)
    for r in range(rounds):
        for (step, model, optimizer), record in zip(runs, times):
            for i in range(per_round):
                batch = batches[(r * per_round + i) % len(batches)]
                record.append(_timed(lambda: step(model, optimizer, batch)))
    return times


def build_peer(cfg):
    try:
        from transformers import BertConfig, BertForMaskedLM
    except ImportError:
        return None
    m = cfg.model
    config = BertConfig(
        vocab_size=cfg.data.vocab_size,
        hidden_size=m.hidden_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads,
        intermediate_size=m.ffn_size,
        max_position_embeddings=m.max_position,
        hidden_dropout_prob=m.dropout,
        attention_probs_dropout_prob=m.attention_dropout,
    )
    return BertForMaskedLM(config)


def peer_forward_flops(cfg) -> int:
    """BERT with its MLM head at every position, by the same matmul convention."""
    D, F_, L, V = cfg.model.hidden_size, cfg.model.ffn_size, cfg.data.seq_len, cfg.data.vocab_size
    per_layer = 2 * L * D * 3 * D + 2 * L * L * D * 2 + 2 * L * D * D + 2 * L * D * F_ * 2
    return cfg.model.num_layers * per_layer + L * (2 * D * D + 2 * D * V)


def summarise(name, step_times, sequences, flops_per_step, peak, seq_len):
    step = statistics.median(step_times)
    return {
        "model": name,
        "step_s": step,
        "best_step_s": min(step_times),
        "tokens_per_s": sequences * seq_len / step,
        "gflop_per_step": flops_per_step / 1e9,
        "gflop_per_s": flops_per_step / step / 1e9,
        "mfu": flops_per_step / step / peak,
    }


def ours_flops_per_step(cfg, batches) -> float:
    """3 x forward matmul FLOPs, each sequence with its own number of masked positions."""
    B, L, V = cfg.train.micro_batch, cfg.data.seq_len, cfg.data.vocab_size
    per_batch = [
        sum(forward_flops_per_sequence(cfg.model, V, L, int(n), batch_size=B) for n in mask.sum(dim=1))
        for _, _, mask, _ in batches
    ]
    return 3 * statistics.mean(per_batch)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. --set model.hidden_size=512 (repeatable)",
    )
    parser.add_argument("--steps", type=int, default=15, help="timed steps per model")
    parser.add_argument("--rounds", type=int, default=3, help="alternations between the models")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    parser.add_argument("--threads", type=int, default=0, help="0 = all cores")
    parser.add_argument("--no-peer", action="store_true", help="skip the Hugging Face peer")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)

    tuned = tune_allocator()
    torch.set_num_threads(args.threads or all_cores())
    torch.manual_seed(0)
    cfg = load_config(args.preset, args.overrides)
    B, L, V = cfg.train.micro_batch, cfg.data.seq_len, cfg.data.vocab_size
    batches = make_batches(8, B, L, V)
    masked = statistics.mean(float(b[2].float().mean()) for b in batches)

    peak_before = measure_peak()
    model = build_model(cfg)
    runs = [(ours_step, model, torch.optim.AdamW(model.parameters(), lr=1e-4))]
    names = ["mdlm (ours)"]
    flops = [ours_flops_per_step(cfg, batches)]
    peer = None if args.no_peer else build_peer(cfg)
    if peer is None and not args.no_peer:
        print(
            "transformers is not installed, so the peer is skipped; install it with "
            "pip install 'mdlm-tui[bench]' (or pip install transformers)"
        )
    if peer is not None:
        runs.append((peer_step, peer, torch.optim.AdamW(peer.parameters(), lr=1e-4)))
        names.append(f"hf BertForMaskedLM ({peer.config._attn_implementation})")
        flops.append(3 * B * peer_forward_flops(cfg))
    times = time_interleaved(runs, batches, args.warmup, args.steps, args.rounds)
    # The best of two peak measurements is the ceiling MFU is measured against.
    peak = max(peak_before, measure_peak())
    results = [summarise(n, t, B, f, peak, L) for n, t, f in zip(names, times, flops)]

    m = cfg.model
    print(f"{_cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s (best of 2048^3 matmuls, before and after)")
    changed = f" ({', '.join(args.overrides)})" if args.overrides else ""
    print(
        f"preset {args.preset}{changed}: D {m.hidden_size}, {m.num_layers} layers, {m.num_heads} heads, FFN "
        f"{m.ffn_size}, "
        f"V {V}, seq {L}, batch {B}, masked {masked:.3f}; AdamW; median of {len(times[0])} steps "
        f"in {args.rounds} alternating rounds after {args.warmup} warm-up"
    )
    print(
        f"{'model':<34} {'step s':>7} {'best s':>7} {'tokens/s':>9} {'GFLOP/step':>11} {'GFLOP/s':>8} "
        f"{'MFU':>6}"
    )
    for r in results:
        print(
            f"{r['model']:<34} {r['step_s']:7.3f} {r['best_step_s']:7.3f} {r['tokens_per_s']:9.0f} "
            f"{r['gflop_per_step']:11.1f} {r['gflop_per_s']:8.1f} {r['mfu']:6.1%}"
        )
    ratio = results[0]["tokens_per_s"] / results[1]["tokens_per_s"] if len(results) > 1 else None
    if ratio is not None:
        print(f"tokens/s ours / peer: {ratio:.2f}x")

    if args.json:
        report = {
            "preset": args.preset,
            "overrides": args.overrides,
            "peak_gflop_s": peak / 1e9,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu": _cpu_name(),
            "allocator_tuned": tuned,
            "masked_fraction": masked,
            "results": results,
            "ratio_tokens_per_s": ratio,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def all_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    raise SystemExit(main())
