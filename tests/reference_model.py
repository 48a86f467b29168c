"""A naive forward pass of the released model, written straight from SPEC section 4.

It reads a state dict with the released `Bert` names and computes every score with explicit loops
over query and key positions, explicit relative buckets and explicit AdaLN modulation: slow, and
meant to be. Tests compare core.model (fused projections, batched gathers, cached buckets) to it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PAD_ID = 3


def bucket(offset: int, buckets: int, max_position: int) -> int:
    """Row of the relative table for an offset: the offset itself up to buckets / 2, logarithmic beyond."""
    half = buckets // 2
    if abs(offset) <= half:
        return offset + buckets - 1
    distance = min(abs(offset), max_position - 1)
    log_bucket = half + math.ceil(
        math.log(distance / half) / math.log((max_position - 1) / half) * (half - 1)
    )
    return int(math.copysign(log_bucket, offset)) + buckets - 1


def layer_norm(x, eps, weight=None, bias=None):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    out = (x - mean) / torch.sqrt(var + eps)
    return out * weight + bias if weight is not None else out


def reference_logits(
    state: dict,
    *,
    num_layers: int,
    num_heads: int,
    buckets: int,
    max_position: int = 512,
    eps: float = 1e-7,
    input_ids,
    attention_mask=None,
    rate=None,
    time_scale: float = 1.0,
    ffn_gelu: str = "tanh",
    position_terms: str = "ltg",
) -> torch.Tensor:
    """Logits [B, L, V] at every position. `rate` [B] conditions the model when the state has a time MLP."""
    S = {k: v.double() for k, v in state.items() if v.is_floating_point()}
    B, L = input_ids.shape
    D = S["embedding.word_embedding.weight"].shape[1]
    d = D // num_heads
    keep = attention_mask.bool() if attention_mask is not None else torch.ones(B, L, dtype=torch.bool)

    x = layer_norm(S["embedding.word_embedding.weight"][input_ids], eps)
    table = layer_norm(
        S["embedding.relative_embedding"],
        eps,
        S["embedding.relative_layer_norm.weight"],
        S["embedding.relative_layer_norm.bias"],
    )

    cond = None
    if "sigma_map.mlp.0.weight" in S:
        r = rate.double() if rate is not None else torch.zeros(B, dtype=torch.float64)
        half = 128  # 256 sinusoidal features, max period 10000
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
        # the model computes the features in float32; so does the reference, then goes on in float64
        angles = (r.float()[:, None] * time_scale * freqs.float()[None, :]).double()
        features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        hidden = F.silu(features @ S["sigma_map.mlp.0.weight"].T + S["sigma_map.mlp.0.bias"])
        cond = F.silu(hidden @ S["sigma_map.mlp.2.weight"].T + S["sigma_map.mlp.2.bias"])

    for layer in range(num_layers):
        a = f"transformer.attention_layers.{layer}."
        m = f"transformer.mlp_layers.{layer}."
        if cond is not None:
            mod = (
                cond @ S[f"transformer.adaLN_modulations.{layer}.weight"].T
                + S[f"transformer.adaLN_modulations.{layer}.bias"]
            )
            shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = (c[:, None, :] for c in mod.chunk(6, dim=-1))
        else:
            shift_a = scale_a = shift_f = scale_f = torch.zeros(B, 1, D, dtype=torch.float64)
            gate_a = gate_f = torch.ones(B, 1, D, dtype=torch.float64)

        # attention
        h = layer_norm(x, eps) * (1 + scale_a) + shift_a
        w_q, w_k = S[a + "in_proj_qk.weight"].chunk(2)
        b_q, b_k = S[a + "in_proj_qk.bias"].chunk(2)
        w_v, w_g = S[a + "in_proj_vg.weight"].chunk(2)
        b_v, b_g = S[a + "in_proj_vg.bias"].chunk(2)
        q, k, v, g = h @ w_q.T + b_q, h @ w_k.T + b_k, h @ w_v.T + b_v, h @ w_g.T + b_g
        pos_q, pos_k = table @ w_q.T + b_q, table @ w_k.T + b_k
        context = torch.zeros(B, L, D, dtype=torch.float64)
        for b in range(B):
            for head in range(num_heads):
                s_ = slice(head * d, (head + 1) * d)
                scores = torch.full((L, L), -math.inf, dtype=torch.float64)
                for i in range(L):
                    for j in range(L):
                        if not keep[b, j]:
                            continue
                        first = bucket(i - j if position_terms == "ltg" else j - i, buckets, max_position)
                        second = bucket(i - j, buckets, max_position)
                        scores[i, j] = (
                            q[b, i, s_] @ k[b, j, s_]
                            + q[b, i, s_] @ pos_k[first, s_]
                            + k[b, j, s_] @ pos_q[second, s_]
                        ) / math.sqrt(3 * d)
                context[b, :, s_] = torch.softmax(scores, dim=-1) @ v[b, :, s_]
        context = layer_norm(context * F.gelu(g), eps)
        x = x + gate_a * (context @ S[a + "out_proj.weight"].T + S[a + "out_proj.bias"])

        # feed-forward (GEGLU)
        h = layer_norm(x, eps) * (1 + scale_f) + shift_f
        value, gate = (h @ S[m + "mlp.1.weight"].T).chunk(2, dim=-1)
        hidden = layer_norm(value * F.gelu(gate, approximate="tanh" if ffn_gelu == "tanh" else "none"), eps)
        x = x + gate_f * (hidden @ S[m + "mlp.4.weight"].T)

    # head, tied to the word embedding
    h = layer_norm(x, eps) @ S["classifier.nonlinearity.1.weight"].T + S["classifier.nonlinearity.1.bias"]
    h = layer_norm(F.gelu(h), eps)
    return h @ S["embedding.word_embedding.weight"].T + S["classifier.nonlinearity.5.bias"]
