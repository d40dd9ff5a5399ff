"""What one scoring worker holds: a proxy and the run's estimator on it.

The local engine makes one; each Ray actor makes its own from the run's saved proxy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stepsift.data.index import RecordIndex
from stepsift.data.record import Record
from stepsift.engine.anchor_grouping import found_groups, group_field, wants_found_groups
from stepsift.engine.anchor_state import load_or_build, state_fingerprint, state_path
from stepsift.engine.settings import ScoreSettings
from stepsift.engine.stages import StageClock
from stepsift.engine.store import OPTIONAL_COLUMNS, ScoreRows
from stepsift.proxy.base import Proxy
from stepsift.utility.anchor_groups import FoundGroups
from stepsift.utility.anchor_views import AnchorViews, build_views
from stepsift.utility.base import UtilityEstimator
from stepsift.utility.registry import EXPORTS_STATE, make_estimator
from stepsift.utility.steps import StepRule, make_step_rule

# SGD has no natural step size; when the user picks SGD without --lr this one is used.
# (benchmarks/step_size_sweep.py measures SGD and Adam; see benchmarks/RESULTS.md.)
DEFAULT_SGD_LR = 0.01


@dataclass
class Scorer:
    proxy: Proxy
    estimator: UtilityEstimator
    step_rule: StepRule

    views: AnchorViews | None = None
    sketch_dim: int = 0
    state_loaded: bool = False  # whether the anchor state came from the run's saved file
    found: FoundGroups | None = None  # the groups found for anchors without a group field

    @classmethod
    def build(
        cls,
        proxy: Proxy,
        anchor_records: Sequence[Record],
        settings: ScoreSettings,
        state_dir: Path | None = None,
        pool: RecordIndex | None = None,
        clock: StageClock | None = None,
    ) -> Scorer:
        """The run's estimator on `proxy`: the step restricted to --params, the step rule,
        the anchors collated, their folds and groups. With `state_dir` (the run's proxy
        folder), the estimator's anchor state is loaded from there when an earlier worker
        saved it for the same proxy, anchors and settings, else computed and saved; so are
        the anchor groups found for anchors without a group field (found from a probe of
        `pool`; without a pool, only loaded). `clock` is told how long finding the
        groups and the estimator's anchor set-up took."""
        clock = clock or StageClock()
        proxy.restrict_step(settings.params)
        rule = make_step_rule(settings.optimizer, settings.lr, proxy, DEFAULT_SGD_LR)
        anchors = proxy.collate(anchor_records)
        found = None
        if state_dir is not None and wants_found_groups(settings, anchor_records):
            with clock.stage("anchor groups"):
                found = found_groups(state_dir, proxy, anchors, rule, settings, pool)
        views = build_views(
            anchor_records, settings.anchor_folds, group_field(settings), settings.seed,
            labels=found.labels if found is not None else None,
        )  # fmt: skip
        method = settings.method

        def build_estimator(state: dict | None) -> UtilityEstimator:
            return make_estimator(
                method, proxy, anchors, rule, settings.less_dim,
                views=views, sketch_dim=settings.sketch_dim, sketch_seed=settings.seed,
                state=state, exact_anchors=settings.exact_anchors, seed=settings.seed,
                forward_directions=settings.forward_directions,
                streamed_sketch=settings.streamed_sketch, label_draws=settings.label_draws,
                grad_autocast=settings.grad_autocast, progress=settings.progress,
            )  # fmt: skip

        with clock.stage("anchor set-up"):
            estimator, loaded = cls._estimator(
                build_estimator, method, settings, proxy, anchors, rule, views, state_dir
            )
        return cls(proxy, estimator, rule, views, settings.sketch_dim, loaded, found)

    @staticmethod
    def _estimator(build_estimator, method, settings, proxy, anchors, rule, views, state_dir):
        """(estimator, whether its anchor state was loaded): the state is loaded from, or
        computed and saved to, `state_dir` where the method can export it."""
        if state_dir is None or method not in EXPORTS_STATE:
            return build_estimator(None), False
        decisive = {
            "params": settings.params,
            "less_dim": settings.less_dim if method == "less" else None,
            "directions": settings.forward_directions if method == "forward" else None,
            "streamed": settings.streamed_sketch if method == "curvature" else None,
            "label_draws": settings.label_draws if method == "curvature" else None,
            "dtype": settings.dtype,
            # curvature's state holds one expansion per anchor view
            "views": (views.fold_of, views.group_of) if method == "curvature" else None,
        }
        fp = state_fingerprint(method, decisive, proxy, anchors, rule)
        return load_or_build(state_path(state_dir, method), fp, build_estimator, proxy.device)

    def __call__(self, records: Sequence[Record]) -> ScoreRows:
        batch = self.proxy.collate(records)
        result = self.estimator(batch)
        rows = ScoreRows()
        optional = {
            name: value.cpu().numpy()
            for name in OPTIONAL_COLUMNS
            if (value := getattr(result, name)) is not None
        }
        rows.extend(
            batch.ids,
            result.utility.tolist(),
            result.loss.tolist(),
            batch.tokens.tolist(),
            batch.truncated.tolist(),
            **optional,
        )
        return rows

    def facts(self) -> dict:
        """What the score file records about the estimator and its step (asked after a
        batch: some estimators settle a mode on their first one), and about the optional
        columns: what they hold, or why they are absent."""
        return {
            "base_anchor_loss": self.estimator.base_anchor_loss,
            **self.step_rule.describe(),
            **self.estimator.describe(),
            **self.column_facts(),
        }

    def column_facts(self) -> dict:
        # an estimator that does not declare its columns (a third party's) makes none
        made = getattr(self.estimator, "columns", frozenset())
        name = getattr(self.estimator, "name", type(self.estimator).__name__)
        out: dict = {}
        views = self.views
        if views is not None and views.n_folds:
            if "fold_utility" in made:
                out["anchor_fold_sizes"] = views.fold_sizes
            else:
                out["fold_utility"] = f"not computed by method {name}"
        if views is not None and views.group_of is not None:
            if "group_utility" in made:
                out |= {
                    "anchor_groups": list(views.groups),
                    "anchor_group_sizes": views.group_sizes,
                }
            else:
                out["group_utility"] = f"not computed by method {name}"
        if self.found is not None:
            out["anchor_groups_found"] = self.found.describe()
        if self.sketch_dim:
            if "sketch" in made:
                out |= {"sketch_dim": self.sketch_dim, "sketch_of": "gradient"}
            else:  # sketch_dim 0: the file has no sketch (the setting asked for one)
                out |= {"sketch_dim": 0, "sketch": f"not computed by method {name}"}
        return out
