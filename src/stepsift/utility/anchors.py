"""The anchor loss L_A (the mean of the anchors' own losses) and its gradient.

Every estimator measures a candidate against the anchors through these: the exact
utility evaluates L_A at stepped parameters, the fast estimators need its gradient g_A
once, at the proxy's parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from stepsift.proxy.base import Batch, Params, Proxy


def anchor_gradient(proxy: Proxy, anchors: Batch, params: Params, max_sequences: int = 256):
    """g_A, the gradient of the mean anchor loss at `params`, and that loss (float)."""
    total: Params = {n: torch.zeros_like(p) for n, p in params.items()}
    loss = 0.0

    def summed(p: Params, tensors: dict[str, Tensor]) -> Tensor:
        return proxy.per_sample_loss(p, tensors).sum()

    for s in range(0, len(anchors), max_sequences):
        part = anchors.select(slice(s, s + max_sequences)).tensors
        g, value = grad_and_value(summed)(params, part)
        for n in total:
            total[n] += g[n]
        loss += float(value)
    return {n: g / len(anchors) for n, g in total.items()}, loss / len(anchors)


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
