"""The engine on a CUDA GPU: bf16 autocast against fp32, the attention kernel, scoring and sampling
against the CPU, and a real training run's GPU statistics.

Every test is marked `cuda` and skips where torch sees no CUDA device; bench/gpu_check.sh runs them
on a GPU machine (`python -m pytest -n 0 -q -rs -m cuda tests/test_cuda.py`).

What may differ between the devices, and so is not compared token for token: ancestral unmasking and
draws at temperature > 0 take their randomness from a generator on the sampling device, and CUDA's
stream (Philox) is not the CPU's (Mersenne Twister), so one seed gives a different sample on each
device (each one reproducible). Greedy confidence sampling draws nothing and is compared exactly.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from core.config import load_config
from core.masking import Masker
from core.model import build_model
from core.objective import diffusion_loss
from core.sampling import SampleConfig, sample
from core.schedules import build_schedule
from core.scoring import NELBOScorer, PLLScorer
from core.specials import BOS_ID, MASK_ID, NUM_SPECIAL, PAD_ID
from core.suites import builtin_suite
from core.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = "no CUDA device visible to torch"

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]

# bf16 keeps 8 significant bits (a relative rounding error up to 2^-9 per value); matmuls accumulate in
# fp32. Over a small model that leaves the loss within a few tenths of a percent and the gradient
# pointing the same way, so these bounds catch a broken mixed-precision path, not rounding.
BF16_LOSS_RTOL = 2e-2  # |loss_bf16 - loss_fp32| / |loss_fp32|
BF16_GRAD_COSINE = 0.99  # cosine similarity of all gradients, flattened into one vector
BF16_MATRIX_COSINE = 0.95  # the same, for each weight matrix alone
# fp32 on both devices: only the order of additions differs (cuBLAS and the fused attention kernel
# against the CPU's), a few ulps per layer.
FP32_ATOL = FP32_RTOL = 1e-4
SCORE_ATOL = 1e-3  # nats, for a sentence's summed log-probabilities

MATMULS = {
    "mm",
    "addmm",
    "addmm_",
    "bmm",
    "baddbmm",
    "baddbmm_",
    "addbmm",
    "addbmm_",
    "_addmm_activation",
    "matmul",
    "linear",
}
FUSED_ATTENTION = {
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_cudnn_attention",
}


# ---------------------------------------------------------------- fixtures and helpers


def tiny_config(*overrides: str):
    """The smoke preset's model (D 128, 2 layers, 4 heads, V 4096, seq 64) without dropout, so that two
    passes over the same batch are comparable."""
    return load_config("smoke", ["model.dropout=0", "model.attention_dropout=0", *overrides])


def tiny_model(cfg, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(cfg)
    # AdaLN-Zero starts with zero gates: every block would be the identity and attention would reach
    # neither the output nor the gradient. Random modulation puts all of it (and the rate) in play.
    with torch.no_grad():
        for block in model.blocks:
            block.modulation.weight.normal_(std=0.2)
    return model


def token_batch(cfg, rows: int = 8, seed: int = 0) -> torch.Tensor:
    """<s> then random ids; the first row ends in padding, so the key-padding mask is in play too."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(NUM_SPECIAL, cfg.data.vocab_size, (rows, cfg.data.seq_len), generator=g)
    ids[:, 0] = BOS_ID
    ids[0, -cfg.data.seq_len // 4 :] = PAD_ID
    return ids


def loss_and_grads(model, cfg, ids: torch.Tensor, bf16: bool) -> tuple[float, dict[str, torch.Tensor]]:
    """The training objective on one batch, with the same noise draws every call (a fresh generator
    with a fixed seed), and every parameter's gradient as fp32 on the CPU. As in the trainer, only the
    forward pass runs under autocast."""
    model.train()
    model.zero_grad(set_to_none=True)
    generator = torch.Generator(device=ids.device).manual_seed(1)
    autocast = torch.autocast(ids.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:
        out = diffusion_loss(
            model,
            ids,
            schedule=build_schedule(cfg.schedule),
            masker=Masker("uniform"),
            power=cfg.schedule.power,
            progress=0.0,
            epoch=0,
            total_epochs=1,
            generator=generator,
            subs=cfg.objective.subs,
        )
    out.loss.backward()
    grads = {
        name: p.grad.detach().float().cpu() for name, p in model.named_parameters() if p.grad is not None
    }
    model.zero_grad(set_to_none=True)
    return out.loss.item(), grads


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))


class OpRecorder(TorchDispatchMode):
    """Each matmul and attention kernel that reaches the device, with the dtypes of its floating-point
    inputs. A dispatch mode sees operators after autocast has cast their inputs, so these are the
    dtypes the kernels really ran in."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, tuple[torch.dtype, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in MATMULS or "scaled_dot_product" in name:
            dtypes = tuple(
                t.dtype
                for t in tree_leaves((args, kwargs))
                if isinstance(t, torch.Tensor) and t.is_floating_point()
            )
            self.calls.append((name, dtypes))
        return func(*args, **kwargs)


def bf16_forward_ops(model, cfg, ids: torch.Tensor) -> list[tuple[str, tuple[torch.dtype, ...]]]:
    """The kernels of one training forward pass under bf16 autocast, the objective included."""
    model.train()
    generator = torch.Generator(device=ids.device).manual_seed(1)
    with OpRecorder() as recorder, torch.autocast(ids.device.type, dtype=torch.bfloat16):
        diffusion_loss(
            model,
            ids,
            schedule=build_schedule(cfg.schedule),
            masker=Masker("uniform"),
            power=cfg.schedule.power,
            progress=0.0,
            epoch=0,
            total_epochs=1,
            generator=generator,
            subs=cfg.objective.subs,
        )
    return recorder.calls


@pytest.fixture(scope="module")
def tokenizer():
    suite = builtin_suite()
    return train_tokenizer([text for item in suite.items for text in (item.good, item.bad)], 512)


def pair_texts(count: int = 24) -> list[str]:
    items = builtin_suite().items[:count]
    return [item.good for item in items] + [item.bad for item in items]


# ---------------------------------------------------------------- bf16 autocast


def test_bf16_autocast_loss_and_gradients_agree_with_fp32():
    cfg = tiny_config()
    model = tiny_model(cfg).cuda()
    ids = token_batch(cfg).cuda()
    loss32, grads32 = loss_and_grads(model, cfg, ids, bf16=False)
    loss16, grads16 = loss_and_grads(model, cfg, ids, bf16=True)

    assert math.isfinite(loss16), loss16
    assert abs(loss16 - loss32) / abs(loss32) < BF16_LOSS_RTOL, (loss16, loss32)
    assert grads16.keys() == grads32.keys()
    names = sorted(grads32)
    overall = cosine(
        torch.cat([grads16[n].flatten() for n in names]), torch.cat([grads32[n].flatten() for n in names])
    )
    per_matrix = {n: cosine(grads16[n], grads32[n]) for n in names if grads32[n].dim() == 2}
    worst = sorted(per_matrix.items(), key=lambda item: item[1])[:3]
    assert overall > BF16_GRAD_COSINE, (overall, worst)
    assert min(per_matrix.values()) > BF16_MATRIX_COSINE, worst


def test_bf16_autocast_runs_every_matmul_in_bf16():
    """No matmul of the forward pass (projections, position terms, attention, head) silently stays in
    fp32 under autocast: an fp32 input anywhere means a tensor that autocast never cast, e.g. one built
    with an explicit dtype inside the model."""
    cfg = tiny_config()
    calls = bf16_forward_ops(tiny_model(cfg).cuda(), cfg, token_batch(cfg).cuda())
    matmuls = [call for call in calls if call[0] in MATMULS]
    assert matmuls, f"no matmul was seen at all: {calls}"
    in_fp32 = [call for call in calls if any(dtype != torch.bfloat16 for dtype in call[1])]
    assert not in_fp32, f"kernels with inputs that are not bf16 under autocast: {in_fp32}"


def test_bf16_attention_runs_a_fused_kernel():
    """Each layer's attention, with its position bias as the additive mask, runs one of PyTorch's fused
    SDPA kernels (memory-efficient, flash or cuDNN), not the unfused math fallback."""
    cfg = tiny_config()
    calls = bf16_forward_ops(tiny_model(cfg).cuda(), cfg, token_batch(cfg).cuda())
    fused = [name for name, _ in calls if name in FUSED_ATTENTION]
    seen = sorted({name for name, _ in calls if "scaled_dot_product" in name})
    # none seen at all means the math fallback ran: it decomposes into plain matmuls and a softmax
    assert len(fused) == cfg.model.num_layers, f"fused attention kernels: {fused}; SDPA kernels seen: {seen}"


# ---------------------------------------------------------------- attention on CUDA against the CPU


def test_attention_with_position_bias_uses_sdpa_and_matches_cpu(monkeypatch):
    cfg = tiny_config()
    cpu_model = tiny_model(cfg).eval()
    gpu_model = copy.deepcopy(cpu_model).cuda()
    ids = token_batch(cfg)
    attention_mask = ids != PAD_ID
    rate = torch.linspace(0.05, 0.95, len(ids))

    real_sdpa = torch.nn.functional.scaled_dot_product_attention
    calls = []

    def spy(query, key, value, attn_mask=None, **kwargs):
        calls.append(
            (query.device.type, tuple(query.shape), None if attn_mask is None else tuple(attn_mask.shape))
        )
        return real_sdpa(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        expected = cpu_model(ids, attention_mask=attention_mask, rate=rate)
        assert calls == [], "the CPU path computes attention itself"
        got = gpu_model(ids.cuda(), attention_mask=attention_mask.cuda(), rate=rate.cuda())

    H, B, L = cfg.model.num_heads, len(ids), cfg.data.seq_len
    d = cfg.model.hidden_size // H
    # one call a layer, the position bias (with the padding) as a full [H, B, L, L] additive mask
    assert calls == [("cuda", (H, B, L, d), (H, B, L, L))] * cfg.model.num_layers, calls
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.cpu(), expected, rtol=FP32_RTOL, atol=FP32_ATOL)


# ---------------------------------------------------------------- scoring and sampling against the CPU


def test_pll_and_nelbo_scores_on_cuda_match_cpu(tokenizer):
    cfg = tiny_config()
    cpu_model = tiny_model(cfg).eval()
    gpu_model = copy.deepcopy(cpu_model).cuda()
    texts = pair_texts()
    scorers = {
        "pll": lambda model, device: PLLScorer(model, tokenizer, device),
        "pll-realised": lambda model, device: PLLScorer(model, tokenizer, device, rate_value="realised"),
        "nelbo": lambda model, device: NELBOScorer(
            model, tokenizer, device, build_schedule(cfg.schedule), draws=4, seed=0
        ),
    }
    for name, make in scorers.items():
        on_cpu = make(cpu_model, "cpu").score_texts(texts)
        on_gpu = make(gpu_model, "cuda").score_texts(texts)
        worst = max(abs(a - b) for a, b in zip(on_cpu, on_gpu))
        assert all(math.isfinite(s) for s in on_gpu), (name, on_gpu)
        assert worst < SCORE_ATOL, (name, worst)


def test_greedy_confidence_sampling_on_cuda_matches_cpu(tokenizer):
    """The same tokens at every step. In float64: fp32 sums in another order on each device can flip a
    near-tie between two candidate tokens or positions (gaps of ~1e-6 occur over thousands of
    comparisons), after which the samples rightly diverge; in float64 a difference is a real one."""
    cfg = tiny_config()
    cpu_model = tiny_model(cfg).double().eval()
    gpu_model = copy.deepcopy(cpu_model).cuda()
    settings = SampleConfig(length=32, steps=16, sampler="confidence", temperature=0.0, seed=0)
    for prompt in (None, "The cat <mask>*4 the mat."):  # a free sample, and an infill template with padding
        on_cpu = sample(cpu_model, tokenizer, settings, prompt=prompt, device="cpu")
        on_gpu = sample(gpu_model, tokenizer, settings, prompt=prompt, device="cuda")
        assert [step.tokens for step in on_gpu.trace] == [step.tokens for step in on_cpu.trace], prompt
        assert on_gpu.tokens == on_cpu.tokens and MASK_ID not in on_gpu.tokens
        assert on_gpu.forward_passes == on_cpu.forward_passes


def test_ancestral_sampling_on_cuda_is_reproducible_and_cache_neutral(tokenizer):
    """Ancestral sampling at temperature 1 draws on a CUDA generator: the same seed gives the same
    sample, with or without skipping the model at steps that unmask nothing."""
    cfg = tiny_config()
    model = tiny_model(cfg).cuda().eval()
    settings = SampleConfig(length=32, steps=16, sampler="ancestral", temperature=1.0, seed=3)
    first = sample(model, tokenizer, settings, device="cuda")
    again = sample(model, tokenizer, settings, device="cuda")
    uncached = sample(model, tokenizer, dataclasses.replace(settings, cache=False), device="cuda")
    assert first.tokens == again.tokens == uncached.tokens
    assert first.tokens[0] == BOS_ID and all(token >= NUM_SPECIAL for token in first.tokens[1:])
    # every position may be unmasked before the last step, so even uncached it can be fewer than steps
    assert settings.steps >= uncached.forward_passes >= first.forward_passes


# ---------------------------------------------------------------- a real run


def test_training_run_on_cuda_writes_gpu_statistics(tmp_path):
    """`mdlm-tui run --device cuda` trains the smoke preset for 20 steps, finishes, and every train
    record carries NVML's reading of the GPUs (sys.gpus)."""
    pytest.importorskip(
        "pynvml",
        reason="nvidia-ml-py is not installed (pip install 'mdlm-tui[gpu]'): "
        "without NVML the trainer writes no GPU statistics",
    )
    run_dir = tmp_path / "run"
    # This checkout's code, also where an older mdlm-tui is installed.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mdlm_tui",
            "run",
            "--preset",
            "smoke",
            "--device",
            "cuda",
            "--set",
            "train.budget=20 steps",
            "--run-dir",
            str(run_dir),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"

    records = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    train = [record for record in records if record.get("event") == "train"]
    assert train, records
    for record in train:
        assert math.isfinite(record["loss"]), record
        gpus = record["sys"].get("gpus")
        assert gpus, f"no GPU statistics in step {record['step']}: {record['sys']}"
        for gpu in gpus:
            assert "util_percent" in gpu and "mem_used_mb" in gpu, gpu
            assert 0 <= gpu["util_percent"] <= 100, gpu
            assert gpu["mem_used_mb"] > 0, gpu


def test_training_steps_between_logging_intervals_never_wait_for_the_gpu(tmp_path):
    """The forward process runs on the host and goes over in non-blocking copies from pinned memory, the
    loss and norm stay on the device until logged: a step makes no host-device synchronisation (a
    synchronising call raises under sync debug mode "error")."""
    from core.runs import RunDir
    from core.trainer import Trainer, _prepare_folder

    cfg = load_config(
        "smoke", ["train.budget=20 steps", "train.log_every=10", "train.dev_every=0", "train.optimizer=lamb"]
    )
    run = RunDir(tmp_path / "run")
    _prepare_folder(cfg, run, False, log=lambda line: None)
    trainer = Trainer(cfg, run, torch.device("cuda"), resume=False, log=lambda line: None)
    trainer._setup()
    trainer._train_step()  # the first step builds caches (position buckets, pinned blocks, cuBLAS handles)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            trainer._train_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer._check_finite()  # the deferred check still sees every step
    assert trainer.step == 4 and not trainer.unchecked
