"""The curvature-corrected estimate: a second-order Taylor step with a sketched GGN.

    U_i = L_A(θ) - L_A(θ + δ_i) ≈ -<g_A, δ_i> - ½ δ_iᵀ G_A δ_i

δ_i is the optimizer's real update for candidate i's gradient (SGD or Adam from the
warm-up state, computed exactly from the per-sample gradient: no linearisation), and
G_A is the Gauss-Newton matrix of the anchor loss. The first-order term alone ranks
candidates well only at tiny steps; at realistic steps, samples with large gradients
overshoot, and the quadratic term is what sees it (benchmarks/scoring_speed.py measures
both against the exact utility).

G_A is never formed. For cross-entropy, G_A is the expected outer product of gradients
taken with labels *sampled from the model's own predictions*: for anchor a with T_a
supervised tokens and a label draw y ~ p_θ, f_a = ∇ mean_t ℓ_t(y_t) has
E[f_a f_aᵀ] = G_a / T_a, so G_A = E[(1/|A|) Σ_a T_a f_a f_aᵀ]. The sketch is the set of
vectors s_j = sqrt(T_a / (|A| K)) f_a over K label draws per anchor, and
δᵀ G_A δ ≈ Σ_j (s_j · δ)². When K·|A| vectors would not fit `max_bytes`, they are hashed
into fewer buckets with random signs (a count sketch over the vectors, still unbiased).

The sketch S (rows s_j) is then cut to its top `rank` directions: with S Sᵀ = U Λ Uᵀ,
W = U_rᵀ S keeps the r largest eigenvalues of Sᵀ S (the strongest curvature), so
||W δ||² ≈ δᵀ G_A δ at r / (K·|A|) of the cost; the share of the trace kept is recorded.

Per candidate this costs a per-sample gradient (about a training step), the update, and
a product with the r sketch directions; the sketch is built once, from K·|A| per-sample
gradients.
"""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from stepsift.proxy.base import Batch, Params, Proxy
from stepsift.utility.anchor_views import AnchorViews, active, columns_made
from stepsift.utility.anchors import expand_weighted
from stepsift.utility.base import UtilityResult
from stepsift.utility.ggn_sketch import (
    DEFAULT_LABEL_DRAWS,
    DEFAULT_MAX_BYTES,
    DEFAULT_RANK,
    GGNSketch,
    draw_weights,
    label_draw_gradients,
)
from stepsift.utility.gradients import per_sample_grads
from stepsift.utility.sketch import gradient_sketch
from stepsift.utility.steps import StepRule
from stepsift.utility.view_curvature import ViewCurvature, view_bytes


class CurvatureUtility:
    """-<g_A, δ_i> - ½ δ_iᵀ G_A δ_i, with the exact update δ_i and a sketched G_A.

    The expansion is taken around θ + c, with c the update every candidate shares
    (Adam's warm momentum, often most of the step): L_A(θ) - L_A(θ + c) is computed
    exactly once, and only each candidate's own part b_i = δ_i - c is approximated:
        U_i ≈ [L_A(θ) - L_A(θ + c)] - <g_A(θ + c), b_i> - ½ b_iᵀ G_A(θ + c) b_i
    For SGD c = 0 and this is the plain expansion at θ.
    """

    name = "curvature"

    def __init__(
        self,
        proxy: Proxy,
        anchors: Batch,
        step_rule: StepRule,
        label_draws: int = DEFAULT_LABEL_DRAWS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        seed: int = 0,
        rank: int | None = DEFAULT_RANK,
        sketch_dim: int = 0,
        sketch_seed: int = 0,
        state: dict | None = None,
        views: AnchorViews | None = None,
        streaming: bool = False,
        grad_autocast: str = "off",
        progress: bool = False,
    ):
        self.proxy, self.step_rule = proxy, step_rule
        # the candidates' gradients only (gradients.py); the anchor state stays full precision
        self.grad_autocast = grad_autocast
        self.params = proxy.step_parameters()
        self.views = active(views)
        # per-view expansions hold a parameter-sized vector per direction: on a large model
        # (an HF proxy at full parameters) they would not fit, and the columns are left out
        self.views_skipped = ""
        if self.views is not None:
            need = view_bytes(self.params, self.views, rank, label_draws)
            if need > max_bytes:
                self.views_skipped = (
                    f"per-view curvature needs {need / 2**30:.1f} GiB, over the sketch's "
                    f"{max_bytes / 2**30:.1f} GiB"
                )
                self.views = None
        # the gradient sketch (a column of the score file), not the GGN sketch
        self.gradient_sketch = gradient_sketch(self.params, sketch_dim, sketch_seed)
        self.columns = columns_made(self.views, self.gradient_sketch)
        self.view_curvature: ViewCurvature | None = None
        if self.views is not None and self.views.n_anchors != len(anchors):
            raise ValueError(f"views of {self.views.n_anchors} anchors for {len(anchors)}")
        if state is not None:  # the anchor direction and GGN sketch another worker built
            device = proxy.device
            self.shared = {n: state["shared"][n].to(device) for n in self.params}
            self.anchor_grad = {n: state["anchor_grad"][n].to(device) for n in self.params}
            self.base_anchor_loss = float(state["base_anchor_loss"])
            self.offset = float(state["offset"])
            self.sketch = GGNSketch.from_state(state["ggn"], device)
            if self.views is not None:
                self.view_curvature = ViewCurvature.from_state(state["views"], device)
            return
        # one per-anchor pass gives the whole set's expansion and every view's
        n = len(anchors)
        whole = torch.full((n, 1), 1.0 / n, dtype=torch.float64)
        weights = whole if self.views is None else torch.cat([whole, self.views.weights()], 1)
        expansion = expand_weighted(proxy, anchors, self.params, step_rule, weights)
        self.shared = expansion.shared
        self.anchor_grad = {
            name: expansion.grads[name][:, 0].to(p.dtype).reshape(p.shape)
            for name, p in self.params.items()
        }
        self.base_anchor_loss, self.offset = expansion.base_loss, float(expansion.offsets[0])
        self.sketch = GGNSketch.empty(
            label_draws * len(anchors), expansion.center, label_draws, max_bytes, seed,
            rank=rank, streaming=streaming,
        )  # fmt: skip
        if self.views is not None:
            self.view_curvature = ViewCurvature(
                proxy, anchors, self.views, expansion, rank, label_draws, max_bytes, seed
            )
        self._draw_sketches(anchors, expansion.center, label_draws, seed, progress)

    def _draw_sketches(
        self, anchors: Batch, center: Params, label_draws: int, seed: int, progress: bool
    ) -> None:
        """One pass of label draws over the anchors feeds the whole set's sketch and every
        view's (before: one pass per kind of view, three times the set-up)."""
        weights = draw_weights(anchors, label_draws)
        chunk = 32
        steps = label_draws * -(-len(anchors) // chunk)
        bar = tqdm(total=steps, desc="anchor set-up", unit="draw", disable=not progress,
                   leave=False, file=sys.stderr, dynamic_ncols=True)  # fmt: skip
        generator = torch.Generator().manual_seed(seed)
        with bar:
            for grads, rows in label_draw_gradients(
                self.proxy, anchors, center, label_draws, generator, chunk, bar.update
            ):
                self.sketch.add(grads, weights[rows] / len(anchors) ** 0.5)  # no-op if dropped
                if self.view_curvature is not None:
                    self.view_curvature.add_draws(grads, rows, weights)
        self.sketch.finish()
        if self.view_curvature is not None:
            self.view_curvature.finish()

    def __call__(self, batch: Batch) -> UtilityResult:
        with torch.no_grad():
            grads, losses = per_sample_grads(
                self.proxy, self.params, batch.tensors, self.grad_autocast
            )
            own = {n: d - self.shared[n] for n, d in self.step_rule(grads).items()}
            utility = self.expansion(own)
            sketch = self.gradient_sketch(grads) if self.gradient_sketch is not None else None
            folds = groups = None
            if self.view_curvature is not None:
                folds, groups = self.views.split(self.view_curvature(own))
        return UtilityResult(
            utility=utility,
            loss=losses.double(),
            fold_utility=folds,
            group_utility=groups,
            sketch=sketch,
        )

    def expansion(self, own: dict) -> torch.Tensor:
        """The second-order estimate for candidates whose own parts of the update (b_i,
        stacked along dim 0) are `own`: shape (B,) float64."""
        linear = sum(
            (d.reshape(d.shape[0], -1) @ self.anchor_grad[n].reshape(-1)).double()
            for n, d in own.items()
        )
        return self.offset - linear - 0.5 * self.sketch.quadratic(own)

    def export_state(self) -> dict:
        """The anchor direction, constants and GGN sketch, for a worker to load."""
        return {
            "shared": self.shared,
            "anchor_grad": self.anchor_grad,
            "base_anchor_loss": self.base_anchor_loss,
            "offset": self.offset,
            "ggn": self.sketch.export(),
            **({"views": self.view_curvature.export()} if self.view_curvature else {}),
        }

    def describe(self) -> dict:
        return {
            "ggn_label_draws": self.sketch.label_draws,
            "ggn_sketch_size": self.sketch.size,
            "ggn_sketch_hashed": self.sketch.hashed,
            "ggn_trace_kept": round(self.sketch.trace_kept, 4),
            **({"ggn_dropped": self.sketch.dropped} if self.sketch.dropped else {}),
            **({"ggn_streamed": True} if getattr(self.sketch, "streamed", False) else {}),
            **(
                {"ggn_view_directions": self.view_curvature.n_directions}
                if self.view_curvature
                else {}
            ),
            **({"views_skipped": self.views_skipped} if self.views_skipped else {}),
            **({"grad_autocast": self.grad_autocast} if self.grad_autocast != "off" else {}),
        }
