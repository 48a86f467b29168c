"""The paper's released model format: its state-dict names and configuration keys, mapped to ours.

The released `Bert` keeps the attention's query-key and value-gate projections as two matrices and
the FFN as an `nn.Sequential`; core.model fuses the two attention matrices into one `in_proj` (rows
[query; key; value; gate]) and names modules after what they do. The mapping is a pure renaming plus
that concatenation, so weights round-trip exactly in both directions.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Ours -> released, for the tensors that are renamed one to one; {i} is the layer index.
_GLOBAL = {
    "word_embedding.weight": "embedding.word_embedding.weight",
    "relative_embedding": "embedding.relative_embedding",
    "relative_norm.weight": "embedding.relative_layer_norm.weight",
    "relative_norm.bias": "embedding.relative_layer_norm.bias",
    "time_mlp.0.weight": "sigma_map.mlp.0.weight",
    "time_mlp.0.bias": "sigma_map.mlp.0.bias",
    "time_mlp.2.weight": "sigma_map.mlp.2.weight",
    "time_mlp.2.bias": "sigma_map.mlp.2.bias",
    "head_proj.weight": "classifier.nonlinearity.1.weight",
    "head_proj.bias": "classifier.nonlinearity.1.bias",
    "output_bias": "classifier.nonlinearity.5.bias",
}
_PER_LAYER = {
    "blocks.{i}.attention.out_proj.weight": "transformer.attention_layers.{i}.out_proj.weight",
    "blocks.{i}.attention.out_proj.bias": "transformer.attention_layers.{i}.out_proj.bias",
    "blocks.{i}.feed_forward.in_proj.weight": "transformer.mlp_layers.{i}.mlp.1.weight",
    "blocks.{i}.feed_forward.out_proj.weight": "transformer.mlp_layers.{i}.mlp.4.weight",
    "blocks.{i}.modulation.weight": "transformer.adaLN_modulations.{i}.weight",
    "blocks.{i}.modulation.bias": "transformer.adaLN_modulations.{i}.bias",
}
# Fused in ours, two matrices there: in_proj = cat(in_proj_qk, in_proj_vg) along the output rows.
_FUSED = (
    "blocks.{i}.attention.in_proj.{kind}",
    "transformer.attention_layers.{i}.in_proj_qk.{kind}",
    "transformer.attention_layers.{i}.in_proj_vg.{kind}",
)
# The head's output matrix is the word embedding (tied); the relative bucket table is a derived buffer.
TIED_OUTPUT = "classifier.nonlinearity.5.weight"
DERIVED_BUFFER = ".position_indices"


def name_pairs(num_layers: int) -> list[tuple[str, str]]:
    """(ours, released) for every one-to-one tensor of a model with num_layers layers."""
    pairs = list(_GLOBAL.items())
    for i in range(num_layers):
        pairs += [(ours.format(i=i), theirs.format(i=i)) for ours, theirs in _PER_LAYER.items()]
    return pairs


def fused_names(num_layers: int) -> list[tuple[str, str, str]]:
    return [
        tuple(n.format(i=i, kind=kind) for n in _FUSED)
        for i in range(num_layers)
        for kind in ("weight", "bias")
    ]


def to_released(state: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """Our state dict -> the released `Bert` state dict (without its derived position buffers).
    Tensors absent from `state` (a model without time conditioning) are left out."""
    out = {theirs: state[ours] for ours, theirs in name_pairs(num_layers) if ours in state}
    for ours, qk, vg in fused_names(num_layers):
        out[qk], out[vg] = state[ours].chunk(2, dim=0)
    out[TIED_OUTPUT] = state["word_embedding.weight"]
    return out


def from_released(released: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """The released `Bert` state dict -> ours. Raises KeyError naming the first missing tensor."""
    out = {ours: released[theirs] for ours, theirs in name_pairs(num_layers) if theirs in released}
    for ours, qk, vg in fused_names(num_layers):
        out[ours] = torch.cat([released[qk], released[vg]], dim=0)
    return out


def unused_released_keys(released: dict[str, Tensor], num_layers: int) -> list[str]:
    """Keys of a released state dict that the mapping does not read (other than the tied output matrix
    and the derived position buffers): a sign that the file holds another model."""
    known = {theirs for _, theirs in name_pairs(num_layers)}
    known |= {name for _, qk, vg in fused_names(num_layers) for name in (qk, vg)}
    known.add(TIED_OUTPUT)
    return sorted(k for k in released if k not in known and not k.endswith(DERIVED_BUFFER))
