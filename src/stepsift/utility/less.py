"""LESS (Xia et al., 2024): cosine similarity of randomly projected gradients.

A comparison point users know, not an estimate of the one-step utility: its score is a
cosine, not a loss drop. Each candidate's update direction (the optimizer's step for its
gradient: the raw gradient for SGD, Adam's preconditioned update from the warm-up state
as in LESS) and each anchor's gradient are projected to `dim` dimensions by one seeded
Rademacher matrix, and the candidate's score is the mean over anchors of their cosine.

With anchor views (utility/anchor_views.py) the per-anchor cosines are averaged per
fold and per group instead of over all anchors only: a fold's "utility" is then its mean
cosine, like the score. The anchors' projected directions are the estimator's anchor
state (`export_state`): a worker given that state does not recompute them.

The projection is dense, as in LESS's own code (TRAK's projector). The matrix is kept
in float32 when that fits in `cache_bytes`, else as int8 signs when those fit, else its
blocks are regenerated from their seeds at every batch (bounded memory, more time).
"""

from __future__ import annotations

import torch
from torch import Tensor

from stepsift.proxy.base import Batch, Params, Proxy
from stepsift.utility.anchor_views import AnchorViews, active, columns_made
from stepsift.utility.base import UtilityResult
from stepsift.utility.gradients import per_sample_grads
from stepsift.utility.sketch import gradient_sketch
from stepsift.utility.steps import AdamStep, StepRule

DEFAULT_DIM = 8192  # LESS's default projection size
BLOCK_ROWS = 16384  # parameters per generated block of the projection


class RademacherProjection:
    """x -> x @ R / sqrt(dim), R in {-1, 1}^(n_params x dim), generated block by block."""

    def __init__(self, n_params: int, dim: int, seed: int, cache_bytes: int = 1 << 30):
        self.n_params, self.dim, self.seed = n_params, dim, seed
        self.blocks = range(0, n_params, BLOCK_ROWS)
        self.cached: list[Tensor] | None = None
        if n_params * dim * 4 <= cache_bytes:
            self.cached = [self._block(i).float() for i in range(len(self.blocks))]
        elif n_params * dim <= cache_bytes:
            self.cached = [self._block(i) for i in range(len(self.blocks))]

    def _block(self, index: int) -> Tensor:
        start = self.blocks[index]
        rows = min(BLOCK_ROWS, self.n_params - start)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        bits = torch.randint(0, 2, (rows, self.dim), generator=gen, dtype=torch.int8)
        return bits * 2 - 1

    def __call__(self, x: Tensor) -> Tensor:  # (n, n_params) -> (n, dim)
        out = torch.zeros(x.shape[0], self.dim, dtype=x.dtype, device=x.device)
        for i, start in enumerate(self.blocks):
            block = self.cached[i] if self.cached is not None else self._block(i)
            part = x[:, start : start + block.shape[0]]
            out += part @ block.to(device=x.device, dtype=x.dtype)
        return out / self.dim**0.5


def flatten(per_sample: Params) -> Tensor:
    """Per-sample tensors (leading sample dim) -> one (n, n_params) matrix."""
    return torch.cat([g.reshape(g.shape[0], -1) for g in per_sample.values()], dim=1)


class LessScore:
    """Mean cosine between each candidate's projected update and the anchors' gradients."""

    name = "less"

    def __init__(
        self,
        proxy: Proxy,
        anchors: Batch,
        step_rule: StepRule,
        dim: int = DEFAULT_DIM,
        seed: int = 0,
        max_sequences: int = 64,
        views: AnchorViews | None = None,
        sketch_dim: int = 0,
        sketch_seed: int = 0,
        state: dict | None = None,
        grad_autocast: str = "off",
    ):
        if isinstance(step_rule, AdamStep) and not step_rule.state:
            raise ValueError(
                "LESS preconditions with the warm-up's Adam state, and this proxy has none; "
                "use a warmed-up proxy or --optimizer sgd"
            )
        self.proxy, self.step_rule = proxy, step_rule
        self.grad_autocast = grad_autocast  # the candidates' gradients only (gradients.py)
        self.params = proxy.step_parameters()
        n_params = sum(p.numel() for p in self.params.values())
        self.projection = RademacherProjection(n_params, dim, seed)
        self.views = active(views)
        if self.views is not None:
            self.weights = self.views.weights(device=proxy.device)
        self.sketch = gradient_sketch(self.params, sketch_dim, sketch_seed)
        self.columns = columns_made(self.views, self.sketch)
        if state is not None:
            self.anchor_dirs = state["anchor_dirs"].to(proxy.device)
            self.base_anchor_loss = float(state["base_anchor_loss"])
            return
        anchor_dirs, losses = [], []
        for s in range(0, len(anchors), max_sequences):
            part = anchors.select(slice(s, s + max_sequences))
            with torch.no_grad():
                grads, loss = per_sample_grads(proxy, self.params, part.tensors)
            anchor_dirs.append(unit_rows(self.projection(flatten(grads))))
            losses.append(loss.double())
        self.anchor_dirs = torch.cat(anchor_dirs)  # (n_anchors, dim), unit rows
        self.base_anchor_loss = float(torch.cat(losses).mean())

    def __call__(self, batch: Batch) -> UtilityResult:
        with torch.no_grad():
            grads, losses = per_sample_grads(
                self.proxy, self.params, batch.tensors, self.grad_autocast
            )
            # the direction the optimizer would move: minus its update
            update = {n: -d for n, d in self.step_rule(grads).items()}
            projected = unit_rows(self.projection(flatten(update)))
            cosines = projected @ self.anchor_dirs.T  # (B, n_anchors)
            score = cosines.mean(dim=1)
            folds = groups = None
            if self.views is not None:
                folds, groups = self.views.split(cosines.double() @ self.weights)
            sketch = self.sketch(grads) if self.sketch is not None else None
        return UtilityResult(
            utility=score.double(),
            loss=losses.double(),
            fold_utility=folds,
            group_utility=groups,
            sketch=sketch,
        )

    def export_state(self) -> dict:
        """What the anchors contribute, for a worker to load instead of recomputing."""
        return {"anchor_dirs": self.anchor_dirs, "base_anchor_loss": self.base_anchor_loss}

    def describe(self) -> dict:
        return {
            "less_dim": self.projection.dim,
            "score": "mean cosine, not a loss drop",
            **({"grad_autocast": self.grad_autocast} if self.grad_autocast != "off" else {}),
        }


def unit_rows(x: Tensor) -> Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp(min=1e-30)
