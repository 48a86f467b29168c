import pytest

from core.config import apply_overrides, load_config
from core.trainer import plan_steps


def plan(budget, steps_per_epoch=100, **keys):
    cfg = apply_overrides(
        load_config("smoke"), [f"train.budget={budget}"] + [f"train.{k}={v}" for k, v in keys.items()]
    )
    return plan_steps(cfg, steps_per_epoch)


def test_steps_budget_is_taken_as_is():
    p = plan("250 steps")
    assert (p.total_steps, p.total_epochs) == (250, 3)


def test_epochs_budget_counts_global_batches():
    p = plan("10 epochs", steps_per_epoch=25, global_batch=128)
    assert p.steps_per_epoch == 25 and p.total_steps == 250 and p.total_epochs == 10


def test_tokens_budget_uses_sequences_times_length():
    # a global batch of 64 sequences of 64 tokens (smoke's length)
    p = plan("1M tokens", global_batch=64)
    assert p.total_steps == -(-1_000_000 // (64 * 64))


@pytest.mark.parametrize("budget", ["0 steps", "-3 epochs"])
def test_empty_budgets_are_refused(budget):
    from core.errors import UserError

    with pytest.raises(UserError):
        plan(budget)
