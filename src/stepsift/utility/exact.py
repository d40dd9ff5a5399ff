"""The exact one-step utility, batched.

For candidate i: U_i = L_A(theta) - L_A(theta + step(g_i)), with g_i the gradient of
the candidate's own mean token loss and L_A the mean of the anchors' losses.

Batched with `torch.func`: per-sample gradients come from `vmap(grad(...))` over the
candidates, the stepped parameter sets are stacked along a new leading dim, and the
anchor losses at all of them come from one `vmap` over those parameter sets. No model
is copied and no Python loop runs per candidate.

With anchor views (folds, groups: utility/anchor_views.py), each anchor's own loss drop
is kept, a (B, n_anchors) matrix, and one product with the views' weights gives every
fold's and group's utility; `utility` itself is summed exactly as without views. With a
sketch, the per-sample gradients the step is made from are also projected
(utility/sketch.py).
"""

from __future__ import annotations

import torch

from stepsift.proxy.base import Batch, Proxy
from stepsift.utility.anchor_views import AnchorViews, active, columns_made
from stepsift.utility.anchors import AnchorLoss
from stepsift.utility.base import UtilityResult
from stepsift.utility.gradients import per_sample_grads
from stepsift.utility.sketch import gradient_sketch
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
        views: AnchorViews | None = None,
        sketch_dim: int = 0,
        sketch_seed: int = 0,
    ):
        self.proxy = proxy
        self.step_rule = step_rule
        self.params = proxy.step_parameters()
        self.anchor_loss = AnchorLoss(proxy, anchors, max_sequences, strategy)
        self.max_sequences = max_sequences
        self.views = active(views)
        self.sketch = gradient_sketch(self.params, sketch_dim, sketch_seed)
        self.columns = columns_made(self.views, self.sketch)
        if self.views is None:
            self.base_anchor_loss = self.anchor_loss.at(self.params)
            return
        if self.views.n_anchors != self.anchor_loss.n:
            raise ValueError(f"views of {self.views.n_anchors} anchors for {self.anchor_loss.n}")
        self.base_anchor_loss, self.base_each = self.anchor_loss.per_anchor(self.params)
        self.weights = self.views.weights(device=proxy.device)

    def __call__(self, batch: Batch) -> UtilityResult:
        # no_grad keeps autograd from also tracking the module's own parameters;
        # torch.func's transforms still differentiate what they are asked to
        with torch.no_grad():
            grads, losses = per_sample_grads(self.proxy, self.params, batch.tensors)
            deltas = self.step_rule(grads)
            stepped = {name: self.params[name] + deltas[name] for name in self.params}
            folds = groups = None
            if self.views is None:
                after = self.anchor_loss.at_stack(stepped, len(batch))
            else:
                after, each = self.anchor_loss.at_stack_per_anchor(stepped, len(batch))
                per_view = (self.base_each.unsqueeze(0) - each) @ self.weights
                folds, groups = self.views.split(per_view)
            sketch = self.sketch(grads) if self.sketch is not None else None
        return UtilityResult(
            utility=self.base_anchor_loss - after,
            loss=losses.double(),
            fold_utility=folds,
            group_utility=groups,
            sketch=sketch,
        )

    def describe(self) -> dict:
        return {}
