"""The figures the report states, computed from a `ReportData` with the selection library's
own functions (the same budget rule and reliability figure `select` prints)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stepsift.report.gather import ReportData
from stepsift.report.plots import HARMFUL, HELPFUL, Mark
from stepsift.select.budget import AutoCut, UtilityCurve, explain_auto_cut, utility_curve
from stepsift.select.decide import coverage_plan
from stepsift.select.keep import Keep
from stepsift.select.reliability import Reliability, split_half_reliability

FIXED_MARKS = (("top 20%", 0.2), ("top 50%", 0.5))
DEFAULT_SHARE = 0.2  # the per-group table shows what `select --keep 20%` takes for each group


@dataclass(frozen=True)
class Budget:
    curve: UtilityCurve
    marks: list[Mark]  # the auto cut first, then the fixed fractions
    unit: str  # what the x axis counts: "tokens" or "candidates"
    auto: AutoCut  # the automatic budget and why

    @property
    def x_label(self) -> str:
        if self.unit == "tokens":
            return "cumulative supervised tokens"
        return "candidates kept (no token counts: each costs 1)"

    @property
    def total_cost(self) -> float:
        return float(self.curve.cum_tokens[-1]) if len(self.curve.cum_tokens) else 0.0


def _point(curve: UtilityCurve, count: int) -> tuple[float, float]:
    """Cumulative cost and utility after the best `count` candidates."""
    if count <= 0:
        return 0.0, 0.0
    return float(curve.cum_tokens[count - 1]), float(curve.cum_utility[count - 1])


def budget(data: ReportData) -> Budget:
    # without a tokens column every candidate costs the same: the curve is per candidate
    cost = data.tokens if data.tokens is not None else np.ones(data.n)
    curve = utility_curve(data.ids, data.utility, cost)
    auto = explain_auto_cut(curve)
    cuts = [("auto", auto.n, HARMFUL)]
    colors = (HELPFUL, "#7b1fa2")
    for (label, fraction), color in zip(FIXED_MARKS, colors, strict=True):
        cuts.append((label, Keep(fraction=fraction).size(data.n), color))
    marks = [Mark(label, count, *_point(curve, count), color) for label, count, color in cuts]
    return Budget(curve, marks, "tokens" if data.tokens is not None else "candidates", auto)


@dataclass(frozen=True)
class GroupRow:
    name: str
    size: int | None  # anchors in the group
    mean: float  # mean utility of the candidates towards it
    helped: float  # share of candidates with utility > 0 towards it
    hurt: float  # share with utility < 0
    example: str | None = None  # an anchor's id, for groups stepsift found itself
    kept: int | None = None  # candidates the default 20% takes for this group (coverage)


def group_rows(data: ReportData) -> list[GroupRow] | None:
    g = data.groups
    if g is None:
        return None
    u = g.utility
    sizes = g.sizes or [None] * len(g.names)
    found = data.scores.settings.get("anchor_groups_found") or {}
    examples = found.get("examples", {}) if found.get("k") else {}
    kept: list[int | None] = [None] * len(g.names)
    if g.sizes is not None and len(g.names) >= 2:
        _, served = coverage_plan(data.scores, Keep(fraction=DEFAULT_SHARE).size(data.n))
        kept = np.bincount(served, minlength=len(g.names)).tolist()
    return [
        GroupRow(
            name,
            size,
            float(u[:, k].mean()),
            float((u[:, k] > 0).mean()),
            float((u[:, k] < 0).mean()),
            examples.get(name),
            kept[k],
        )
        for k, (name, size) in enumerate(zip(g.names, sizes, strict=True))
    ]


@dataclass(frozen=True)
class AnchorReliability:
    figure: Reliability
    n_harmful_beyond_chance: int | None  # calibrated flags; None with fewer than 2 folds


def anchor_reliability(data: ReportData) -> AnchorReliability | None:
    f = data.folds
    if f is None:
        return None
    figure = split_half_reliability(f.utility, f.sizes)  # as `select` computes it
    if len(f.sizes) < 2:  # no spread between folds to measure the noise with
        return AnchorReliability(figure, None)
    # with 2+ folds the page's harmful flags are the calibrated ones (`select`'s default)
    return AnchorReliability(figure, int(data.harmful.sum()))
