"""A ToV-style baseline (arXiv 2510.00386, "train on validation"), written for the speed
benchmark from the paper's idea: take the anchors' own optimizer step once, then score
every candidate by forward passes alone.

    θ' = θ + step(g_A)          the anchors' step, under the same rule as the candidates'
    score_i = l_i(θ) - l_i(θ')  how much the anchors' step lowers the candidate's loss

It asks the transposed question of the one-step utility (what the anchors' step does to
the candidate, not what the candidate's step does to the anchors); to first order under
SGD both are η <g_A, g_i>. Cost: two forward passes per candidate, after one anchor
gradient.
"""

from __future__ import annotations

import torch

from stepsift.proxy.base import Batch, Proxy
from stepsift.utility.anchors import AnchorLoss
from stepsift.utility.base import UtilityResult
from stepsift.utility.steps import StepRule


class ToVStyle:
    name = "ToV-style"
    columns: frozenset[str] = frozenset()

    def __init__(self, proxy: Proxy, anchors: Batch, step_rule: StepRule):
        self.proxy = proxy
        self.params = proxy.step_parameters()
        anchor_loss = AnchorLoss(proxy, anchors)
        grad, self.base_anchor_loss = anchor_loss.gradient(self.params)
        step = step_rule({n: g.unsqueeze(0) for n, g in grad.items()})
        self.stepped = {n: p + step[n][0] for n, p in self.params.items()}

    def __call__(self, batch: Batch) -> UtilityResult:
        with torch.no_grad():
            before = self.proxy.per_sample_loss(self.params, batch.tensors).double()
            after = self.proxy.per_sample_loss(self.stepped, batch.tensors).double()
        return UtilityResult(utility=before - after, loss=before)

    def describe(self) -> dict:
        return {}
