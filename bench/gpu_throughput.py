"""GPU training throughput and MFU of the MDLM at paper size, beside a Hugging Face BERT of the same shape.

    python bench/gpu_throughput.py [--preset cosine] [--batch 32,128] [--steps 10] [--json OUT]
    python bench/gpu_throughput.py --device cpu --preset smoke --steps 3      # a quick check without a GPU

One run measures (1) the device's matmul peak at the training precision (on CUDA the best of bf16
8192^3 matmuls, before and after the models), (2) forward + backward + AdamW step of our model under
bf16 autocast, the head only at the masked positions, and (3) the same for
transformers.BertForMaskedLM of equal width, depth, heads, FFN size, vocabulary and sequence length
(random init, sdpa attention, full MLM head), fed the same batches, with each model's peak device
memory. Batches and FLOP counting are bench/train_throughput.py's; MFU = achieved FLOP/s / measured
peak. The models run one after the other, each alone on the device, so that each one's peak memory
is its own. Targets at paper size: MFU at least 45 % and tokens/s not below the peer's.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_throughput import (  # noqa: E402  the peer, batches and FLOP counts of the CPU benchmark
    _cpu_name,
    all_cores,
    build_peer,
    make_batches,
    peer_forward_flops,
)

from core.allocator import tune_allocator  # noqa: E402
from core.config import load_config  # noqa: E402
from core.model import build_model, forward_flops_per_sequence  # noqa: E402

MFU_TARGET = 0.45  # of the measured matmul peak, at paper size
PEER_TARGET = 1.0  # ours / peer tokens/s


@dataclass
class Batch:
    noised: torch.Tensor  # [B, L] ids with [MASK] at the masked positions
    rate: torch.Tensor  # [B] mask rates, the time conditioning
    mask: torch.Tensor  # [B, L] True where masked
    targets: torch.Tensor  # [M] the clean ids at the masked positions, row-major
    labels: torch.Tensor  # [B, L] the peer's labels: clean ids where masked, else -100


def device_batches(cfg, batch_size: int, device: torch.device, count: int = 8) -> list[Batch]:
    """bench/train_throughput.py's batches, on the device, with the targets indexed once here: a
    boolean index waits for the device, and the benchmark should add no wait the trainer does not have."""
    out = []
    for tokens, rate, mask, noised in make_batches(count, batch_size, cfg.data.seq_len, cfg.data.vocab_size):
        tokens, rate, mask, noised = (x.to(device) for x in (tokens, rate, mask, noised))
        out.append(Batch(noised, rate, mask, tokens[mask], torch.where(mask, tokens, -100)))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_peak(
    device: torch.device, dtype: torch.dtype, size: int, inner: int = 10, repeats: int = 5
) -> float:
    """Best FLOP/s of square size^3 matmuls in dtype: the ceiling MFU is measured against."""
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    out = torch.empty(size, size, device=device, dtype=dtype)
    for _ in range(3):  # first calls choose kernels and raise the clocks
        torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b, out=out)
        sync(device)
        best = min(best, (time.perf_counter() - start) / inner)
    del a, b, out
    return 2 * size**3 / best


def ours_step(model, optimizer, batch: Batch, autocast) -> None:
    with autocast():
        logits = model(batch.noised, rate=batch.rate, output_mask=batch.mask)
        loss = F.cross_entropy(logits, batch.targets)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def peer_step(model, optimizer, batch: Batch, autocast) -> None:
    with autocast():
        loss = model(input_ids=batch.noised, labels=batch.labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def time_model(
    step, model, batches, device, autocast, warmup: int, steps: int
) -> tuple[list[float], float | None]:
    """Step times (synchronised around each step) and the peak device memory in MB (CUDA only), the
    warm-up included: the optimizer state appears at the first step."""
    # The fused AdamW on CUDA for both models: the optimizer is not what is being compared.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup):
        step(model, optimizer, batches[i % len(batches)], autocast)
    times = []
    for i in range(steps):
        sync(device)
        start = time.perf_counter()
        step(model, optimizer, batches[i % len(batches)], autocast)
        sync(device)
        times.append(time.perf_counter() - start)
    peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    del optimizer
    return times, peak_mb


def summarise(name, times, tokens, flops, peak, memory_mb) -> dict:
    step = statistics.median(times)
    return {
        "model": name,
        "step_s": step,
        "best_step_s": min(times),
        "tokens_per_s": tokens / step,
        "tflop_per_step": flops / 1e12,
        "tflop_per_s": flops / step / 1e12,
        "mfu": flops / step / peak,
        "peak_memory_mb": memory_mb,
    }


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_batch(cfg, batch_size, device, autocast, peak, args) -> dict:
    """Both models at one micro-batch size; each is built, timed and freed before the next."""
    B, L, V = batch_size, cfg.data.seq_len, cfg.data.vocab_size
    batches = device_batches(cfg, B, device)
    masked = [b.mask.sum(dim=1).tolist() for b in batches]
    ours_flops = 3 * statistics.mean(
        sum(forward_flops_per_sequence(cfg.model, V, L, n, batch_size=B) for n in rows) for rows in masked
    )
    results = []
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    times, memory = time_model(ours_step, model, batches, device, autocast, args.warmup, args.steps)
    results.append(summarise("mdlm (ours)", times, B * L, ours_flops, peak, memory))
    del model
    free(device)
    peer = None if args.no_peer else build_peer(cfg)
    if peer is not None:
        name = f"hf BertForMaskedLM ({peer.config._attn_implementation})"
        peer = peer.to(device)
        times, memory = time_model(peer_step, peer, batches, device, autocast, args.warmup, args.steps)
        results.append(summarise(name, times, B * L, 3 * B * peer_forward_flops(cfg), peak, memory))
        del peer
        free(device)
    ratio = results[0]["tokens_per_s"] / results[1]["tokens_per_s"] if len(results) > 1 else None
    return {
        "batch": B,
        "masked_fraction": sum(map(sum, masked)) / (len(batches) * B * L),
        "results": results,
        "ratio_tokens_per_s": ratio,
        "targets": {
            "mfu_at_least": MFU_TARGET,
            "mfu_met": results[0]["mfu"] >= MFU_TARGET,
            "ratio_at_least": PEER_TARGET,
            "ratio_met": None if ratio is None else ratio >= PEER_TARGET,
        },
    }


def report(run: dict) -> None:
    print(f"micro-batch {run['batch']}, masked {run['masked_fraction']:.3f}")
    print(
        f"  {'model':<34} {'step ms':>8} {'best ms':>8} {'tokens/s':>10} {'TFLOP/step':>10} {'TFLOP/s':>8} "
        f"{'MFU':>6} {'peak MB':>8}"
    )
    for r in run["results"]:
        memory = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:,.0f}"
        print(
            f"  {r['model']:<34} {r['step_s'] * 1e3:8.2f} {r['best_step_s'] * 1e3:8.2f} "
            f"{r['tokens_per_s']:10,.0f} "
            f"{r['tflop_per_step']:10.3f} {r['tflop_per_s']:8.1f} {r['mfu']:6.1%} {memory:>8}"
        )
    targets, ratio = run["targets"], run["ratio_tokens_per_s"]
    verdict = "met" if targets["mfu_met"] else "NOT met"
    line = f"  ours MFU {run['results'][0]['mfu']:.1%} (target {MFU_TARGET:.0%}: {verdict})"
    if ratio is not None:
        met = "met" if targets["ratio_met"] else "NOT met"
        line += f"; tokens/s ours / peer {ratio:.2f}x (target {PEER_TARGET:.2f}x: {met})"
    print(line)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    parser.add_argument("--preset", default="cosine")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. --set model.num_layers=6 (repeatable)",
    )
    parser.add_argument(
        "--batch", default=None, help="micro-batch sizes, comma-separated (default: the preset's)"
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "bf16", "fp32"),
        help="auto: bf16 autocast on CUDA, fp32 on CPU",
    )
    parser.add_argument(
        "--peak-size",
        type=int,
        default=None,
        help="matmul size of the peak (default 8192 on CUDA, 1024 on CPU)",
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = all cores")
    parser.add_argument("--no-peer", action="store_true", help="skip the Hugging Face peer")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: PyTorch sees no CUDA device here")
    if device.type == "cpu":
        tune_allocator()
        torch.set_num_threads(args.threads or all_cores())
    bf16 = args.precision == "bf16" or (args.precision == "auto" and device.type == "cuda")
    dtype = torch.bfloat16 if bf16 else torch.float32
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    cfg = load_config(args.preset, args.overrides)
    preset_batch = cfg.train.micro_batch
    sizes = [int(b) for b in args.batch.split(",")] if args.batch else [preset_batch]
    peak_size = args.peak_size or (8192 if device.type == "cuda" else 1024)

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{_cpu_name()}, {torch.get_num_threads()} threads"
    )
    cuda = f", CUDA {torch.version.cuda}" if device.type == "cuda" else ""
    print(f"{name}; torch {torch.__version__}{cuda}")
    peaks = [measure_peak(device, dtype, peak_size)]
    runs = [run_batch(cfg, B, device, autocast, peaks[0], args) for B in sizes]
    peaks.append(measure_peak(device, dtype, peak_size))
    peak = max(peaks)
    for run in runs:  # MFU against the better of the two peak readings
        for r in run["results"]:
            r["mfu"] = r["tflop_per_s"] * 1e12 / peak
        run["targets"]["mfu_met"] = run["results"][0]["mfu"] >= MFU_TARGET

    m = cfg.model
    precision = "bf16 autocast" if bf16 else "fp32"
    print(
        f"{str(dtype).split('.')[-1]} matmul peak: {peak / 1e12:.1f} TFLOP/s (best of {peak_size}^3 matmuls, "
        "before and after)"
    )
    changed = f" ({', '.join(args.overrides)})" if args.overrides else ""
    print(
        f"preset {args.preset}{changed}: D {m.hidden_size}, {m.num_layers} layers, {m.num_heads} heads, FFN "
        f"{m.ffn_size}, "
        f"V {cfg.data.vocab_size}, seq {cfg.data.seq_len}; {precision}; AdamW; median of {args.steps} steps "
        "after "
        f"{args.warmup} warm-up"
    )
    for run in runs:
        report(run)

    if args.json:
        out = {
            "device": name,
            "torch": torch.__version__,
            "cuda": torch.version.cuda if device.type == "cuda" else None,
            "preset": args.preset,
            "overrides": args.overrides,
            "precision": precision,
            "peak_tflop_s": peak / 1e12,
            "peak_readings_tflop_s": [p / 1e12 for p in peaks],
            "peak_matmul": f"{peak_size}^3 {str(dtype).split('.')[-1]}",
            "steps": args.steps,
            "warmup": args.warmup,
            "runs": runs,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
