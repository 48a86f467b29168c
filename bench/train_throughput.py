"""Training throughput and MFU of the MDLM, against a Hugging Face BERT of the same shape.

    python bench/train_throughput.py [--preset cpu-small] [--steps N] [--json OUT]

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

COSINE_MEAN_RATE = 0.3634  # 1 - 2 / pi


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


def time_steps(step, model, optimizer, batches, warmup: int, steps: int) -> list[float]:
    model.train()
    for i in range(warmup):
        step(model, optimizer, batches[i % len(batches)])
    return [_timed(lambda b=batches[i % len(batches)]: step(model, optimizer, b)) for i in range(steps)]


def build_peer(cfg):
    try:
        from transformers import BertConfig, BertForMaskedLM
    except ImportError:
        return None
    m = cfg.model
    config = BertConfig(
        vocab_size=cfg.data.vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads, intermediate_size=m.ffn_size, max_position_embeddings=m.max_position,
        hidden_dropout_prob=m.dropout, attention_probs_dropout_prob=m.attention_dropout,
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
        "tokens_per_s": sequences * seq_len / step,
        "gflop_per_step": flops_per_step / 1e9,
        "gflop_per_s": flops_per_step / step / 1e9,
        "mfu": flops_per_step / step / peak,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    parser.add_argument("--threads", type=int, default=0, help="0 = all cores")
    parser.add_argument("--no-peer", action="store_true", help="skip the Hugging Face peer")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)

    tuned = tune_allocator()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    torch.manual_seed(0)
    cfg = load_config(args.preset)
    B, L, V = cfg.train.batch_size, cfg.data.seq_len, cfg.data.vocab_size
    batches = make_batches(4, B, L, V)

    peak = measure_peak()
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s on {torch.get_num_threads()} threads")

    results = []
    model = build_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = time_steps(ours_step, model, optimizer, batches, args.warmup, args.steps)
    masked = statistics.mean(int(b[2].sum()) for b in batches)
    flops = 3 * B * forward_flops_per_sequence(cfg.model, V, L, masked / B, batch_size=B)
    results.append(summarise("mdlm (ours)", times, B, flops, peak, L))
    del model, optimizer

    peer = None if args.no_peer else build_peer(cfg)
    if peer is None and not args.no_peer:
        print("transformers is not installed, so the peer is skipped: pip install 'mdlm-tui[bench]' (or pip install transformers)")
    if peer is not None:
        optimizer = torch.optim.AdamW(peer.parameters(), lr=1e-4)
        times = time_steps(peer_step, peer, optimizer, batches, args.warmup, args.steps)
        results.append(summarise("hf BertForMaskedLM", times, B, 3 * B * peer_forward_flops(cfg), peak, L))

    m = cfg.model
    print(f"preset {args.preset}: D {m.hidden_size}, {m.num_layers} layers, {m.num_heads} heads, FFN {m.ffn_size}, "
          f"V {V}, seq {L}, batch {B}, masked {masked / (B * L):.3f}; median of {args.steps} steps after {args.warmup} warm-up")
    print(f"{'model':<20} {'step s':>8} {'tokens/s':>10} {'GFLOP/step':>11} {'GFLOP/s':>9} {'MFU':>6}")
    for r in results:
        print(f"{r['model']:<20} {r['step_s']:8.3f} {r['tokens_per_s']:10.0f} {r['gflop_per_step']:11.1f} "
              f"{r['gflop_per_s']:9.1f} {r['mfu']:6.1%}")
    ratio = results[0]["tokens_per_s"] / results[1]["tokens_per_s"] if len(results) > 1 else None
    if ratio is not None:
        print(f"tokens/s ours / peer: {ratio:.2f}x")

    if args.json:
        report = {
            "preset": args.preset, "peak_gflop_s": peak / 1e9, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cpu": _cpu_name(), "allocator_tuned": tuned,
            "results": results, "ratio_tokens_per_s": ratio,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


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
