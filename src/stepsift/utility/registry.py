"""Estimators by name: what `--method` chooses from."""

from __future__ import annotations

from stepsift.proxy.base import Batch, Proxy
from stepsift.utility.base import UtilityEstimator
from stepsift.utility.curvature import CurvatureUtility
from stepsift.utility.exact import ExactUtility
from stepsift.utility.first_order import FirstOrderUtility
from stepsift.utility.less import DEFAULT_DIM, LessScore
from stepsift.utility.steps import StepRule

ESTIMATORS = {
    "exact": ExactUtility,
    "first-order": FirstOrderUtility,
    "curvature": CurvatureUtility,
    "less": LessScore,
}


def make_estimator(
    method: str, proxy: Proxy, anchors: Batch, step_rule: StepRule, less_dim: int = DEFAULT_DIM
) -> UtilityEstimator:
    """The estimator `method` names, set up against the anchors."""
    if method not in ESTIMATORS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(ESTIMATORS)}")
    if method == "less":
        return LessScore(proxy, anchors, step_rule, dim=less_dim)
    return ESTIMATORS[method](proxy, anchors, step_rule)
