"""The MDLM denoiser: an LTG-BERT encoder with AdaLN time conditioning (SPEC section 4).

Shapes: B sequences of L tokens, width D, H heads of size d = D / H, R = 2 * buckets - 1 relative
position rows. Inside attention the head axis comes first ([H, B, L, d]) so that the position terms,
which are shared by every sequence, are one batched matmul per head over all B * L tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core.config import ModelConfig

TIME_FEATURES = 256  # sinusoidal features of the mask rate


def relative_bucket_index(length: int, buckets: int, max_position: int) -> torch.Tensor:
    """[L, L] index into the relative-position table whose entry [a, b] buckets the offset b - a: the
    offset itself up to buckets // 2, logarithmic buckets beyond (as LTG-BERT), the last reaching
    max_position. Entry [j, i] is therefore bucket(i - j), the released index of query i, key j."""
    offset = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    half = buckets // 2
    distance = offset.abs().clamp(min=1, max=max_position - 1).double()
    log_bucket = half + torch.ceil(
        torch.log(distance / half) / math.log((max_position - 1) / half) * (half - 1)
    )
    bucket = torch.where(offset.abs() <= half, offset, offset.sign() * log_bucket.long())
    return bucket + buckets - 1


def time_features(
    rate: torch.Tensor, scale: float = 1.0, dim: int = TIME_FEATURES, max_period: float = 10000.0
) -> torch.Tensor:
    """cos and sin of rate * scale at dim / 2 frequencies. The released model feeds the rate in [0, 1]
    unscaled (scale 1); DiT-style models stretch it to integer timesteps (scale 1000)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=rate.device, dtype=torch.float32) / half
    )
    angles = rate.float()[:, None] * scale * freqs[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=eps)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout, but on CPU the keep mask comes from 16-bit slices of 64-bit random integers:
    the CPU generator makes one number at a time, so this is about 3x faster than bernoulli_."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    bits = torch.randint(-(2**63), 2**63 - 1, ((x.numel() + 3) // 4,), dtype=torch.int64, device=x.device)
    threshold = round(p * 65536) - 32768  # int16 values below it are dropped
    keep = bits.view(torch.int16)[: x.numel()].view(x.shape) >= threshold
    return x * (keep.to(x.dtype) * (1.0 / (1.0 - p)))


class Dropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, self.training)


def attend(q, k, v, scores_bias, dropout_p: float) -> torch.Tensor:
    """softmax(q k^T + scores_bias) v over [..., L, d] inputs; the scale is already in q, and
    scores_bias may be overwritten."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=scores_bias, dropout_p=dropout_p, scale=1.0)
    # On CPU, PyTorch's attention with a float mask runs this same math and is no faster; by hand,
    # the dropout can use the fast mask.
    L, d = q.shape[-2:]
    scores = scores_bias.reshape(-1, L, L).baddbmm_(q.reshape(-1, L, d), k.reshape(-1, L, d).transpose(1, 2))
    probs = dropout(scores.softmax(dim=-1), dropout_p, dropout_p > 0)
    return torch.bmm(probs, v.reshape(-1, L, d)).view(q.shape)


class Attention(nn.Module):
    """Disentangled attention (DeBERTa style), scaled by 1 / sqrt(3 d):
        score(i, j) = q_i . k_j + q_i . pos_k[bucket(i - j)] + k_j . pos_q[bucket(i - j)],
    where pos_q, pos_k are the relative table through this layer's query-key projection;
    values gated by GELU(gate); LayerNorm on the context before the output projection.
    (model.position_terms=mirrored indexes the first position term by bucket(j - i) instead.)"""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.hidden_size
        self.heads = cfg.num_heads
        self.head_size = D // cfg.num_heads
        self.eps = cfg.layer_norm_eps
        # As released, each layer drops its own view of the position table at the attention rate.
        self.position_dropout = cfg.attention_dropout if cfg.position_dropout == "per-layer" else 0.0
        # Query, key, value and gate in one matmul; rows [:2D] are the query-key projection, which
        # also projects the relative-position table.
        self.in_proj = nn.Linear(D, 4 * D)
        self.out_proj = nn.Linear(D, D)
        self.attention_dropout = cfg.attention_dropout
        # 1 / sqrt(3 d) folded into the query rows of the weight: scaling 4 D^2 weights is cheaper
        # than scaling B L D activations, and it scales all three score terms at once.
        query_scale = torch.ones(4 * D)
        query_scale[:D] = 1.0 / math.sqrt(3 * self.head_size)
        self.register_buffer("query_scale", query_scale, persistent=False)

    def forward(self, x, positions, bucket_index, key_padding):
        B, L, D = x.shape
        H, d = self.heads, self.head_size
        weight = self.in_proj.weight * self.query_scale[:, None]
        bias = self.in_proj.bias * self.query_scale
        # Two matmuls on slices of one weight: backward then sums two [B, L, D] input gradients
        # instead of concatenating (or zero-filling) one [B, L, 4 D] output gradient.
        qkv = F.linear(x, weight[: 3 * D], bias[: 3 * D])
        gate = F.linear(x, weight[3 * D :], bias[3 * D :])
        q, k, v = qkv.unflatten(-1, (3, H, d)).permute(2, 3, 0, 1, 4).contiguous().unbind(0)  # [H, B, L, d]

        # Position terms: project only the R table rows, score every token against them ([L, R]
        # per head, one matmul over all B * L tokens), then gather the [L, L] pattern.
        positions = dropout(positions, self.position_dropout, self.training)
        table = F.linear(positions, weight[: 2 * D], bias[: 2 * D])
        pos_q, pos_k = table.unflatten(-1, (2, H, d)).permute(1, 2, 3, 0).unbind(0)  # [H, d, R]
        # bucket_index[0] gathers over key rows (position_to_content[j, i] at bucket(i - j)), and
        # bucket_index[1] over query rows (content_to_position[i, j]); see MDLM.bucket_index.
        key_index, query_index = (index.expand(H, B, L, L) for index in bucket_index.unbind(0))
        content_to_position = (
            torch.matmul(q.view(H, B * L, d), pos_k).view(H, B, L, -1).gather(-1, query_index)
        )
        position_to_content = torch.matmul(k.view(H, B * L, d), pos_q).view(H, B, L, -1).gather(-1, key_index)
        scores_bias = content_to_position + position_to_content.transpose(-1, -2)
        if key_padding is not None:
            # the most negative finite value of the scores' dtype (bf16 under autocast): -inf
            # would turn an all-padding row into NaN
            scores_bias.masked_fill_(key_padding, torch.finfo(scores_bias.dtype).min)

        context = attend(q, k, v, scores_bias, self.attention_dropout if self.training else 0.0)
        context = context.permute(1, 2, 0, 3).reshape(B, L, D) * F.gelu(gate)
        return self.out_proj(layer_norm(context, self.eps))


class FeedForward(nn.Module):
    """GEGLU: x * GELU(gate), LayerNorm, projection back; no biases."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ffn_size = cfg.ffn_size
        self.eps = cfg.layer_norm_eps
        self.gelu_approximate = "tanh" if cfg.ffn_gelu == "tanh" else "none"  # the released GEGLU uses tanh
        self.in_proj = nn.Linear(cfg.hidden_size, 2 * cfg.ffn_size, bias=False)
        self.out_proj = nn.Linear(cfg.ffn_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        # slices of one weight rather than chunking the output (see Attention.forward)
        value = F.linear(x, self.in_proj.weight[: self.ffn_size])
        gate = F.linear(x, self.in_proj.weight[self.ffn_size :])
        return self.out_proj(layer_norm(value * F.gelu(gate, approximate=self.gelu_approximate), self.eps))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.eps = cfg.layer_norm_eps
        self.attention_dropout = Dropout(cfg.attention_dropout)  # the released attention output rate
        self.dropout = Dropout(cfg.dropout)
        # AdaLN-Zero: shift, scale, gate for attention and FFN; zero at init, so each block starts
        # as the identity when conditioning is on.
        self.modulation = nn.Linear(cfg.cond_dim, 6 * cfg.hidden_size) if cfg.time_conditioning else None

    def forward(self, x, cond, positions, bucket_index, key_padding):
        eps = self.eps
        if self.modulation is None:
            x = x + self.attention_dropout(
                self.attention(layer_norm(x, eps), positions, bucket_index, key_padding)
            )
            return x + self.dropout(self.feed_forward(layer_norm(x, eps)))
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = self.modulation(cond)[:, None, :].chunk(
            6, dim=-1
        )
        h = torch.addcmul(shift_a, layer_norm(x, eps), 1 + scale_a)
        x = torch.addcmul(
            x, gate_a, self.attention_dropout(self.attention(h, positions, bucket_index, key_padding))
        )
        h = torch.addcmul(shift_f, layer_norm(x, eps), 1 + scale_f)
        return torch.addcmul(x, gate_f, self.dropout(self.feed_forward(h)))


class MDLM(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        D = cfg.hidden_size
        self.word_embedding = nn.Embedding(vocab_size, D)
        self.relative_embedding = nn.Parameter(torch.empty(2 * cfg.position_buckets - 1, D))
        self.relative_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)  # the model's only affine LayerNorm
        self.dropout = Dropout(cfg.dropout)
        # model.position_dropout=shared drops the table once for all layers instead of once per layer
        self.shared_position_dropout = cfg.dropout if cfg.position_dropout == "shared" else 0.0
        self.head_dropout = Dropout(cfg.dropout if cfg.head_dropout else 0.0)
        if cfg.time_conditioning:
            self.time_mlp = nn.Sequential(
                nn.Linear(TIME_FEATURES, cfg.cond_dim),
                nn.SiLU(),
                nn.Linear(cfg.cond_dim, cfg.cond_dim),
                nn.SiLU(),
            )
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.head_proj = nn.Linear(D, D)
        self.output_bias = nn.Parameter(torch.zeros(vocab_size))  # output matrix = word embedding
        self._bucket_cache: dict[tuple[int, torch.device], torch.Tensor] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = math.sqrt(2.0 / (5.0 * self.cfg.hidden_size))  # as LTG-BERT
        released = self.cfg.init == "released"
        time_mlp = set(self.time_mlp.modules()) if released and self.cfg.time_conditioning else set()
        for module in self.modules():
            if module in time_mlp and isinstance(module, nn.Linear):
                module.reset_parameters()  # the released time MLP keeps PyTorch's default init
            elif isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.relative_embedding, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(self.output_bias)
        for i, block in enumerate(self.blocks):
            if released:  # deeper FFNs start smaller, as in LTG-BERT
                with torch.no_grad():
                    block.feed_forward.in_proj.weight.mul_(math.sqrt(1.0 / (2.0 * (1 + i))))
                    block.feed_forward.out_proj.weight.mul_(math.sqrt(1.0 / (2.0 * (1 + i))))
            if block.modulation is not None:
                nn.init.zeros_(block.modulation.weight)
                nn.init.zeros_(block.modulation.bias)

    def bucket_index(self, length: int, device: torch.device) -> torch.Tensor:
        """[2, L, L]: the index that gathers position scores over key rows, then the one over query rows.
        Both give bucket(i - j) for query i and key j (the second is the first transposed, stored
        contiguous: gathers with a strided index are slower); position_terms=mirrored reuses the first,
        i.e. bucket(j - i). Built once per (length, device): rebuilding relative-position tensors in
        every layer is what made the paper's released code slow."""
        key = (length, device)
        if key not in self._bucket_cache:
            index = relative_bucket_index(length, self.cfg.position_buckets, self.cfg.max_position)
            query_index = index if self.cfg.position_terms == "mirrored" else index.t().contiguous()
            self._bucket_cache[key] = torch.stack([index, query_index]).to(device)
        return self._bucket_cache[key]

    def forward(self, input_ids, attention_mask=None, rate=None, output_mask=None):
        B, L = input_ids.shape
        x = self.dropout(layer_norm(self.word_embedding(input_ids), self.cfg.layer_norm_eps))
        positions = dropout(
            self.relative_norm(self.relative_embedding), self.shared_position_dropout, self.training
        )
        bucket_index = self.bucket_index(L, input_ids.device)

        # [B, 1, L], True at padding keys. On CPU a batch without padding skips the masking pass
        # (on CUDA the check would wait for the device).
        key_padding = None
        if attention_mask is not None and not (input_ids.device.type == "cpu" and bool(attention_mask.all())):
            key_padding = ~attention_mask.bool()[:, None, :]

        cond = None
        if self.cfg.time_conditioning:
            if rate is None:
                rate = torch.zeros(B, device=input_ids.device)
            cond = self.time_mlp(time_features(rate, self.cfg.time_scale).to(x.dtype))

        for block in self.blocks:
            x = block(x, cond, positions, bucket_index, key_padding)
        # The head runs only where it is asked for: a [B, L] boolean mask, or the flat row-major indices
        # of those positions (what a GPU step passes: a boolean index would wait for the count).
        if output_mask is not None and output_mask.dtype == torch.bool:
            x = x[output_mask]
        elif output_mask is not None:
            x = x.flatten(0, 1).index_select(0, output_mask)
        return self.head(x)

    def head(self, x):
        eps = self.cfg.layer_norm_eps
        x = self.head_dropout(layer_norm(F.gelu(self.head_proj(layer_norm(x, eps))), eps))
        return F.linear(x, self.word_embedding.weight, self.output_bias)


def build_model(cfg) -> MDLM:
    return MDLM(cfg.model, cfg.data.vocab_size)


def count_parameters(model_cfg: ModelConfig, vocab_size: int) -> int:
    with torch.device("meta"):
        model = MDLM(model_cfg, vocab_size)
    return sum(p.numel() for p in model.parameters())


def forward_flops_per_sequence(
    model_cfg: ModelConfig, vocab_size: int, seq_len: int, n_masked: int, batch_size: int = 1
) -> int:
    """Matmul FLOPs (2 m n k) of one forward pass for one sequence whose head runs at n_masked
    positions. The relative-position projection is shared by a batch, so its cost is divided by
    batch_size (1: a lone sequence pays all of it). Training costs about 3x this."""
    D, F_, L, V = model_cfg.hidden_size, model_cfg.ffn_size, seq_len, vocab_size
    R = 2 * model_cfg.position_buckets - 1
    per_layer = (
        2 * L * D * 4 * D  # query, key, value, gate
        + 2 * L * L * D * 2  # content scores and attention-weighted values
        + 2 * L * R * D * 2  # content-to-position and position-to-content scores
        + 2 * L * D * D  # output projection
        + 2 * L * D * 2 * F_
        + 2 * L * F_ * D  # GEGLU
    )
    shared_per_layer = 2 * R * D * 2 * D  # projecting the position table
    if model_cfg.time_conditioning:
        per_layer += 2 * model_cfg.cond_dim * 6 * D
    total = model_cfg.num_layers * per_layer
    if model_cfg.time_conditioning:
        total += 2 * (TIME_FEATURES * model_cfg.cond_dim + model_cfg.cond_dim * model_cfg.cond_dim)
    total += n_masked * (2 * D * D + 2 * D * V)
    return total + model_cfg.num_layers * shared_per_layer // batch_size
