"""Will a run fit? The memory a config needs to train, estimated before the model is built.

Parameters, gradients, two optimizer moments and the EMA copy are fp32: 20 bytes a parameter, 16
when train.ema is 0. Activations kept for the backward pass of one micro-batch of B x L
tokens, fitted to measured CPU peaks without dropout (5 to 10 % below them): per token and layer
10 D + 5 F + 1.5 H L numbers (the last for the [H, L, L] score tensors), plus 2 V for the head's
logits and their gradient, 4 bytes each in fp32 and 2 under bf16. The estimate errs low: it refuses
only a run that cannot fit, never one that might.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import Config
from core.errors import UserError


@dataclass
class Estimate:
    parameters: int
    state_bytes: int  # weights, gradients, optimizer moments, EMA
    activation_bytes: int  # one micro-batch's forward pass kept for backward

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.activation_bytes


def count_parameters(cfg: Config) -> int:
    """MDLM's parameter count by arithmetic (core.model.count_parameters builds the model on the meta
    device, which overflows for absurd sizes)."""
    m, V = cfg.model, cfg.data.vocab_size
    D, F, C = m.hidden_size, m.ffn_size, m.cond_dim
    attention = (4 * D * D + 4 * D) + (D * D + D)
    feed_forward = 2 * F * D + F * D
    modulation = (C * 6 * D + 6 * D) if m.time_conditioning else 0
    layer = attention + feed_forward + modulation
    time_mlp = (256 * C + C + C * C + C) if m.time_conditioning else 0
    embeddings = V * D + (2 * m.position_buckets - 1) * D + 2 * D  # words, relative table, its LayerNorm
    return embeddings + time_mlp + m.num_layers * layer + (D * D + D) + V  # head projection, output bias


def estimate_training(cfg: Config, bf16: bool = False) -> Estimate:
    params = count_parameters(cfg)
    m = cfg.model
    state = params * (16 + (4 if cfg.train.ema > 0 else 0))
    L = cfg.data.seq_len
    tokens = cfg.train.micro_batch * L
    layer = 10 * m.hidden_size + 5 * m.ffn_size + 3 * m.num_heads * L // 2
    per_token = m.num_layers * layer + 2 * cfg.data.vocab_size
    return Estimate(params, state, tokens * per_token * (2 if bf16 else 4))


def available_bytes(device) -> int:
    """Memory free for a new run now: free GPU memory on CUDA, available RAM otherwise."""
    if getattr(device, "type", str(device)).startswith("cuda"):
        import torch

        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_fits(cfg: Config, device, bf16: bool = False) -> Estimate:
    """Refuse, in one sentence, a config whose training cannot fit in the device's free memory."""
    estimate = estimate_training(cfg, bf16)
    free = available_bytes(device)
    if estimate.total_bytes > free:
        raise UserError(
            f"This model needs about {_gib(estimate.total_bytes)} to train ({estimate.parameters:,} "
            f"parameters: {_gib(estimate.state_bytes)} of weights, gradients, optimizer and EMA state, "
            f"{_gib(estimate.activation_bytes)} of activations for a micro-batch of {cfg.train.micro_batch} "
            "x "
            f"{cfg.data.seq_len} tokens) but only {_gib(free)} is available on {device}; make the model "
            "smaller or lower train.micro_batch."
        )
    return estimate
