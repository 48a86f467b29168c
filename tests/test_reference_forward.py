"""core.model against the naive forward of SPEC section 4 (tests/reference_model.py), in float64."""

import pytest
import torch

from core.config import Config
from core.model import build_model
from core.released import to_released
from tests.reference_model import PAD_ID, bucket, reference_logits

LAYERS, HEADS, BUCKETS, LENGTH, VOCAB = 2, 2, 8, 24, 300


def model(time_conditioning=True, **changes):
    cfg = Config()
    m = cfg.model
    m.hidden_size, m.num_layers, m.num_heads, m.ffn_size, m.cond_dim = 16, LAYERS, HEADS, 40, 8
    m.position_buckets, m.time_conditioning = BUCKETS, time_conditioning  # small buckets: log buckets at L 24
    cfg.data.vocab_size = VOCAB
    for key, value in changes.items():
        setattr(m, key, value)
    torch.manual_seed(0)
    net = build_model(cfg).double().eval()
    with torch.no_grad():  # AdaLN starts at zero; make every modulation and bias count
        for name, p in net.named_parameters():
            if "modulation" in name or name.endswith("bias"):
                p.normal_(0, 0.3)
    return cfg, net


def inputs(padded: bool):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(16, VOCAB, (2, LENGTH), generator=gen)
    ids[:, 0] = 1  # <s>
    mask = torch.ones(2, LENGTH, dtype=torch.bool)
    if padded:
        ids[1, 15:] = PAD_ID
        mask[1, 15:] = False
    return ids, mask, torch.tensor([0.13, 0.71], dtype=torch.float64)


def compare(cfg, net, padded, **variant):
    ids, mask, rate = inputs(padded)
    with torch.no_grad():
        ours = net(ids, attention_mask=mask, rate=rate)
    state = to_released(net.state_dict(), LAYERS)
    ref = reference_logits(
        state,
        num_layers=LAYERS,
        num_heads=HEADS,
        buckets=BUCKETS,
        eps=cfg.model.layer_norm_eps,
        input_ids=ids,
        attention_mask=mask,
        rate=rate,
        **variant,
    )
    assert ours.shape == ref.shape == (2, LENGTH, VOCAB)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    return ours, ref


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("time_conditioning", [True, False])
def test_model_equals_the_naive_reference(padded, time_conditioning):
    cfg, net = model(time_conditioning)
    compare(cfg, net, padded)


def test_ablation_keys_change_the_forward_as_named():
    """time_scale, the GEGLU's GELU and the mirrored position index each match the reference's variant,
    and each moves the logits beyond the tolerance (so the comparison can tell them apart)."""
    released = compare(*model(), padded=True)[0]
    for key, value, variant in [
        ("time_scale", 1000.0, {"time_scale": 1000.0}),
        ("ffn_gelu", "exact", {"ffn_gelu": "exact"}),
        ("position_terms", "mirrored", {"position_terms": "mirrored"}),
    ]:
        ours, _ = compare(*model(**{key: value}), padded=True, **variant)
        assert (ours - released).abs().max() > 5e-5, key  # well above the 1e-5 tolerance


def test_buckets_match_spec_examples():
    # offsets up to half the buckets are their own row; beyond, rows grow logarithmically to max_position
    assert [bucket(o, 32, 512) - 31 for o in (0, 1, -1, 16, -16)] == [0, 1, -1, 16, -16]
    assert (
        bucket(17, 32, 512) - 31 == 17
        and bucket(511, 32, 512) - 31 == 31
        and bucket(5000, 32, 512) - 31 == 31
    )
    assert bucket(-511, 32, 512) - 31 == -31


def test_released_init_and_dropout_sites():
    """Init as released: FFN weights of layer i shrink by sqrt(1 / (2 (1 + i))); the time MLP keeps
    PyTorch's default (uniform) init; dropout in the head and on the position table of every layer."""
    cfg = Config()
    cfg.model.hidden_size, cfg.model.num_layers, cfg.model.num_heads, cfg.model.ffn_size = 64, 4, 2, 256
    cfg.data.vocab_size = VOCAB
    torch.manual_seed(0)
    net = build_model(cfg)
    std = (2 / (5 * 64)) ** 0.5
    for i, block in enumerate(net.blocks):
        scale = (1 / (2 * (1 + i))) ** 0.5
        assert block.feed_forward.in_proj.weight.std().item() == pytest.approx(std * scale * 0.88, rel=0.1)
        assert block.attention.in_proj.weight.std().item() == pytest.approx(std * 0.88, rel=0.1)
    bound = 1 / 256**0.5  # PyTorch's default: uniform within 1 / sqrt(fan_in), std bound / sqrt(3)
    first = net.time_mlp[0].weight
    assert first.abs().max().item() <= bound and first.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)
    cfg.model.init = "plain"
    torch.manual_seed(0)
    plain = build_model(cfg)
    assert plain.blocks[3].feed_forward.in_proj.weight.std().item() == pytest.approx(std * 0.88, rel=0.1)
    assert plain.time_mlp[0].weight.std().item() == pytest.approx(std * 0.88, rel=0.1)
    assert net.head_dropout.p == 0.1 and plain.blocks[0].attention.position_dropout == 0.1
