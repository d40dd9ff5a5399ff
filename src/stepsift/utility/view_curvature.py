"""The curvature estimate towards each anchor view (fold, group): what `curvature` writes
as `fold_utility` and `group_utility`.

A view v is a subset A_v of the anchors, and its utility is the mean loss drop over A_v.
The expansion of utility/curvature.py holds for each view with its own pieces, at the same
centre θ + c (c is the step every candidate shares, so it does not depend on the view):

    U_iv ≈ [L_v(θ) - L_v(θ + c)] - <g_v(θ + c), b_i> - ½ b_iᵀ G_v(θ + c) b_i

The linear terms of all views are one (B, P) x (P, V) product. Each view's Gauss-Newton
matrix gets its own sketch from its own anchors' label draws (the same draws the whole
set's sketch is built from: one pass over the anchors sets up every view), truncated to a
rank in proportion to the view's share of the anchors (at least `MIN_VIEW_RANK`), so the
views together cost about as many directions per candidate as the whole-anchor sketch for
each kind of view.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stepsift.proxy.base import Batch, Params, Proxy
from stepsift.utility.anchor_views import AnchorViews
from stepsift.utility.anchors import WeightedExpansions
from stepsift.utility.ggn_sketch import GGNSketch, vector_bytes

MIN_VIEW_RANK = 4  # below this a view's curvature is mostly sketch noise


def view_rank(rank: int | None, n_view: int, n_anchors: int) -> int | None:
    """A view's share of the whole sketch's rank (None: untruncated, as the whole)."""
    if rank is None:
        return None
    return max(MIN_VIEW_RANK, math.ceil(rank * n_view / n_anchors))


def view_bytes(params: Params, views: AnchorViews, rank: int | None, label_draws: int) -> int:
    """What the views keep in memory: per view an anchor gradient and its sketch's
    directions, each a copy of the step's parameters."""
    per_vector = vector_bytes(params)
    vectors = 0
    for rows in views.members():
        r = view_rank(rank, len(rows), views.n_anchors)
        vectors += 1 + (r if r is not None else label_draws * len(rows))
    return per_vector * vectors


class ViewCurvature:
    """Per-view offsets, anchor gradients and GGN sketches; `__call__` gives (B, V).

    Built from the whole set's pass over the anchors, not one pass per view: each view's
    anchor gradient and offset are columns of the whole set's weighted expansions
    (utility/anchors.py: `expand_weighted`), and its sketch takes its own anchors' share of
    the label draws the whole-set sketch is built from (`add_draws`, then `finish`)."""

    def __init__(
        self,
        proxy: Proxy,
        anchors: Batch,
        views: AnchorViews,
        expansion: WeightedExpansions,
        rank: int | None,
        label_draws: int,
        max_bytes: int,
        seed: int = 0,
    ):
        params = proxy.step_parameters()
        columns = slice(1, 1 + views.n_views)  # column 0 is the whole set's
        self.grads = {n: g[:, columns].to(params[n].dtype) for n, g in expansion.grads.items()}
        self.offsets = expansion.offsets[columns]
        self.members = [torch.tensor(rows, dtype=torch.long) for rows in views.members()]
        self.sketches = []
        for v, rows in enumerate(views.members()):
            r = view_rank(rank, len(rows), len(anchors))
            n_vectors = label_draws * len(rows)
            # the views of one kind (folds, groups) share the memory the whole-set sketch
            # may take, so set-up holds at most three times `max_bytes`; a view whose
            # draws do not fit its share streams them (frequent directions), which kept
            # its ranking worse (benchmarks/label_draws.py: fold ρ 0.64-0.70 against 0.80)
            budget = max_bytes * len(rows) // len(anchors)
            fits = n_vectors * vector_bytes(params) <= budget
            self.sketches.append(GGNSketch.empty(
                n_vectors, expansion.center, label_draws, max_bytes, seed + 1 + v, rank=r,
                streaming=not fits,
            ))  # fmt: skip

    def add_draws(self, grads: Params, rows: slice, weights: Tensor) -> None:
        """Give each view's sketch its anchors' rows of the whole set's draws for the
        anchors `rows` (`weights`: every anchor's sqrt(T_a / K), utility/ggn_sketch.py)."""
        for members, sketch in zip(self.members, self.sketches, strict=True):
            mine = members[(members >= rows.start) & (members < rows.stop)]
            if len(mine):
                local = (mine - rows.start).to(next(iter(grads.values())).device)
                sketch.add(
                    {n: g.index_select(0, local) for n, g in grads.items()},
                    weights[mine] / len(members) ** 0.5,
                )

    def finish(self) -> None:
        for sketch in self.sketches:
            sketch.finish()
        del self.members

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
