"""A masked diffusion language model exported by mdlm-tui, for Hugging Face transformers.

Self-contained (torch and transformers only): `mdlm-tui export` copies this file beside config.json
and model.safetensors, so that `AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)`
runs the same forward pass as the training code: an LTG-BERT encoder (disentangled relative-position
attention, GEGLU) with AdaLN time conditioning.

Time conditioning. A diffusion model is told the mask rate of its input; evaluation tools only pass
input_ids and attention_mask, so the model conditions itself on the rate its run was evaluated with,
config.time_rate: a fixed rate, or "realised": one over the number of maskable tokens in the row
([MASK] included), the rate a pseudo-log-likelihood row with a single [MASK] really has. Pass `rate`
([B] floats in [0, 1]) to condition on anything else.

With config.suppress_mask_logit (the run trained without ever predicting [MASK]), the [MASK] logit is
the lowest finite value, so a log-softmax over the logits equals the run's own scoring.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput, SequenceClassifierOutput


class MDLMConfig(PretrainedConfig):
    model_type = "mdlm_tui"

    def __init__(
        self,
        vocab_size=16384,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=2560,
        cond_dim=128,
        time_conditioning=True,
        time_features=256,
        time_scale=1.0,
        time_rate=0.0,
        position_buckets=32,
        max_position_embeddings=512,
        position_terms="ltg",
        layer_norm_eps=1e-7,
        ffn_gelu="tanh",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        position_dropout="per-layer",
        head_dropout=True,
        classifier_dropout=None,
        suppress_mask_logit=True,
        num_special_tokens=16,
        mask_token_id=4,
        pad_token_id=3,
        bos_token_id=1,
        eos_token_id=2,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.cond_dim = cond_dim
        self.time_conditioning = time_conditioning
        self.time_features = time_features
        self.time_scale = time_scale
        self.time_rate = time_rate
        self.position_buckets = position_buckets
        self.max_position_embeddings = max_position_embeddings
        self.position_terms = position_terms
        self.layer_norm_eps = layer_norm_eps
        self.ffn_gelu = ffn_gelu
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.position_dropout = position_dropout
        self.head_dropout = head_dropout
        self.classifier_dropout = classifier_dropout
        self.suppress_mask_logit = suppress_mask_logit
        self.num_special_tokens = num_special_tokens
        self.mask_token_id = mask_token_id
        # the output matrix is the word embedding itself, read in place: nothing to tie
        kwargs["tie_word_embeddings"] = False
        super().__init__(
            pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs
        )


def relative_buckets(length: int, buckets: int, max_position: int) -> torch.Tensor:
    """[L, L]: entry [a, b] is the table row of offset b - a; exact up to buckets // 2, logarithmic
    beyond, the last bucket reaching max_position (as LTG-BERT)."""
    offset = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    half = buckets // 2
    distance = offset.abs().clamp(min=1, max=max_position - 1).double()
    log_bucket = half + torch.ceil(
        torch.log(distance / half) / math.log((max_position - 1) / half) * (half - 1)
    )
    bucket = torch.where(offset.abs() <= half, offset, offset.sign() * log_bucket.long())
    return bucket + buckets - 1


def time_features(rate: torch.Tensor, scale: float, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=rate.device, dtype=torch.float32) / half
    )
    angles = rate.float()[:, None] * scale * freqs[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=eps)


class MDLMAttention(nn.Module):
    """score(i, j) = (q_i . k_j + q_i . pos_k[bucket(i - j)] + k_j . pos_q[bucket(i - j)]) / sqrt(3 d);
    values gated by GELU(gate); LayerNorm on the context before the output projection. in_proj rows
    are [query; key; value; gate]; its query-key rows also project the relative-position table."""

    def __init__(self, config: MDLMConfig):
        super().__init__()
        D = config.hidden_size
        self.heads, self.eps = config.num_attention_heads, config.layer_norm_eps
        self.head_size = D // config.num_attention_heads
        self.attention_dropout = config.attention_probs_dropout_prob
        self.position_dropout = (
            config.attention_probs_dropout_prob if config.position_dropout == "per-layer" else 0.0
        )
        self.in_proj = nn.Linear(D, 4 * D)
        self.out_proj = nn.Linear(D, D)

    def forward(self, x, positions, index, key_padding):
        B, L, D = x.shape
        H, d = self.heads, self.head_size
        # the 1 / sqrt(3 d) scale on the query rows scales all three score terms at once
        scale = torch.ones(4 * D, device=x.device)
        scale[:D] = 1.0 / math.sqrt(3 * d)
        weight = self.in_proj.weight * scale[:, None].to(self.in_proj.weight.dtype)
        bias = self.in_proj.bias * scale.to(self.in_proj.bias.dtype)
        qkv = F.linear(x, weight[: 3 * D], bias[: 3 * D])
        gate = F.linear(x, weight[3 * D :], bias[3 * D :])
        q, k, v = qkv.unflatten(-1, (3, H, d)).permute(2, 3, 0, 1, 4).contiguous().unbind(0)  # [H, B, L, d]

        positions = F.dropout(positions, self.position_dropout, self.training)
        table = F.linear(positions, weight[: 2 * D], bias[: 2 * D])
        pos_q, pos_k = table.unflatten(-1, (2, H, d)).permute(1, 2, 3, 0).unbind(0)  # [H, d, R]
        key_index, query_index = (i.expand(H, B, L, L) for i in index.unbind(0))
        content_to_position = (
            torch.matmul(q.reshape(H, B * L, d), pos_k).view(H, B, L, -1).gather(-1, query_index)
        )
        position_to_content = (
            torch.matmul(k.reshape(H, B * L, d), pos_q).view(H, B, L, -1).gather(-1, key_index)
        )
        scores = content_to_position + position_to_content.transpose(-1, -2)
        if key_padding is not None:
            # the lowest finite value, not -inf: a row of padding only would turn into NaN
            scores = scores.masked_fill(key_padding, torch.finfo(scores.dtype).min)
        scores = scores + torch.matmul(q, k.transpose(-1, -2))
        probs = F.dropout(scores.softmax(dim=-1), self.attention_dropout, self.training)
        context = torch.matmul(probs, v).permute(1, 2, 0, 3).reshape(B, L, D) * F.gelu(gate)
        return self.out_proj(layer_norm(context, self.eps))


class MDLMFeedForward(nn.Module):
    """GEGLU without biases: value * GELU(gate), LayerNorm, projection back."""

    def __init__(self, config: MDLMConfig):
        super().__init__()
        self.ffn_size, self.eps = config.intermediate_size, config.layer_norm_eps
        self.approximate = "tanh" if config.ffn_gelu == "tanh" else "none"
        self.in_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.out_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        value = F.linear(x, self.in_proj.weight[: self.ffn_size])
        gate = F.linear(x, self.in_proj.weight[self.ffn_size :])
        return self.out_proj(layer_norm(value * F.gelu(gate, approximate=self.approximate), self.eps))


class MDLMBlock(nn.Module):
    """Pre-norm residual block; with time conditioning, AdaLN: shift, scale and gate for the attention
    and the FFN from the time embedding."""

    def __init__(self, config: MDLMConfig):
        super().__init__()
        self.attention = MDLMAttention(config)
        self.feed_forward = MDLMFeedForward(config)
        self.eps = config.layer_norm_eps
        self.attention_dropout, self.dropout = config.attention_probs_dropout_prob, config.hidden_dropout_prob
        self.modulation = (
            nn.Linear(config.cond_dim, 6 * config.hidden_size) if config.time_conditioning else None
        )

    def forward(self, x, cond, positions, index, key_padding):
        def attend(h):
            return F.dropout(
                self.attention(h, positions, index, key_padding), self.attention_dropout, self.training
            )

        def feed(h):
            return F.dropout(self.feed_forward(h), self.dropout, self.training)

        if self.modulation is None:
            x = x + attend(layer_norm(x, self.eps))
            return x + feed(layer_norm(x, self.eps))
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = self.modulation(cond)[:, None, :].chunk(
            6, dim=-1
        )
        x = torch.addcmul(x, gate_a, attend(torch.addcmul(shift_a, layer_norm(x, self.eps), 1 + scale_a)))
        return torch.addcmul(x, gate_f, feed(torch.addcmul(shift_f, layer_norm(x, self.eps), 1 + scale_f)))


class MDLMPreTrainedModel(PreTrainedModel):
    config_class = MDLMConfig
    base_model_prefix = "mdlm"
    _no_split_modules = ["MDLMBlock"]
    # the masked-LM head's tensors, which the encoder alone and a classifier do not use
    _keys_to_ignore_on_load_unexpected = [r"^head_proj\.", r"^output_bias$"]

    def _init_weights(self, module):
        """Only for tensors the folder does not hold (a new classification head): LTG-BERT's init."""
        std = math.sqrt(2.0 / (5.0 * self.config.hidden_size))
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm) and module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, MDLMModel):
            nn.init.trunc_normal_(module.relative_embedding, std=std, a=-2 * std, b=2 * std)
        elif isinstance(module, MDLMForMaskedLM):
            nn.init.zeros_(module.output_bias)


class MDLMModel(MDLMPreTrainedModel):
    """The encoder; last_hidden_state is the input to the masked-LM head."""

    def __init__(self, config: MDLMConfig):
        super().__init__(config)
        D = config.hidden_size
        self.word_embedding = nn.Embedding(config.vocab_size, D)
        self.relative_embedding = nn.Parameter(torch.empty(2 * config.position_buckets - 1, D))
        self.relative_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        if config.time_conditioning:
            self.time_mlp = nn.Sequential(
                nn.Linear(config.time_features, config.cond_dim),
                nn.SiLU(),
                nn.Linear(config.cond_dim, config.cond_dim),
                nn.SiLU(),
            )
        self.blocks = nn.ModuleList(MDLMBlock(config) for _ in range(config.num_hidden_layers))
        self._index_cache = {}
        self.post_init()

    def get_input_embeddings(self):
        return self.word_embedding

    def set_input_embeddings(self, value):
        self.word_embedding = value

    def bucket_index(self, length: int, device) -> torch.Tensor:
        """[2, L, L]: the index gathering position scores over key rows, then over query rows; both
        give bucket(i - j) for query i and key j, or with position_terms "mirrored" the second gives
        bucket(j - i)."""
        key = (length, str(device))
        if key not in self._index_cache:
            c = self.config
            index = relative_buckets(length, c.position_buckets, c.max_position_embeddings)
            query_index = index if c.position_terms == "mirrored" else index.t().contiguous()
            self._index_cache[key] = torch.stack([index, query_index]).to(device)
        return self._index_cache[key]

    def conditioning_rate(self, input_ids, attention_mask) -> torch.Tensor:
        c = self.config
        if c.time_rate != "realised":
            return torch.full((input_ids.shape[0],), float(c.time_rate), device=input_ids.device)
        counted = (input_ids >= c.num_special_tokens) | (input_ids == c.mask_token_id)
        if attention_mask is not None:
            counted = counted & attention_mask.bool()
        return (1.0 / counted.sum(dim=-1).clamp(min=1).double()).float()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        rate=None,
        token_type_ids=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        c = self.config
        x = layer_norm(self.word_embedding(input_ids), c.layer_norm_eps)
        x = F.dropout(x, c.hidden_dropout_prob, self.training)
        shared = c.hidden_dropout_prob if c.position_dropout == "shared" else 0.0
        positions = F.dropout(self.relative_norm(self.relative_embedding), shared, self.training)
        index = self.bucket_index(input_ids.shape[1], input_ids.device)
        key_padding = None if attention_mask is None else ~attention_mask.bool()[:, None, :]
        cond = None
        if c.time_conditioning:
            if rate is None:
                rate = self.conditioning_rate(input_ids, attention_mask)
            cond = self.time_mlp(time_features(rate, c.time_scale, c.time_features).to(x.dtype))
        hidden = [x] if output_hidden_states else None
        for block in self.blocks:
            x = block(x, cond, positions, index, key_padding)
            if hidden is not None:
                hidden.append(x)
        out = BaseModelOutput(
            last_hidden_state=x, hidden_states=tuple(hidden) if hidden is not None else None
        )
        return out if return_dict is not False else out.to_tuple()


class MDLMForMaskedLM(MDLMPreTrainedModel):
    """Logits [B, T, V] at every position: LN -> Linear -> GELU -> LN -> the word embedding + bias."""

    def __init__(self, config: MDLMConfig):
        super().__init__(config)
        self.mdlm = MDLMModel(config)
        self.head_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        labels=None,
        rate=None,
        token_type_ids=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        c = self.config
        out = self.mdlm(input_ids, attention_mask, rate=rate, output_hidden_states=output_hidden_states)
        eps = c.layer_norm_eps
        h = layer_norm(F.gelu(self.head_proj(layer_norm(out.last_hidden_state, eps))), eps)
        h = F.dropout(h, c.hidden_dropout_prob if c.head_dropout else 0.0, self.training)
        logits = F.linear(h, self.mdlm.word_embedding.weight, self.output_bias)
        if c.suppress_mask_logit:
            mask_column = torch.tensor([c.mask_token_id], device=logits.device)
            logits = logits.index_fill(-1, mask_column, torch.finfo(logits.dtype).min)
        loss = None
        if labels is not None:  # -100 marks positions that are not predicted
            loss = F.cross_entropy(
                logits.float().view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100
            )
        result = MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
        return result if return_dict is not False else result.to_tuple()


class MDLMForSequenceClassification(MDLMPreTrainedModel):
    """A classification head on the <s> state (the first position), LTG-BERT style."""

    def __init__(self, config: MDLMConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        D = config.hidden_size
        dropout = (
            config.hidden_dropout_prob if config.classifier_dropout is None else config.classifier_dropout
        )
        self.mdlm = MDLMModel(config)
        self.classifier = nn.Sequential(
            nn.LayerNorm(D, eps=config.layer_norm_eps, elementwise_affine=False),
            nn.Linear(D, D),
            nn.GELU(),
            nn.LayerNorm(D, eps=config.layer_norm_eps, elementwise_affine=False),
            nn.Dropout(dropout),
            nn.Linear(D, config.num_labels),
        )
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        labels=None,
        rate=None,
        token_type_ids=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        out = self.mdlm(input_ids, attention_mask, rate=rate, output_hidden_states=output_hidden_states)
        logits = self.classifier(out.last_hidden_state[:, 0])
        loss = None
        if labels is not None:
            problem = self.config.problem_type
            if problem is None:
                integer = labels.dtype in (torch.long, torch.int)
                problem = (
                    "regression"
                    if self.num_labels == 1
                    else ("single_label_classification" if integer else "multi_label_classification")
                )
                self.config.problem_type = problem
            if problem == "regression":
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1))
            elif problem == "single_label_classification":
                loss = F.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1))
            else:
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        result = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
        return result if return_dict is not False else result.to_tuple()
