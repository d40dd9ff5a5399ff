"""The exact one-step utility, batched.

For candidate i: U_i = L_A(theta) - L_A(theta + step(g_i)), with g_i the gradient of
the candidate's own mean token loss and L_A the mean of the anchors' losses.

Batched with `torch.func`: per-sample gradients come from `vmap(grad(...))` over the
candidates, the stepped parameter sets are stacked along a new leading dim, and the
anchor losses at all of them come from one `vmap` over those parameter sets. No model
is copied and no Python loop runs per candidate.
"""

from __future__ import annotations

import torch

from stepsift.proxy.base import Batch, Proxy
from stepsift.utility.anchors import AnchorLoss
from stepsift.utility.base import UtilityResult
from stepsift.utility.gradients import per_sample_grads
from stepsift.utility.steps import StepRule


class ExactUtility:
    """Really take each candidate's step, evaluate the anchors, and report the drop."""

    name = "exact"

    def __init__(
        self,
        proxy: Proxy,
        anchors: Batch,
        step_rule: StepRule,
        max_sequences: int = 256,
        strategy: str = "auto",
    ):
        self.proxy = proxy
        self.step_rule = step_rule
        self.params = proxy.step_parameters()
        self.anchor_loss = AnchorLoss(proxy, anchors, max_sequences, strategy)
        self.base_anchor_loss = self.anchor_loss.at(self.params)
        self.max_sequences = max_sequences

    def __call__(self, batch: Batch) -> UtilityResult:
        # no_grad keeps autograd from also tracking the module's own parameters;
        # torch.func's transforms still differentiate what they are asked to
        with torch.no_grad():
            grads, losses = per_sample_grads(self.proxy, self.params, batch.tensors)
            deltas = self.step_rule(grads)
            stepped = {name: self.params[name] + deltas[name] for name in self.params}
            after = self.anchor_loss.at_stack(stepped, len(batch))
        return UtilityResult(utility=self.base_anchor_loss - after, loss=losses.double())

    def describe(self) -> dict:
        return {}
