"""Estimators by name: what `--method` chooses from."""

from __future__ import annotations

from stepsift.proxy.base import Batch, Proxy
from stepsift.utility.anchor_views import AnchorViews
from stepsift.utility.base import UtilityEstimator
from stepsift.utility.curvature import CurvatureUtility
from stepsift.utility.exact import ExactUtility
from stepsift.utility.first_order import FirstOrderUtility
from stepsift.utility.forward_only import DEFAULT_DIRECTIONS, ForwardUtility
from stepsift.utility.ggn_sketch import DEFAULT_LABEL_DRAWS
from stepsift.utility.gradients import AUTOCASTS
from stepsift.utility.less import DEFAULT_DIM, LessScore
from stepsift.utility.steps import StepRule
from stepsift.utility.subsample import DEFAULT_EXACT_ANCHORS, AnchorSubsampleUtility

ESTIMATORS = {
    "exact": ExactUtility,
    "first-order": FirstOrderUtility,
    "curvature": CurvatureUtility,
    "forward": ForwardUtility,
    "anchor-subsample": AnchorSubsampleUtility,
    "less": LessScore,
}


# What each estimator can add to a score (the optional columns, see utility/base.py):
# fold and group utilities (per-anchor values, or curvature's per-view expansion) and
# per-sample gradients (so a sketch). first-order and forward have neither: directional
# derivatives along fixed directions built from all anchors at once.
VIEWS = ("exact", "curvature", "less")
SKETCH = ("exact", "curvature", "less")
# those that take candidates' per-sample gradients, so can take them under bf16 autocast
AUTOCAST = ("curvature", "less")
# those whose anchor state (`export_state`) a worker can load instead of recomputing
EXPORTS_STATE = ("first-order", "curvature", "forward", "less")


def check_grad_autocast(method: str, grad_autocast: str) -> None:
    """Refuse an autocast the method cannot use (before any model work)."""
    if grad_autocast not in AUTOCASTS:
        raise ValueError(f"unknown grad autocast {grad_autocast!r}; choose one of {AUTOCASTS}")
    if grad_autocast != "off" and method not in AUTOCAST:
        raise ValueError(
            f"--grad-autocast applies to {' and '.join(AUTOCAST)} (their candidates' "
            f"gradients), not to --method {method}"
        )


def make_estimator(
    method: str,
    proxy: Proxy,
    anchors: Batch,
    step_rule: StepRule,
    less_dim: int = DEFAULT_DIM,
    views: AnchorViews | None = None,
    sketch_dim: int = 0,
    sketch_seed: int = 0,
    state: dict | None = None,
    exact_anchors: int = DEFAULT_EXACT_ANCHORS,
    seed: int = 0,
    forward_directions: int = DEFAULT_DIRECTIONS,
    streamed_sketch: bool = False,
    grad_autocast: str = "off",
    progress: bool = False,
    label_draws: int = DEFAULT_LABEL_DRAWS,
) -> UtilityEstimator:
    """The estimator `method` names, set up against the anchors (or from `state`, what
    an earlier `export_state` of the same estimator on the same anchors returned). Views
    and the sketch are passed to the estimators that can use them, and ignored by the
    others, which then leave those columns out (their `columns` says so)."""
    if method not in ESTIMATORS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(ESTIMATORS)}")
    kwargs: dict = {}
    if method in VIEWS:
        kwargs["views"] = views
    if method in SKETCH:
        kwargs |= {"sketch_dim": sketch_dim, "sketch_seed": sketch_seed}
    check_grad_autocast(method, grad_autocast)
    if grad_autocast != "off":
        kwargs["grad_autocast"] = grad_autocast
    if state is not None:
        if method not in EXPORTS_STATE:
            raise ValueError(f"method {method!r} has no anchor state to load")
        kwargs["state"] = state
    if method == "less":
        return LessScore(proxy, anchors, step_rule, dim=less_dim, **kwargs)
    if method == "curvature":
        kwargs |= {"streaming": streamed_sketch, "progress": progress, "label_draws": label_draws}
    if method == "forward":
        return ForwardUtility(proxy, anchors, step_rule, forward_directions, **kwargs)
    if method == "anchor-subsample":  # seeded like the run, so a resumed run draws the same
        return AnchorSubsampleUtility(proxy, anchors, step_rule, exact_anchors, seed)
    return ESTIMATORS[method](proxy, anchors, step_rule, **kwargs)
