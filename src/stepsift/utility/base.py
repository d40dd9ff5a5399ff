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


class UtilityEstimator(Protocol):
    """Scores a batch of candidates; knows nothing about files."""

    name: str
    base_anchor_loss: float

    def __call__(self, batch: Batch) -> UtilityResult: ...

    def describe(self) -> dict:
        """Settings the estimator settled on, recorded beside the scores."""
        ...
