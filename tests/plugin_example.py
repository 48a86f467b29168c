"""A user's plugin, as `MDLM_TUI_PLUGINS=tests.plugin_example` names it: one schedule, one masking kind,
one sampler and one suite, registered from outside the package (tests/test_plugins.py uses them)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.masking import MaskingKind, maskable, register_masking_kind
from core.sampling import Sampler, draw_tokens, register_sampler
from core.schedules import Schedule, register_schedule
from core.suites import Item, Suite, register_suite


@register_schedule
class PluginPower(Schedule):
    """alpha = 1 - t^exponent: r = t^exponent, |alpha'| = exponent t^(exponent - 1)."""

    name = "plugin-power"
    params = {"exponent": 2.0}  # its own key: schedule.exponent
    ranges = {"exponent": "(0, inf)"}  # checked with the rest of the config
    sampling = True

    def __init__(self, exponent: float = 2.0):
        self.exponent = exponent

    def _rate_and_slope(self, t, progress, generator):
        return t**self.exponent, self.exponent * t ** (self.exponent - 1)


@register_masking_kind
class PluginPositional(MaskingKind):
    """Later positions masked more: q_l proportional to l + 1, with mean r over maskable positions."""

    name = "plugin-positional"

    def probs(self, ids, rates, epoch, total_epochs):
        where = maskable(ids).float()
        ramp = torch.arange(1, ids.shape[1] + 1, device=ids.device, dtype=torch.float32) * where
        mean = ramp.sum(1, keepdim=True) / where.sum(1, keepdim=True).clamp_min(1)
        return (rates.to(ids.device, torch.float32)[:, None] * ramp / mean.clamp_min(1e-12)).clamp(0, 1)


@dataclass
class LeftToRightParams:
    per_step: int = 1


@register_sampler
class PluginLeftToRight(Sampler):
    """Unmask the leftmost masked position each step."""

    name = "plugin-left-to-right"
    Params = LeftToRightParams

    def update(self, step, ids, where, predict):
        if not where[0].numel():
            return
        k = where[0].numel() if step == self.cfg.steps else min(self.params.per_step, where[0].numel())
        ids[where[0][:k], where[1][:k]] = draw_tokens(predict()[:k], self.generator, self.greedy)


PAIRS = [
    ("the cat sat on the mat.", "the sat cat on mat the."),
    ("a dog found an apple.", "dog a an found apple."),
]


@register_suite("plugin-pairs", describe="two word-order pairs")
def plugin_pairs(spec, request):
    items = [Item(uid="word_order", field="syntax", term=None, good=good, bad=bad) for good, bad in PAIRS]
    return Suite(name=spec, items=items, source=__name__)
