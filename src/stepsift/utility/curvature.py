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

import torch
from torch import Tensor

from stepsift.proxy.base import Batch, Params, Proxy
from stepsift.utility.anchor_views import columns_made
from stepsift.utility.anchors import expand_at_shared_step
from stepsift.utility.base import UtilityResult
from stepsift.utility.gradients import per_sample_grads
from stepsift.utility.sketch import gradient_sketch
from stepsift.utility.steps import StepRule

DEFAULT_LABEL_DRAWS = 16  # set-up only: more draws, less sketch noise, same cost per candidate
DEFAULT_MAX_BYTES = 1 << 30  # memory the sketch may take
DEFAULT_RANK = 64


def sampled_label_tensors(
    proxy: Proxy, params: Params, tensors: dict[str, Tensor], generator: torch.Generator
) -> dict[str, Tensor]:
    """The batch with every supervised label replaced by a draw from the model itself."""
    with torch.no_grad():
        probs = proxy.token_logits(params, tensors).softmax(dim=-1)
    flat = probs.reshape(-1, probs.shape[-1]).float()
    draws = torch.multinomial(flat.cpu(), 1, generator=generator).reshape(probs.shape[:2])
    labels = tensors["labels"]
    out = dict(tensors)
    out["labels"] = torch.where(tensors["loss_mask"], draws.to(labels.device), labels)
    return out


class GGNSketch:
    """Vectors s_j (one tensor per parameter, leading dim = sketch size) with
    Σ_j (s_j · δ)² ≈ δᵀ G_A δ."""

    def __init__(
        self,
        proxy: Proxy,
        anchors: Batch,
        params: Params,
        label_draws: int = DEFAULT_LABEL_DRAWS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        seed: int = 0,
        chunk: int = 32,
        rank: int | None = None,
    ):
        n_params = sum(p.numel() for p in params.values())
        bytes_per_vector = n_params * next(iter(params.values())).element_size()
        n_vectors = label_draws * len(anchors)
        self.size = max(1, min(n_vectors, max_bytes // bytes_per_vector))
        self.hashed = self.size < n_vectors
        self.label_draws = label_draws
        gen = torch.Generator().manual_seed(seed)
        self.vectors = {n: p.new_zeros((self.size, *p.shape)) for n, p in params.items()}
        tokens = anchors.tensors["loss_mask"].sum(dim=1).to(torch.float64)
        j = 0
        for _ in range(label_draws):
            for s in range(0, len(anchors), chunk):
                part = anchors.select(slice(s, s + chunk))
                tensors = sampled_label_tensors(proxy, params, part.tensors, gen)
                with torch.no_grad():
                    grads, _ = per_sample_grads(proxy, params, tensors)
                weight = (tokens[s : s + chunk] / (len(anchors) * label_draws)).sqrt()
                self._add(grads, weight, j, gen)
                j += len(part)
        self.trace_kept = 1.0
        if rank is not None and rank < self.size:
            self._truncate(rank)

    @classmethod
    def from_state(cls, state: dict, device) -> GGNSketch:
        """The sketch another worker built (`export`), without recomputing it."""
        sketch = cls.__new__(cls)
        sketch.vectors = {n: v.to(device) for n, v in state["vectors"].items()}
        sketch.size, sketch.hashed = int(state["size"]), bool(state["hashed"])
        sketch.label_draws = int(state["label_draws"])
        sketch.trace_kept = float(state["trace_kept"])
        return sketch

    def export(self) -> dict:
        return {
            "vectors": self.vectors,
            "size": self.size,
            "hashed": self.hashed,
            "label_draws": self.label_draws,
            "trace_kept": self.trace_kept,
        }

    def _truncate(self, rank: int) -> None:
        """Keep the top `rank` directions of Sᵀ S: W = U_rᵀ S from S Sᵀ = U Λ Uᵀ."""
        gram = None
        for v in self.vectors.values():
            flat = v.reshape(self.size, -1).double()
            gram = flat @ flat.T if gram is None else gram + flat @ flat.T
        eigvals, eigvecs = torch.linalg.eigh(gram)  # ascending
        top = eigvecs[:, -rank:]
        self.trace_kept = float(eigvals[-rank:].clamp(min=0).sum() / eigvals.clamp(min=0).sum())
        self.vectors = {
            n: (top.T.to(v.dtype) @ v.reshape(self.size, -1)).reshape(rank, *v.shape[1:])
            for n, v in self.vectors.items()
        }
        self.size = rank

    def _add(self, grads: Params, weight: Tensor, first: int, gen: torch.Generator) -> None:
        n = weight.shape[0]
        if self.hashed:  # bucket and sign per vector: E[(Σ ±s·δ)²] = Σ (s·δ)²
            bucket = torch.randint(0, self.size, (n,), generator=gen)
            sign = torch.randint(0, 2, (n,), generator=gen).to(torch.float64) * 2 - 1
        else:
            bucket = torch.arange(first, first + n)
            sign = torch.ones(n, dtype=torch.float64)
        for name, g in grads.items():
            w = (weight * sign).to(g.device, g.dtype).reshape(-1, *([1] * (g.dim() - 1)))
            self.vectors[name].index_add_(0, bucket.to(g.device), g * w)

    def quadratic(self, deltas: Params) -> Tensor:
        """δ_iᵀ G_A δ_i for every sample i of per-sample updates `deltas`: shape (B,)."""
        proj = None
        for name, d in deltas.items():
            part = d.reshape(d.shape[0], -1) @ self.vectors[name].reshape(self.size, -1).T
            proj = part.double() if proj is None else proj + part.double()
        return (proj**2).sum(dim=1)


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
    ):
        self.proxy, self.step_rule = proxy, step_rule
        self.params = proxy.step_parameters()
        # the gradient sketch (a column of the score file), not the GGN sketch
        self.gradient_sketch = gradient_sketch(self.params, sketch_dim, sketch_seed)
        self.columns = columns_made(None, self.gradient_sketch)
        if state is not None:  # the anchor direction and GGN sketch another worker built
            device = proxy.device
            self.shared = {n: state["shared"][n].to(device) for n in self.params}
            self.anchor_grad = {n: state["anchor_grad"][n].to(device) for n in self.params}
            self.base_anchor_loss = float(state["base_anchor_loss"])
            self.offset = float(state["offset"])
            self.sketch = GGNSketch.from_state(state["ggn"], device)
            return
        expansion = expand_at_shared_step(proxy, anchors, self.params, step_rule)
        self.shared, self.anchor_grad = expansion.shared, expansion.anchor_grad
        self.base_anchor_loss, self.offset = expansion.base_loss, expansion.offset
        self.sketch = GGNSketch(
            proxy, anchors, expansion.center, label_draws, max_bytes, seed, rank=rank
        )

    def __call__(self, batch: Batch) -> UtilityResult:
        with torch.no_grad():
            grads, losses = per_sample_grads(self.proxy, self.params, batch.tensors)
            own = {n: d - self.shared[n] for n, d in self.step_rule(grads).items()}
            linear = sum(
                (d.reshape(d.shape[0], -1) @ self.anchor_grad[n].reshape(-1)).double()
                for n, d in own.items()
            )
            utility = self.offset - linear - 0.5 * self.sketch.quadratic(own)
            sketch = self.gradient_sketch(grads) if self.gradient_sketch is not None else None
        return UtilityResult(utility=utility, loss=losses.double(), sketch=sketch)

    def export_state(self) -> dict:
        """The anchor direction, constants and GGN sketch, for a worker to load."""
        return {
            "shared": self.shared,
            "anchor_grad": self.anchor_grad,
            "base_anchor_loss": self.base_anchor_loss,
            "offset": self.offset,
            "ggn": self.sketch.export(),
        }

    def describe(self) -> dict:
        return {
            "ggn_label_draws": self.sketch.label_draws,
            "ggn_sketch_size": self.sketch.size,
            "ggn_sketch_hashed": self.sketch.hashed,
            "ggn_trace_kept": round(self.sketch.trace_kept, 4),
        }
