"""What one scoring worker holds: a proxy and the run's estimator on it.

The local engine makes one; each Ray actor makes its own from the run's saved proxy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stepsift.data.record import Record
from stepsift.engine.store import ScoreRows
from stepsift.proxy.base import Proxy
from stepsift.utility.base import UtilityEstimator
from stepsift.utility.registry import make_estimator
from stepsift.utility.steps import StepRule, make_step_rule

if TYPE_CHECKING:
    from stepsift.engine.scoring import ScoreSettings

# SGD has no natural step size; when the user picks SGD without --lr this one is used.
# (benchmarks/step_size_sweep.py measures SGD and Adam; see benchmarks/RESULTS.md.)
DEFAULT_SGD_LR = 0.01


@dataclass
class Scorer:
    proxy: Proxy
    estimator: UtilityEstimator
    step_rule: StepRule

    @classmethod
    def build(
        cls, proxy: Proxy, anchor_records: Sequence[Record], settings: ScoreSettings
    ) -> Scorer:
        """The run's estimator on `proxy`: the step restricted to --params, the step rule,
        the anchors collated."""
        proxy.restrict_step(settings.params)
        rule = make_step_rule(settings.optimizer, settings.lr, proxy, DEFAULT_SGD_LR)
        anchors = proxy.collate(anchor_records)
        estimator = make_estimator(settings.method, proxy, anchors, rule, settings.less_dim)
        return cls(proxy, estimator, rule)

    def __call__(self, records: Sequence[Record]) -> ScoreRows:
        batch = self.proxy.collate(records)
        result = self.estimator(batch)
        rows = ScoreRows()
        rows.extend(
            batch.ids,
            result.utility.tolist(),
            result.loss.tolist(),
            batch.tokens.tolist(),
            batch.truncated.tolist(),
        )
        return rows

    def facts(self) -> dict:
        """What the score file records about the estimator and its step (asked after a
        batch: some estimators settle a mode on their first one)."""
        return {
            "base_anchor_loss": self.estimator.base_anchor_loss,
            **self.step_rule.describe(),
            **self.estimator.describe(),
        }
