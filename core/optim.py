"""Optimiser, learning-rate shape and weight averaging of the paper's recipe (SPEC section 5):
LAMB with decay on matrices only, warm-up / cosine / cool-down, and an EMA of the weights."""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from core.config import TrainConfig
from core.model import Attention


class Lamb(torch.optim.Optimizer):
    """Adam moments with bias correction, decoupled weight decay, and a layer-wise trust ratio
    ||w|| / ||update|| that rescales each decayed tensor's step to a fixed fraction of its norm.
    Groups without decay (biases, norms) take plain Adam steps: their norms say nothing about scale.

    `row_blocks` maps a parameter to a number n of equal row blocks that each get their own trust
    ratio, for a fused tensor that stands for n separate matrices (default: one ratio per tensor)."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        row_blocks: dict[nn.Parameter, int] | None = None,
    ):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(
                f"Invalid LAMB settings: lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}."
            )
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        # Kept on the instance, keyed by the parameter object, not in the param groups: load_state_dict
        # swaps the group dicts for saved ones, and the blocks always come from the model anyway.
        self.row_blocks: dict[nn.Parameter, int] = {}
        for p, n in (row_blocks or {}).items():
            if n < 1 or p.ndim == 0 or p.shape[0] % n:
                raise ValueError(f"Cannot split shape {tuple(p.shape)} into {n} equal row blocks.")
            if n > 1:
                self.row_blocks[p] = n

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update_group(group, params)
        return loss

    def _update_group(self, group: dict, params: list[Tensor]) -> None:
        beta1, beta2 = group["betas"]
        grads = [p.grad for p in params]
        if any(g.is_sparse for g in grads):
            raise RuntimeError("LAMB does not support sparse gradients.")
        states = [self.state[p] for p in params]
        for p, state in zip(params, states):
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)

        m_hat = torch._foreach_div(exp_avgs, [1 - beta1 ** s["step"] for s in states])
        denom = torch._foreach_div(exp_avg_sqs, [1 - beta2 ** s["step"] for s in states])
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        updates = torch._foreach_div(m_hat, denom)

        if group["weight_decay"] > 0:
            torch._foreach_add_(updates, params, alpha=group["weight_decay"])
            blocks = [self.row_blocks.get(p, 1) for p in params]
            whole = [(p, u) for p, u, n in zip(params, updates, blocks) if n == 1]
            if whole:
                ws, us = map(list, zip(*whole))
                norms = [torch.stack(torch._foreach_norm(ts)) for ts in (ws, us)]
                torch._foreach_mul_(us, list(_trust_ratios(*norms).unbind()))
            for p, u, n in zip(params, updates, blocks):
                if n > 1:  # one ratio per row block; splitting dim 0 is always a view, whatever the strides
                    w_blocks, u_blocks = p.unflatten(0, (n, -1)), u.unflatten(0, (n, -1))
                    dims = tuple(range(1, u_blocks.ndim))
                    ratios = _trust_ratios(
                        torch.linalg.vector_norm(w_blocks, dim=dims),
                        torch.linalg.vector_norm(u_blocks, dim=dims),
                    )
                    u_blocks.mul_(ratios.view(n, *[1] * len(dims)))
        torch._foreach_add_(params, updates, alpha=-group["lr"])


def _trust_ratios(weight_norms: Tensor, update_norms: Tensor) -> Tensor:
    """||w|| / ||update||; a zero norm (fresh zero init, or a zero update) gives 1, i.e. the Adam step."""
    usable = (weight_norms > 0) & (update_norms > 0)
    return torch.where(usable, weight_norms / update_norms.clamp_min(1e-30), torch.ones_like(weight_norms))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (linear and embedding weights); leave biases, norms and other 1-D tensors alone."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():  # named_parameters lists tied weights once
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def released_matrix_blocks(model: nn.Module) -> dict[nn.Parameter, int]:
    """The fused tensors that were separate matrices in the released model, with their row-block counts:
    each attention in_proj weight holds query-key (rows [0:2D]) and value-gate (rows [2D:4D])."""
    return {m.in_proj.weight: 2 for m in model.modules() if isinstance(m, Attention)}


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    settings = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)
    if cfg.optimizer == "lamb":
        if cfg.lamb_trust not in ("per-matrix", "per-tensor"):
            raise ValueError(f"Unknown lamb_trust '{cfg.lamb_trust}'; choose per-matrix or per-tensor.")
        blocks = released_matrix_blocks(model) if cfg.lamb_trust == "per-matrix" else None
        return Lamb(groups, **settings, row_blocks=blocks)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, **settings)
    raise ValueError(f"Unknown optimizer '{cfg.optimizer}'; choose lamb or adamw.")


def lr_multiplier(step: int, total_steps: int, warmup: float, cooldown: float, min_ratio: float) -> float:
    """Fraction of the peak lr at `step`: linear 0 -> 1 over the first `warmup` fraction, cosine
    1 -> min_ratio, then linear min_ratio -> 0 over the last `cooldown` fraction (0 at total_steps)."""
    total = max(total_steps, 1)
    step = min(max(step, 0), total)
    warm_end = warmup * total
    cool_start = total - cooldown * total
    if step < warm_end:
        return step / warm_end
    if step > cool_start:
        return min_ratio * (total - step) / (total - cool_start)
    span = cool_start - warm_end
    progress = (step - warm_end) / span if span > 0 else 1.0
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of the parameters in float32, with MDLM's warm-up of the decay
    (min(decay, (1 + n) / (10 + n)) at the n-th update, n from 1), so early averages are not stuck at init."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {name: p.detach().float().clone() for name, p in self._params(model)}

    @staticmethod
    def _params(model: nn.Module) -> list[tuple[str, Tensor]]:
        return [(name, p) for name, p in model.named_parameters() if p.dtype.is_floating_point]

    def decay_for(self, n: int) -> float:
        """The decay of the n-th update, counting from 1 (as MDLM does): 2/11 first, then up to `decay`."""
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        decay = self.decay_for(self.num_updates)
        named = self._params(model)
        shadows = [self.shadow[name] for name, _ in named]
        torch._foreach_lerp_(shadows, [p.detach().float() for _, p in named], 1 - decay)

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "shadow": {name: t.clone() for name, t in self.shadow.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state does not match the model: {', '.join(sorted(missing)[:5])}.")
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        for name, tensor in state["shadow"].items():
            self.shadow[name].copy_(tensor)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for name, p in self._params(model):
            p.copy_(self.shadow[name])

    @contextmanager
    def swapped(self, model: nn.Module):
        """Use the averaged weights inside the block (e.g. for a dev loss); the live ones come back after."""
        with torch.no_grad():
            backup = {name: p.detach().clone() for name, p in self._params(model)}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in self._params(model):
                    p.copy_(backup[name])
