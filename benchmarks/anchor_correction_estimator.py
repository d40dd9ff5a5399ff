"""The curvature estimate, corrected by the exact utility on a few anchors (a variant
tried for issue 17 that lost to the plain anchor subsample: it lives here, beside the
benchmark that measured it, not in the package).

    U_i ≈ Q_A(i) + [E_S(i) - Q_S(i)]

Q_A is `curvature`'s second-order estimate on all anchors; S is a fixed random subset of
k anchors, E_S the exact utility on S alone (k anchor forwards per candidate, at the
candidate's really stepped parameters) and Q_S the same second-order estimate built on S.
E_S - Q_S is what the quadratic misses on S (the higher orders: under the default Adam
step the candidate's own update is large enough that they reorder candidates,
benchmarks/adam_fidelity.py), used as an estimate of what it misses on all anchors: a
control variate with coefficient 1, so the estimate is exact where the expansion is and
the quadratic carries the part of the anchor set that S does not see.

Per candidate: a per-sample gradient, the update, two sketch products and k anchor
forwards (about k + 5 forward-equivalents on the built-in proxy, against `exact`'s
|A| + 5). benchmarks/anchor_correction.py measures it against `exact`, `curvature` and
the plain subsample E_S.
"""

from __future__ import annotations

import torch

from stepsift.proxy.base import Batch, Proxy
from stepsift.utility.anchors import AnchorLoss
from stepsift.utility.base import UtilityResult
from stepsift.utility.curvature import CurvatureUtility
from stepsift.utility.gradients import per_sample_grads
from stepsift.utility.steps import StepRule
from stepsift.utility.subsample import DEFAULT_EXACT_ANCHORS, anchor_subset


class CorrectedCurvatureUtility:
    """`curvature` plus the exact-minus-quadratic residual measured on k anchors."""

    name = "curvature-corrected"
    columns: frozenset[str] = frozenset()

    def __init__(
        self,
        proxy: Proxy,
        anchors: Batch,
        step_rule: StepRule,
        exact_anchors: int = DEFAULT_EXACT_ANCHORS,
        seed: int = 0,
        **curvature_options,
    ):
        self.proxy, self.step_rule = proxy, step_rule
        self.params = proxy.step_parameters()
        self.rows = anchor_subset(len(anchors), exact_anchors, seed)
        subset = anchors.take(self.rows)
        self.full = CurvatureUtility(proxy, anchors, step_rule, seed=seed, **curvature_options)
        self.sub = CurvatureUtility(proxy, subset, step_rule, seed=seed, **curvature_options)
        self.sub_loss = AnchorLoss(proxy, subset)
        self.base_anchor_loss = self.full.base_anchor_loss
        self.base_sub_loss = self.sub.base_anchor_loss
        self.shared = self.full.shared  # the shared step depends on the rule alone

    def __call__(self, batch: Batch) -> UtilityResult:
        with torch.no_grad():
            grads, losses = per_sample_grads(self.proxy, self.params, batch.tensors)
            deltas = self.step_rule(grads)
            own = {n: d - self.shared[n] for n, d in deltas.items()}
            stepped = {n: self.params[n] + deltas[n] for n in self.params}
            exact_sub = self.base_sub_loss - self.sub_loss.at_stack(stepped, len(batch))
            residual = exact_sub - self.sub.expansion(own)
            utility = self.full.expansion(own) + residual
        return UtilityResult(utility=utility, loss=losses.double())

    def describe(self) -> dict:
        return {"exact_anchors": len(self.rows), **self.full.describe()}
