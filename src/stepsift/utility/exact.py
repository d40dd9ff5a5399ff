"""The exact one-step utility, batched.

For candidate i: U_i = L_A(theta) - L_A(theta + step(g_i)), with g_i the gradient of
the candidate's own mean token loss and L_A the mean of the anchors' losses.

Batched with `torch.func`: per-sample gradients come from `vmap(grad(...))` over the
candidates, the stepped parameter sets are stacked along a new leading dim, and the
anchor losses at all of them come from one `vmap` over those parameter sets. No model
is copied and no Python loop runs per candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from stepsift.proxy.base import Batch, Params, Proxy
from stepsift.utility.steps import StepRule

# How the anchors are evaluated at a stack of parameter sets (see AnchorLoss.at_stack).
STRATEGIES = ("auto", "loop", "vmap")


@dataclass
class UtilityResult:
    utility: Tensor  # (B,) float64: anchor loss before minus after the simulated step
    loss: Tensor  # (B,) float64: the candidate's own loss before any step


def _single(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Give vmap's per-sample slices their batch dim back."""
    return {k: v.unsqueeze(0) for k, v in tensors.items()}


class AnchorLoss:
    """The anchor loss L_A at one parameter set or at a stack of them."""

    def __init__(
        self, proxy: Proxy, anchors: Batch, max_sequences: int = 256, strategy: str = "auto"
    ):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
        self.proxy = proxy
        self.strategy = strategy
        self.n = len(anchors)
        self.max_sequences = max_sequences
        self.anchors = anchors

    def at(self, params: Params) -> float:
        """L_A at a single parameter set."""
        with torch.no_grad():
            chunk = self.max_sequences
            total = sum(
                self.proxy.per_sample_loss(params, self.anchors.select(slice(s, s + chunk)).tensors)
                .double()
                .sum()
                for s in range(0, self.n, chunk)
            )
        return float(total) / self.n

    def at_stack(self, stacked: Params, n_sets: int) -> Tensor:
        """L_A at each of `n_sets` parameter sets stacked along dim 0: shape (n_sets,).

        On CUDA one vmap evaluates all sets at once. On CPU a plain loop over the sets,
        each a dense forward of the anchors, which beat the vmapped batched-weight
        matmuls in benchmarks/exact_cost.py (see benchmarks/RESULTS.md; both are exact).
        No model is copied either way.
        """
        strategy = self.strategy
        if strategy == "auto":
            strategy = "vmap" if self.proxy.device.type == "cuda" else "loop"
        if strategy == "vmap":
            return self._at_stack_vmap(stacked, n_sets)
        sets = ({name: v[i] for name, v in stacked.items()} for i in range(n_sets))
        after = [self.at(params) for params in sets]
        return torch.tensor(after, dtype=torch.float64, device=self.proxy.device)

    def _at_stack_vmap(self, stacked: Params, n_sets: int) -> Tensor:
        # one vmapped call evaluates n_sets x chunk sequences; bound that product
        chunk = max(1, self.max_sequences // max(1, n_sets))

        def summed(params: Params, tensors: dict[str, Tensor]) -> Tensor:
            return self.proxy.per_sample_loss(params, tensors).sum()

        total = torch.zeros(n_sets, dtype=torch.float64, device=self.proxy.device)
        for s in range(0, self.n, chunk):
            part = self.anchors.select(slice(s, s + chunk)).tensors
            total += vmap(summed, in_dims=(0, None))(stacked, part).double()
        return total / self.n


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

    def per_sample_grads(self, batch: Batch) -> tuple[Params, Tensor]:
        def loss_one(params: Params, tensors: dict[str, Tensor]) -> Tensor:
            return self.proxy.per_sample_loss(params, _single(tensors))[0]

        return vmap(grad_and_value(loss_one), in_dims=(None, 0))(self.params, batch.tensors)

    def __call__(self, batch: Batch) -> UtilityResult:
        # no_grad keeps autograd from also tracking the module's own parameters;
        # torch.func's transforms still differentiate what they are asked to
        with torch.no_grad():
            grads, losses = self.per_sample_grads(batch)
            deltas = self.step_rule(grads)
            stepped = {name: self.params[name] + deltas[name] for name in self.params}
            after = self.anchor_loss.at_stack(stepped, len(batch))
        return UtilityResult(utility=self.base_anchor_loss - after, loss=losses.double())
