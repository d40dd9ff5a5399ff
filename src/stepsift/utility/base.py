"""What every utility estimator returns, and the shape every estimator has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from stepsift.proxy.base import Batch


@dataclass
class UtilityResult:
    utility: Tensor  # (B,) float64: anchor loss before minus after the simulated step
    loss: Tensor  # (B,) float64: the candidate's own loss before any step
    # optional, None when the estimator does not compute them (see utility/anchor_views.py
    # and utility/sketch.py): the utility towards each of K anchor folds and G anchor
    # groups, and a random projection of the candidate's gradient
    fold_utility: Tensor | None = None  # (B, K) float64
    group_utility: Tensor | None = None  # (B, G) float64
    sketch: Tensor | None = None  # (B, D) float32


class UtilityEstimator(Protocol):
    """Scores a batch of candidates; knows nothing about files."""

    name: str
    base_anchor_loss: float
    # which optional UtilityResult fields this instance fills ("fold_utility", ...)
    columns: frozenset[str]

    def __call__(self, batch: Batch) -> UtilityResult: ...

    def describe(self) -> dict:
        """Settings the estimator settled on, recorded beside the scores."""
        ...
