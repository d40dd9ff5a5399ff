"""The curvature estimate towards each anchor view (fold, group): what `curvature` writes
as `fold_utility` and `group_utility`.

A view v is a subset A_v of the anchors, and its utility is the mean loss drop over A_v.
The expansion of utility/curvature.py holds for each view with its own pieces, at the same
centre θ + c (c is the step every candidate shares, so it does not depend on the view):

    U_iv ≈ [L_v(θ) - L_v(θ + c)] - <g_v(θ + c), b_i> - ½ b_iᵀ G_v(θ + c) b_i

The linear terms of all views are one (B, P) x (P, V) product. Each view's Gauss-Newton
matrix gets its own sketch from its own anchors, truncated to a rank in proportion to the
view's share of the anchors (at least `MIN_VIEW_RANK`), so the views together cost about
as many directions per candidate as the whole-anchor sketch for each kind of view.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stepsift.proxy.base import Batch, Params, Proxy
from stepsift.utility.anchor_views import AnchorViews
from stepsift.utility.anchors import expand_at_shared_step
from stepsift.utility.ggn_sketch import GGNSketch
from stepsift.utility.steps import StepRule

MIN_VIEW_RANK = 4  # below this a view's curvature is mostly sketch noise


def view_rank(rank: int | None, n_view: int, n_anchors: int) -> int | None:
    """A view's share of the whole sketch's rank (None: untruncated, as the whole)."""
    if rank is None:
        return None
    return max(MIN_VIEW_RANK, math.ceil(rank * n_view / n_anchors))


def view_bytes(params: Params, views: AnchorViews, rank: int | None, label_draws: int) -> int:
    """What the views keep in memory: per view an anchor gradient and its sketch's
    directions, each a copy of the step's parameters."""
    per_vector = sum(p.numel() * p.element_size() for p in params.values())
    vectors = 0
    for rows in views.members():
        r = view_rank(rank, len(rows), views.n_anchors)
        vectors += 1 + (r if r is not None else label_draws * len(rows))
    return per_vector * vectors


class ViewCurvature:
    """Per-view offsets, anchor gradients and GGN sketches; `__call__` gives (B, V)."""

    def __init__(
        self,
        proxy: Proxy,
        anchors: Batch,
        views: AnchorViews,
        step_rule: StepRule,
        rank: int | None,
        label_draws: int,
        max_bytes: int,
        seed: int = 0,
    ):
        params = proxy.step_parameters()
        members = views.members()
        offsets, grads, self.sketches = [], [], []
        for v, rows in enumerate(members):
            part = anchors.take(rows)
            expansion = expand_at_shared_step(proxy, part, params, step_rule)
            offsets.append(expansion.offset)
            grads.append(expansion.anchor_grad)
            r = view_rank(rank, len(rows), len(anchors))
            # each view draws its own labels: seed offset by the view's index
            self.sketches.append(
                GGNSketch(
                    proxy, part, expansion.center, label_draws, max_bytes, seed + 1 + v, rank=r
                )
            )
        self.offsets = torch.tensor(offsets, dtype=torch.float64, device=proxy.device)
        self.grads = {
            n: torch.stack([g[n].reshape(-1) for g in grads], dim=1) for n in params
        }  # (P_n, V) per parameter

    @classmethod
    def from_state(cls, state: dict, device) -> ViewCurvature:
        """The views another worker built (`export`), without recomputing them."""
        views = cls.__new__(cls)
        views.offsets = state["offsets"].to(device)
        views.grads = {n: g.to(device) for n, g in state["grads"].items()}
        views.sketches = [GGNSketch.from_state(s, device) for s in state["sketches"]]
        return views

    def __call__(self, own: Params) -> Tensor:
        """(B, V) utilities towards each view of the per-sample own updates `own`."""
        linear = sum((d.reshape(d.shape[0], -1) @ self.grads[n]).double() for n, d in own.items())
        quad = torch.stack([s.quadratic(own) for s in self.sketches], dim=1)
        return self.offsets.unsqueeze(0) - linear - 0.5 * quad

    def export(self) -> dict:
        return {
            "offsets": self.offsets,
            "grads": self.grads,
            "sketches": [s.export() for s in self.sketches],
        }

    @property
    def n_directions(self) -> int:
        return sum(s.size for s in self.sketches)
