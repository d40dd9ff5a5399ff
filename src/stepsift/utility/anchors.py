"""The anchor loss L_A (the mean of the anchors' own losses) and its gradient.

Every estimator measures a candidate against the anchors through these: the exact
utility evaluates L_A at stepped parameters; the fast estimators expand L_A once, where
the update every candidate shares lands (`expand_at_shared_step`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import vmap

from stepsift.proxy.base import Batch, Params, Proxy
from stepsift.utility.gradients import autograd_grad_and_value, per_sample_grads
from stepsift.utility.steps import StepRule, shared_step

# How the anchors are evaluated at a stack of parameter sets (see AnchorLoss.at_stack).
STRATEGIES = ("auto", "loop", "vmap")


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

    def chunks(self, size: int) -> Iterator[dict[str, Tensor]]:
        """The anchors' tensors, `size` sequences at a time."""
        for s in range(0, self.n, size):
            yield self.anchors.select(slice(s, s + size)).tensors

    def summed(self, params: Params, tensors: dict[str, Tensor]) -> Tensor:
        return self.proxy.per_sample_loss(params, tensors).sum()

    def at(self, params: Params) -> float:
        """L_A at a single parameter set."""
        with torch.no_grad():
            total = sum(  # summed in float64, as the stepped losses are compared to it
                self.proxy.per_sample_loss(params, part).double().sum()
                for part in self.chunks(self.max_sequences)
            )
        return float(total) / self.n

    def per_anchor(self, params: Params) -> tuple[float, Tensor]:
        """L_A (summed exactly as `at` sums it, so bit for bit the same) and each anchor's
        own loss l_a, shape (n,) float64, at a single parameter set."""
        with torch.no_grad():
            parts = [
                self.proxy.per_sample_loss(params, part).double()
                for part in self.chunks(self.max_sequences)
            ]
            total = sum(part.sum() for part in parts)
        return float(total) / self.n, torch.cat(parts)

    def gradient(self, params: Params) -> tuple[Params, float]:
        """g_A, the gradient of L_A at `params`, and L_A there."""
        total: Params = {n: torch.zeros_like(p) for n, p in params.items()}
        loss = 0.0
        for part in self.chunks(self.max_sequences):
            g, value = autograd_grad_and_value(self.summed, params, part)
            for n in total:
                total[n] += g[n]
            loss += float(value)
        return {n: g / self.n for n, g in total.items()}, loss / self.n

    def at_stack(self, stacked: Params, n_sets: int) -> Tensor:
        """L_A at each of `n_sets` parameter sets stacked along dim 0: shape (n_sets,).

        On CUDA one vmap evaluates all sets at once. On CPU a plain loop over the sets,
        each a dense forward of the anchors, which beat the vmapped batched-weight
        matmuls in benchmarks/exact_cost.py (see benchmarks/RESULTS.md; both are exact).
        No model is copied either way.
        """
        if self._strategy() == "vmap":
            return self._at_stack_vmap(stacked, n_sets)
        sets = ({name: v[i] for name, v in stacked.items()} for i in range(n_sets))
        after = [self.at(params) for params in sets]
        return torch.tensor(after, dtype=torch.float64, device=self.proxy.device)

    def at_stack_per_anchor(self, stacked: Params, n_sets: int) -> tuple[Tensor, Tensor]:
        """`at_stack` (the same values, bit for bit) and each anchor's loss at each set:
        shapes (n_sets,) and (n_sets, n), float64."""
        if self._strategy() == "vmap":
            return self._at_stack_vmap(stacked, n_sets, per_anchor=True)
        sets = ({name: v[i] for name, v in stacked.items()} for i in range(n_sets))
        means, each = zip(*(self.per_anchor(params) for params in sets), strict=True)
        device = self.proxy.device
        return torch.tensor(means, dtype=torch.float64, device=device), torch.stack(each)

    def _strategy(self) -> str:
        if self.strategy == "auto":
            return "vmap" if self.proxy.device.type == "cuda" else "loop"
        return self.strategy

    def _summed_and_each(self, params: Params, tensors: dict[str, Tensor]):
        losses = self.proxy.per_sample_loss(params, tensors)
        return losses.sum(), losses

    def _at_stack_vmap(self, stacked: Params, n_sets: int, per_anchor: bool = False):
        # one vmapped call evaluates n_sets x chunk sequences; bound that product
        chunk = max(1, self.max_sequences // max(1, n_sets))
        total = torch.zeros(n_sets, dtype=torch.float64, device=self.proxy.device)
        if per_anchor:  # the same sum inside the vmap as below, plus the losses it sums
            each = []
            for part in self.chunks(chunk):
                summed, losses = vmap(self._summed_and_each, in_dims=(0, None))(stacked, part)
                total += summed.double()
                each.append(losses.double())
            return total / self.n, torch.cat(each, dim=1)
        for part in self.chunks(chunk):
            total += vmap(self.summed, in_dims=(0, None))(stacked, part).double()
        return total / self.n


@dataclass(frozen=True)
class SharedStepExpansion:
    """Where the fast estimators expand the anchor loss: at θ + c, with c the part of the
    update every candidate shares (0 for SGD; Adam's warm momentum, often most of the
    step), so that only each candidate's own part of the update is approximated."""

    shared: Params  # c
    center: Params  # θ + c
    base_loss: float  # L_A(θ)
    offset: float  # L_A(θ) - L_A(θ + c), computed exactly
    anchor_grad: Params  # g_A at θ + c


@dataclass(frozen=True)
class WeightedExpansions:
    """Expansions at θ + c of several weighted means of the anchors' losses at once (the
    whole set's mean, each anchor view's), from one per-anchor pass."""

    shared: Params  # c
    center: Params  # θ + c
    base_loss: float  # L_A(θ), the plain mean
    offsets: Tensor  # (C,) float64: each weighted mean's drop from θ to θ + c
    grads: dict[str, Tensor]  # per parameter, (numel, C) float64: each mean's gradient at θ + c


def expand_weighted(
    proxy: Proxy,
    anchors: Batch,
    params: Params,
    step_rule: StepRule,
    weights: Tensor,
    chunk: int = 32,
) -> WeightedExpansions:
    """The expansions of the means `weights` (n_anchors, C) defines, from each anchor's loss
    at θ (one forward) and its gradient and loss at θ + c (one per-sample pass): the whole
    set and every view cost one pass, not one each."""
    shared = shared_step(step_rule, params)
    center = {n: p + shared[n] for n, p in params.items()}
    base_loss, before = AnchorLoss(proxy, anchors).per_anchor(params)
    weights = weights.to(torch.float64)
    after, grads = [], {}
    for s in range(0, len(anchors), chunk):
        part = anchors.select(slice(s, s + chunk)).tensors
        with torch.no_grad():
            each, losses = per_sample_grads(proxy, center, part)
        w = weights[s : s + chunk].to(losses.device)
        for n, g in each.items():
            add = g.reshape(g.shape[0], -1).T.double() @ w
            grads[n] = add if n not in grads else grads[n] + add
        after.append(losses.double())
    offsets = (before - torch.cat(after)) @ weights.to(before.device)
    return WeightedExpansions(shared, center, base_loss, offsets, grads)


def expand_at_shared_step(
    proxy: Proxy, anchors: Batch, params: Params, step_rule: StepRule
) -> SharedStepExpansion:
    anchor_loss = AnchorLoss(proxy, anchors)
    shared = shared_step(step_rule, params)
    center = {n: p + shared[n] for n, p in params.items()}
    base_loss = anchor_loss.at(params)
    anchor_grad, center_loss = anchor_loss.gradient(center)
    return SharedStepExpansion(shared, center, base_loss, base_loss - center_loss, anchor_grad)
