import copy
import math

import pytest
import torch
from torch import nn

from core.config import Config, TrainConfig
from core.model import Attention, build_model
from core.optim import EMA, Lamb, build_optimizer, lr_multiplier, param_groups, released_matrix_blocks


def small_model(seed=0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Embedding(10, 6), nn.LayerNorm(6), nn.Linear(6, 4))


def one_step(optimizer, params, grads):
    for p, g in zip(params, grads):
        p.grad = g.clone()
    optimizer.step()


def test_lamb_scales_decayed_steps_to_the_weight_norm():
    """First step: Adam's update is ~sign(g); with decay, the trust ratio makes ||step|| = lr * ||w||."""
    decayed = nn.Parameter(torch.full((4, 4), 3.0))
    plain = nn.Parameter(torch.full((4,), 3.0))
    lr = 0.01
    opt = Lamb([{"params": [decayed], "weight_decay": 0.1}, {"params": [plain], "weight_decay": 0.0}], lr=lr)
    before_decayed, before_plain = decayed.detach().clone(), plain.detach().clone()
    grads = [
        torch.randn(4, 4, generator=torch.Generator().manual_seed(0)),
        torch.tensor([1.0, -2.0, 0.5, -0.1]),
    ]
    one_step(opt, [decayed, plain], grads)
    step_decayed = (decayed - before_decayed).norm().item()
    assert step_decayed == pytest.approx(lr * before_decayed.norm().item(), rel=1e-5)  # 0.12, not 0.04
    torch.testing.assert_close(
        plain - before_plain, -lr * torch.tensor([1.0, -1.0, 1.0, -1.0]), rtol=1e-5, atol=1e-7
    )


def test_lamb_matches_a_hand_written_reference_for_several_steps():
    gen = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(3, 5, generator=gen))
    opt = Lamb([w], lr=0.05, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.1)
    ref, m, v = w.detach().clone(), torch.zeros(3, 5), torch.zeros(3, 5)
    for step in range(1, 4):
        g = torch.randn(3, 5, generator=gen)
        one_step(opt, [w], [g])
        m, v = 0.9 * m + 0.1 * g, 0.98 * v + 0.02 * g * g
        update = (m / (1 - 0.9**step)) / ((v / (1 - 0.98**step)).sqrt() + 1e-8) + 0.1 * ref
        ref = ref - 0.05 * (ref.norm() / update.norm()) * update
        torch.testing.assert_close(w.detach(), ref)


def test_lamb_per_matrix_trust_ratio_matches_a_hand_written_reference():
    """A fused [4D, D] weight split into 2 row blocks: each block scaled by ||w_blk|| / ||upd_blk||."""
    D = 3
    gen = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(4 * D, D, generator=gen))
    with torch.no_grad():
        w[2 * D :] *= 4.0  # blocks of clearly different norms, so one ratio for the whole tensor differs
    opt = Lamb([w], lr=0.05, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.1, row_blocks={w: 2})
    ref, m, v = w.detach().clone(), torch.zeros(4 * D, D), torch.zeros(4 * D, D)
    for step in range(1, 4):
        g = torch.randn(4 * D, D, generator=gen)
        one_step(opt, [w], [g])
        m, v = 0.9 * m + 0.1 * g, 0.98 * v + 0.02 * g * g
        update = (m / (1 - 0.9**step)) / ((v / (1 - 0.98**step)).sqrt() + 1e-8) + 0.1 * ref
        blocks = []
        for rows in (slice(0, 2 * D), slice(2 * D, 4 * D)):
            w_blk, u_blk = ref[rows], update[rows]
            blocks.append(w_blk - 0.05 * (w_blk.norm() / u_blk.norm()) * u_blk)
        ref = torch.cat(blocks)
        torch.testing.assert_close(w.detach(), ref)


def tiny_mdlm(seed=0) -> nn.Module:
    cfg = Config()
    cfg.model.hidden_size, cfg.model.num_layers, cfg.model.num_heads = 16, 2, 2
    cfg.model.ffn_size, cfg.model.cond_dim, cfg.data.vocab_size = 32, 8, 300
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model(cfg)


def first_step_block_moves(lamb_trust: str) -> tuple[list[float], list[float], float, float]:
    """One LAMB step on a tiny MDLM; for the first layer's in_proj weight: the norms of each half's move,
    lr * each half's norm, the whole move's norm and lr * the whole weight's norm."""
    model = tiny_mdlm()
    weight = model.blocks[0].attention.in_proj.weight
    D = weight.shape[1]
    with torch.no_grad():
        weight[2 * D :] *= 3.0  # halves of clearly different norms
    cfg = TrainConfig(lamb_trust=lamb_trust)
    opt = build_optimizer(model, cfg)
    before = weight.detach().clone()
    gen = torch.Generator().manual_seed(1)
    one_step(opt, list(model.parameters()), [torch.randn(p.shape, generator=gen) for p in model.parameters()])
    delta = weight.detach() - before
    halves = (slice(0, 2 * D), slice(2 * D, 4 * D))
    moves = [delta[h].norm().item() for h in halves]
    targets = [cfg.lr * before[h].norm().item() for h in halves]
    return moves, targets, delta.norm().item(), cfg.lr * before.norm().item()


def test_build_optimizer_gives_each_released_matrix_its_own_trust_ratio():
    model = tiny_mdlm()
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(attentions) == 2
    assert released_matrix_blocks(model) == {a.in_proj.weight: 2 for a in attentions}

    # First step: the trust ratio makes ||move|| = lr * ||w|| for each block that has its own ratio.
    moves, targets, _, _ = first_step_block_moves("per-matrix")
    for move, target in zip(moves, targets):
        assert move == pytest.approx(target, rel=1e-5)

    moves, targets, whole_move, whole_target = first_step_block_moves("per-tensor")
    assert whole_move == pytest.approx(whole_target, rel=1e-5)
    for move, target in zip(moves, targets):
        assert move != pytest.approx(target, rel=0.1)


def test_lamb_rejects_row_blocks_that_do_not_divide_the_rows():
    w = nn.Parameter(torch.ones(5, 3))
    with pytest.raises(ValueError, match="5, 3"):
        Lamb([w], weight_decay=0.1, row_blocks={w: 2})


def test_lamb_handles_zero_weights_and_missing_grads():
    zero = nn.Parameter(torch.zeros(2, 2))
    idle = nn.Parameter(torch.ones(2, 2))
    opt = Lamb([zero, idle], lr=0.1, weight_decay=0.1)
    zero.grad = torch.ones(2, 2)
    opt.step()
    assert torch.isfinite(zero).all() and zero.abs().sum() > 0  # trust ratio falls back to 1
    assert torch.equal(idle.detach(), torch.ones(2, 2)) and idle not in opt.state


@pytest.mark.parametrize("kind", ["lamb", "adamw"])
def test_state_dict_round_trip_gives_identical_next_steps(kind):
    cfg = TrainConfig(optimizer=kind, lr=1e-2)
    model = small_model()
    opt = build_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(0)
    grads = [[torch.randn(p.shape, generator=gen) for p in model.parameters()] for _ in range(4)]
    for g in grads[:2]:
        one_step(opt, list(model.parameters()), g)
    clone = copy.deepcopy(model)
    restored = build_optimizer(clone, cfg)
    restored.load_state_dict(copy.deepcopy(opt.state_dict()))
    for g in grads[2:]:
        one_step(opt, list(model.parameters()), g)
        one_step(restored, list(clone.parameters()), g)
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


def test_param_groups_decay_matrices_only():
    model = small_model()
    groups = param_groups(model, 0.1)
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert decayed == {id(model[0].weight), id(model[2].weight)}  # embedding and linear weight
    assert {id(p) for p in groups[1]["params"]} == {id(model[1].weight), id(model[1].bias), id(model[2].bias)}


def test_build_optimizer_uses_the_recipe():
    cfg = TrainConfig()
    opt = build_optimizer(small_model(), cfg)
    assert isinstance(opt, Lamb)
    assert opt.defaults["lr"] == 7e-3 and opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-8
    assert isinstance(build_optimizer(small_model(), TrainConfig(optimizer="adamw")), torch.optim.AdamW)


def test_lr_multiplier_shape():
    total, warm, cool, floor = 1000, 0.02, 0.1, 0.1
    values = [lr_multiplier(s, total, warm, cool, floor) for s in range(total + 1)]
    assert values[0] == 0.0
    assert values[20] == pytest.approx(1.0)  # peak right after warm-up
    assert values[10] == pytest.approx(0.5)
    assert values[900] == pytest.approx(floor)  # cosine ends at min_ratio where cool-down starts
    assert values[460] == pytest.approx(floor + (1 - floor) / 2)  # cosine half way
    assert values[950] == pytest.approx(floor / 2)
    assert values[total] == 0.0
    assert all(a <= b for a, b in zip(values[:21], values[1:21]))
    assert all(a >= b for a, b in zip(values[20:], values[21:]))


def test_lr_multiplier_without_warm_up_or_cool_down():
    assert lr_multiplier(0, 100, 0.0, 0.0, 0.1) == 1.0
    assert lr_multiplier(100, 100, 0.0, 0.0, 0.1) == pytest.approx(0.1)
    assert lr_multiplier(150, 100, 0.0, 0.0, 0.1) == pytest.approx(0.1)


def test_ema_decay_warms_up_then_caps():
    ema = EMA(small_model(), 0.999)
    assert ema.decay_for(1) == pytest.approx(2 / 11)
    assert ema.decay_for(100) == pytest.approx(101 / 110)
    assert ema.decay_for(100_000) == 0.999


def test_ema_update_follows_the_formula():
    model = small_model()
    start = model[2].weight.detach().clone()
    ema = EMA(model, 0.999)
    with torch.no_grad():
        model[2].weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["2.weight"], start + (1 - 2 / 11))
    ema.update(model)
    torch.testing.assert_close(ema.shadow["2.weight"], start + 1 - (2 / 11) * (3 / 12))


def test_swapped_uses_ema_weights_and_restores_exactly():
    model = small_model()
    ema = EMA(model, 0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    live = copy.deepcopy(model.state_dict())
    with ema.swapped(model):
        torch.testing.assert_close(model[2].weight, ema.shadow["2.weight"])
        assert not torch.equal(model[2].weight, live["2.weight"])
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, live[name])


def test_swapped_restores_even_after_an_error():
    model = small_model()
    ema = EMA(model, 0.9)
    with torch.no_grad():
        model[2].bias.fill_(5.0)
    with pytest.raises(RuntimeError), ema.swapped(model):
        raise RuntimeError("dev loss failed")
    assert torch.all(model[2].bias == 5.0)


def test_ema_state_dict_round_trip():
    model = small_model()
    ema = EMA(model, 0.99)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    other = EMA(small_model(seed=1), 0.5)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 1 and other.decay == 0.99
    target = small_model(seed=2)
    other.copy_to(target)
    torch.testing.assert_close(target[0].weight, ema.shadow["0.weight"])
    with pytest.raises(ValueError, match="does not match"):
        EMA(nn.Linear(2, 2), 0.9).load_state_dict(ema.state_dict())


def test_ema_shadow_is_float32_for_low_precision_models():
    model = small_model().to(torch.bfloat16)
    ema = EMA(model, 0.999)
    assert all(t.dtype == torch.float32 for t in ema.shadow.values())
    ema.update(model)
    assert math.isfinite(ema.shadow["2.weight"].sum().item())
