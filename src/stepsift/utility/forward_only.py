"""The forward-only estimate: the anchors' side computed once, the pool scored by
directional derivatives alone (ToV's economy, arXiv 2510.00386), with a low-rank
second-order correction.

With the candidate's own update linearised as b_i = -P ⊙ g_i (P = lr for SGD; Adam from
the warm-up state with its second moment frozen, `first_order.preconditioner`), the
second-order expansion around θ + c (c: the update every candidate shares) is

    U_i ≈ [L_A(θ) - L_A(θ + c)] + <P ⊙ g_A, g_i> - ½ g_iᵀ (P G_A P) g_i,

G_A the anchors' Gauss-Newton matrix. The first two terms are `first-order`. The third
needs g_i in every direction G_A curves in; with the GGN sketch W (utility/ggn_sketch.py,
rows s_j with Σ_j (s_j · δ)² ≈ δᵀ G_A δ) and A = W P,

    g_iᵀ (P G_A P) g_i ≈ ||A g_i||² ≈ Σ_{k ≤ K} <d_k, g_i>²,

with d_k = σ_k v_k the top K right singular directions of A (the strongest curvature
the candidate's step can meet). So each batch needs K + 1 derivatives of the candidates'
own losses along fixed directions: one forward-mode pass with K + 1 tangents, and no
per-sample gradient. K = all of the sketch's rank gives curvature's expansion with the
linearised step (benchmarks/scoring_speed.py measures both against exact).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torch.func import jvp, vmap

from stepsift.proxy.base import Batch, Params, Proxy
from stepsift.utility.anchors import expand_at_shared_step
from stepsift.utility.base import UtilityResult
from stepsift.utility.first_order import Directional, directional_fd, preconditioner
from stepsift.utility.ggn_sketch import (
    DEFAULT_MAX_BYTES,
    DEFAULT_RANK,
    GGNSketch,
    vector_bytes,
)
from stepsift.utility.ghost import proxy_dots
from stepsift.utility.steps import StepRule

# K: curvature directions besides the anchors' own one. Each costs about one more tangent
# of the forward-mode pass, so one keeps the estimator near first-order's cost
# (benchmarks/RESULTS.md gives fidelity and cost for K = 0, 1, 4, 16).
DEFAULT_DIRECTIONS = 1

# the draws its figures in benchmarks/RESULTS.md were measured with (curvature's default,
# DEFAULT_LABEL_DRAWS, is lower since issue 31; forward was not measured again)
FORWARD_LABEL_DRAWS = 16


def derivatives_jvp(
    proxy: Proxy, params: Params, tensors: Mapping[str, Tensor], tangents: Params
) -> tuple[Tensor, Tensor]:
    """Per-sample losses (B,) and their derivatives along each stacked tangent (M, B),
    one forward-mode pass vectorised over the tangents."""

    def along(tangent: Params) -> tuple[Tensor, Tensor]:
        return jvp(lambda p: proxy.per_sample_loss(p, tensors), (params,), (tangent,))

    loss, derivs = vmap(along, out_dims=(None, 0))(tangents)
    return loss, derivs


def derivatives_fd(
    proxy: Proxy, params: Params, tensors: Mapping[str, Tensor], tangents: Params
) -> tuple[Tensor, Tensor]:
    """The same by central finite differences, one tangent at a time (`directional_fd`)."""
    m = next(iter(tangents.values())).shape[0]
    rows = [directional_fd(proxy, params, tensors, {n: t[j] for n, t in tangents.items()})
            for j in range(m)]  # fmt: skip
    return rows[0][0], torch.stack([d for _, d in rows])


def derivatives_ghost(
    proxy: Proxy, params: Params, tensors: Mapping[str, Tensor], tangents: Params
) -> tuple[Tensor, Tensor]:
    """The same from ghost products of one batched backward (`ghost.py`), all tangents at
    once."""
    return proxy_dots(proxy, params, dict(tensors), tangents)


DERIVATIVES = {"jvp": derivatives_jvp, "ghost": derivatives_ghost, "fd": derivatives_fd}


class ForwardUtility:
    """offset + <P g_A, g_i> - ½ Σ_k <d_k, g_i>², every term a directional derivative
    of the candidate's own loss: no per-sample gradient."""

    name = "forward"
    # one expansion for all anchors (no per-anchor values), no per-sample gradients
    columns: frozenset[str] = frozenset()

    def __init__(
        self,
        proxy: Proxy,
        anchors: Batch,
        step_rule: StepRule,
        directions: int = DEFAULT_DIRECTIONS,
        label_draws: int = FORWARD_LABEL_DRAWS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        seed: int = 0,
        mode: str = "auto",
        state: dict | None = None,
    ):
        if directions < 0:
            raise ValueError(f"directions must be 0 or more, got {directions}")
        self.directional_ways = Directional(mode, DERIVATIVES)  # refuses an unknown mode
        self.proxy = proxy
        self.params = proxy.step_parameters()
        if state is not None:  # the tangents another worker computed
            self.base_anchor_loss = float(state["base_anchor_loss"])
            self.offset = float(state["offset"])
            self.trace_kept = float(state["trace_kept"])
            self.streamed = bool(state["streamed"])
            self.tangents = {n: state["tangents"][n].to(proxy.device) for n in self.params}
            return
        expansion = expand_at_shared_step(proxy, anchors, self.params, step_rule)
        self.base_anchor_loss, self.offset = expansion.base_loss, expansion.offset
        precond = preconditioner(step_rule, self.params)
        # tangent 0: P ⊙ g_A (the linear term); then the K curvature directions
        linear = {n: precond[n] * expansion.anchor_grad[n] for n in self.params}
        curved: Params = {n: p.new_zeros((0, *p.shape)) for n, p in self.params.items()}
        self.trace_kept = 0.0
        self.streamed = False
        if directions:
            # the sketch of W P (vectors scaled as drawn), cut to its top K directions
            # d_k = σ_k v_k by the sketch itself. Over max_bytes it is hashed into buckets,
            # which costs little while they far outnumber the directions curvature keeps
            # (DEFAULT_RANK); with fewer (a full-parameter HF proxy: one or two 0.5 GB
            # vectors) it is streamed through a frequent-directions buffer of 2K rows
            n_bytes = vector_bytes(self.params)
            buckets = max_bytes // max(n_bytes, 1)
            self.streamed = buckets < min(label_draws * len(anchors), 4 * DEFAULT_RANK)
            sketch = GGNSketch(
                proxy, anchors, expansion.center, label_draws, max_bytes, seed,
                rank=directions, streaming=self.streamed, scale=precond,
                # a streamed buffer holds 2K rows plus a chunk; unstreamed, the chunking
                # curvature uses, so that both draw the same labels from one seed
                chunk=max(1, min(32, buckets - 2 * directions)) if self.streamed else 32,
            )  # fmt: skip
            curved, self.trace_kept = sketch.vectors, sketch.trace_kept
        self.tangents = {n: torch.cat([linear[n].unsqueeze(0), curved[n]]) for n in self.params}

    @property
    def directions(self) -> int:
        return next(iter(self.tangents.values())).shape[0] - 1

    def export_state(self) -> dict:
        """The tangents and constants, for a worker to load instead of recomputing."""
        return {
            "base_anchor_loss": self.base_anchor_loss,
            "offset": self.offset,
            "trace_kept": self.trace_kept,
            "streamed": self.streamed,
            "tangents": self.tangents,
        }

    def derivatives(self, tensors: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        return self.directional_ways(self.proxy, self.params, tensors, self.tangents)

    def __call__(self, batch: Batch) -> UtilityResult:
        with torch.no_grad():
            loss, derivs = self.derivatives(batch.tensors)
        derivs = derivs.double()
        utility = self.offset + derivs[0] - 0.5 * (derivs[1:] ** 2).sum(dim=0)
        return UtilityResult(utility=utility, loss=loss.double())

    def describe(self) -> dict:
        return {
            "directional": self.directional_ways.describe(),
            "curvature_directions": self.directions,
            "curvature_share_kept": round(self.trace_kept, 4),
            **({"curvature_sketch": "streamed"} if self.streamed else {}),
        }
