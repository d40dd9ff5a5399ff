"""How much to keep: token budgets and the automatic budget from the utility curve.

The curve: rank the candidates by utility (best first, ties by id, as `select` ranks them)
and walk down the ranking, adding up each candidate's training cost (its supervised tokens,
the score file's `tokens` column) and its utility. `cum_utility` against `cum_tokens` is
what a budget buys.

A token budget (`--keep 2M-tokens`) keeps the longest prefix of the ranking whose tokens fit.

The automatic budget (`--keep auto`) keeps the candidates up to the *knee* of that curve:

1. Only the prefix of candidates with positive utility is considered: past it, every added
   sample makes the anchors worse (or leaves them as they are) and costs tokens.
2. On that prefix both axes are normalised to [0, 1] (tokens by the prefix's tokens,
   utility by the prefix's utility), so the rule is scale-free: it does not change when
   utilities or token counts are multiplied by any constant, i.e. it does not depend on the
   model, the loss's units, the step size or the tokenizer.
3. The knee is the point farthest above the chord from (0, 0) to (1, 1): argmax of
   y - x. Where the curve is smooth, that is exactly where the slope dy/dx falls to 1, i.e.
   where a further token buys less utility than the average token of the positive prefix.
   Past the knee, added data buys less than average; before it, more.
4. When the curve never rises more than `KNEE_MIN_GAP` (5% of its range) above the chord,
   the positive utilities are nearly uniform per token, so no point marks diminishing
   returns: every positive-utility candidate is kept.

Edge cases: no positive utility: 0 (`select` refuses, naming why); one positive candidate:
that one. Tokens of 0 (nothing supervised inside the proxy's window) cost nothing; when
every candidate's cost is 0 (or the file has no `tokens` column), each counts as 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stepsift.select.keep import rank

KNEE_MIN_GAP = 0.05  # below this height above the chord the curve has no knee worth cutting at


@dataclass(frozen=True)
class UtilityCurve:
    """Cumulative cost and utility along the ranking."""

    order: np.ndarray  # candidate indices, best first (the ranking used)
    cum_tokens: np.ndarray  # float64, cumulative training cost (tokens) along `order`
    cum_utility: np.ndarray  # float64, cumulative utility along `order`

    @property
    def utility(self) -> np.ndarray:
        """Each ranked candidate's own utility (the curve's increments)."""
        return np.diff(self.cum_utility, prepend=0.0)


@dataclass(frozen=True)
class AutoCut:
    """The automatic budget and why: what `select` prints."""

    n: int  # candidates kept
    n_positive: int  # the positive-utility prefix the knee was taken on
    token_share: float  # share of the positive prefix's tokens kept
    utility_share: float  # share of the positive prefix's utility kept
    gap: float  # the knee's height above the chord (normalised units)
    reason: str

    def line(self) -> str:
        return f"auto budget: kept {self.n}: {self.reason}"


def utility_curve(ids: list[str], utility: np.ndarray, tokens: np.ndarray) -> UtilityCurve:
    """The cumulative curve along `select`'s ranking (utility descending, ties by id)."""
    utility = np.asarray(utility, dtype=np.float64)
    cost = np.maximum(np.asarray(tokens, dtype=np.float64), 0.0)
    if len(utility) != len(ids) or len(cost) != len(ids):
        raise ValueError(
            f"utility_curve: {len(ids)} ids, {len(utility)} utilities, {len(cost)} token counts"
        )
    if len(cost) and not cost.any():
        cost = np.ones_like(cost)  # no cost information: every candidate costs the same
    order = rank(ids, utility) if len(ids) else np.zeros(0, dtype=np.int64)
    return UtilityCurve(order, np.cumsum(cost[order]), np.cumsum(utility[order]))


def token_cut(curve: UtilityCurve, budget_tokens: int) -> int:
    """How many of the ranked candidates fit in `budget_tokens`: the longest prefix whose
    tokens add up to at most the budget."""
    if budget_tokens < 0:
        raise ValueError(f"token budget must be >= 0, got {budget_tokens}")
    # cum_tokens is non-decreasing, so the count of entries <= budget is the prefix length
    return int(np.searchsorted(curve.cum_tokens, float(budget_tokens), side="right"))


def explain_auto_cut(curve: UtilityCurve) -> AutoCut:
    """The knee of the normalised curve over the positive-utility prefix (module docstring)."""
    u = curve.utility
    m = int(np.argmin(u > 0)) if len(u) and not (u > 0).all() else len(u)  # ranked: a prefix
    if m == 0:
        return AutoCut(0, 0, 0.0, 0.0, 0.0, "no candidate has positive utility")
    if m == 1:
        return AutoCut(1, 1, 1.0, 1.0, 0.0, "only one candidate has positive utility")
    t0 = curve.cum_tokens[:m]
    x = np.concatenate([[0.0], t0 / t0[-1]]) if t0[-1] > 0 else np.linspace(0, 1, m + 1)
    y = np.concatenate([[0.0], curve.cum_utility[:m] / curve.cum_utility[m - 1]])
    gap = y - x
    knee = int(np.argmax(gap))  # the first of equal maxima: the smaller subset
    height = float(gap[knee])
    if height < KNEE_MIN_GAP:
        return AutoCut(
            m,
            m,
            1.0,
            1.0,
            height,
            f"the {m} positive-utility candidates give nearly the same utility per token "
            f"(the curve rises at most {height:.3f} above its chord, under {KNEE_MIN_GAP}), "
            "so there is no knee: all of them are kept",
        )
    return AutoCut(
        knee,
        m,
        float(x[knee]),
        float(y[knee]),
        height,
        f"the knee of cumulative utility against tokens over the {m} positive-utility "
        f"candidates: {y[knee]:.1%} of their utility for {x[knee]:.1%} of their tokens; past "
        "it a token buys less utility than the average token of that prefix",
    )


def auto_cut(curve: UtilityCurve) -> int:
    """How many candidates the `auto` budget keeps (see the module docstring for the rule)."""
    return explain_auto_cut(curve).n
