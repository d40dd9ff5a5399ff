"""Is the anchor set good enough? Split-half reliability, and harmful flags beyond chance.

Both read the score file's `fold_utility` column: candidate i's utility measured on each of
K disjoint folds of the anchors (U_ik, fold k holding n_k anchors; the plain utility is
sum_k n_k U_ik / n).

**Split-half reliability.** Repeatedly split the K folds at random into two halves (K//2
and K - K//2 folds), compute each half's utility (the fold utilities averaged with weights
n_k, i.e. the utility the half's anchors alone would give) and the Spearman correlation of
the two halves' utilities over the candidates. `rho_mean` is the mean over splits and
`rho_low`/`rho_high` the 5th and 95th percentiles (these are half-set correlations: the
Spearman-Brown correction is NOT applied to them). The whole anchor set, twice the size of a
half, ranks with the reliability given by the Spearman-Brown formula 2 rho / (1 + rho)
applied to `rho_mean` (`full_set_reliability`). A warning is raised when the anchor set
has fewer than `MIN_ANCHORS` (30) anchors, or when `full_set_reliability` is below
`MIN_RELIABILITY` (0.7, the usual bar for a measurement to be trusted for ranking
individuals; below it a third or more of the ranking's variance is anchor noise).
For speed on big pools, at most `MAX_CANDIDATES` (100,000) candidates, a seeded random
subset, enter the correlations (the estimate's error at that size is ~0.003).

**Harmful beyond chance.** The anchors are a sample of the target task; a candidate's
utility is an average over them and has a standard error. With d_a the per-anchor loss drop,
fold k's utility is the mean of n_k of them, so with s^2 = sum_k n_k (U_ik - U_i)^2 / (K-1)
(the weighted between-fold variance, an unbiased estimate of the per-anchor variance when
anchors are exchangeable), SE_i = s / sqrt(n), n = sum_k n_k. With equal folds that is the
between-fold standard deviation / sqrt(K). A candidate is flagged harmful when its utility is
below zero beyond chance: U_i < -t_{1-level, K-1} SE_i (one-sided t test at `level`, K-1
degrees of freedom). `correction="bh"` controls the false discovery rate over the whole pool
instead (Benjamini-Hochberg at `level` on the one-sided p-values), for users who want the
flagged set, not each flag, to hold at `level`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_ANCHORS = 30
MIN_RELIABILITY = 0.7
MAX_CANDIDATES = 100_000
CORRECTIONS = ("none", "bh")


@dataclass(frozen=True)
class Reliability:
    """How well two disjoint halves of the anchor set agree on the ranking."""

    rho_mean: float  # mean Spearman between the halves' rankings (half-set, no correction)
    rho_low: float  # 5th percentile over splits (half-set, no correction)
    rho_high: float  # 95th percentile over splits (half-set, no correction)
    full_set_reliability: float  # Spearman-Brown corrected rho_mean: the whole anchor set
    n_anchors: int
    n_splits: int
    warning: str | None  # None when trustworthy

    def line(self) -> str:
        if math.isnan(self.rho_mean):
            return f"anchor reliability: not measurable ({self.warning})"
        return (
            f"anchor reliability: {self.full_set_reliability:.3f} for the whole set "
            f"(Spearman-Brown); split-half Spearman {self.rho_mean:.3f} "
            f"(5-95%: {self.rho_low:.3f} .. {self.rho_high:.3f}) over {self.n_splits} splits "
            f"of {self.n_anchors} anchors"
        )


def _check(fold_utility: np.ndarray, fold_sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    fu = np.asarray(fold_utility, dtype=np.float64)
    sizes = np.asarray(list(fold_sizes), dtype=np.float64)
    if fu.ndim != 2:
        raise ValueError(f"fold_utility must be (candidates, folds), got shape {fu.shape}")
    if fu.shape[1] != len(sizes):
        raise ValueError(
            f"fold_utility has {fu.shape[1]} folds but anchor_fold_sizes lists {len(sizes)}"
        )
    if len(sizes) and (sizes <= 0).any():
        raise ValueError(f"anchor fold sizes must be positive, got {list(fold_sizes)}")
    return fu, sizes


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks per column (ties share their mean rank)."""
    return stats.rankdata(x, axis=0)


def _spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman of a[:, s] with b[:, s] for every column s; NaN where a column is constant."""
    ra, rb = _ranks(a), _ranks(b)
    ra -= ra.mean(axis=0)
    rb -= rb.mean(axis=0)
    denom = np.sqrt((ra * ra).sum(axis=0) * (rb * rb).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(axis=0) / denom, np.nan)


def split_half_reliability(
    fold_utility: np.ndarray, fold_sizes: Sequence[int], n_splits: int = 50, seed: int = 0
) -> Reliability:
    """Split-half agreement of the anchors' rankings (see the module docstring)."""
    fu, sizes = _check(fold_utility, fold_sizes)
    n_cand, k = fu.shape
    n_anchors = int(sizes.sum())
    rng = np.random.default_rng(seed)
    small = (
        f"only {n_anchors} anchors (fewer than {MIN_ANCHORS}): any ranking they give is noisy"
        if n_anchors < MIN_ANCHORS
        else None
    )
    if k < 2 or n_cand < 3:
        why = f"{k} anchor fold(s)" if k < 2 else f"{n_cand} candidate(s)"
        warning = f"cannot split: {why}; score with --anchor-folds >= 2 and 3+ candidates"
        nan = float("nan")
        return Reliability(
            nan, nan, nan, nan, n_anchors, 0, "; ".join(filter(None, [small, warning]))
        )
    if n_cand > MAX_CANDIDATES:
        fu = fu[np.sort(rng.choice(n_cand, MAX_CANDIDATES, replace=False))]
    half = k // 2
    masks = np.zeros((n_splits, k), dtype=bool)
    for s in range(n_splits):
        masks[s, rng.permutation(k)[:half]] = True
    wa = masks * sizes  # (splits, folds) weights of half A
    wb = (~masks) * sizes
    ua = fu @ (wa / wa.sum(axis=1, keepdims=True)).T  # (candidates, splits)
    ub = fu @ (wb / wb.sum(axis=1, keepdims=True)).T
    rho = _spearman_columns(ua, ub)
    rho = rho[np.isfinite(rho)]
    if not len(rho):
        nan = float("nan")
        warning = "every half gives the same utility to all candidates: no ranking to compare"
        return Reliability(
            nan, nan, nan, nan, n_anchors, 0, "; ".join(filter(None, [small, warning]))
        )
    mean = float(rho.mean())
    full = 2 * mean / (1 + mean) if mean > -1 else float("nan")
    noisy = (
        f"the anchor set's ranking reliability is {full:.2f}, below {MIN_RELIABILITY}: two "
        "halves of it disagree on which candidates are best; add anchors or check they are "
        "of one task"
        if not full >= MIN_RELIABILITY
        else None
    )
    return Reliability(
        mean,
        float(np.quantile(rho, 0.05)),
        float(np.quantile(rho, 0.95)),
        float(full),
        n_anchors,
        len(rho),
        "; ".join(filter(None, [small, noisy])) or None,
    )


def standard_error(fold_utility: np.ndarray, fold_sizes: Sequence[int]) -> np.ndarray:
    """Each candidate's standard error of its utility over anchor sampling (docstring)."""
    fu, sizes = _check(fold_utility, fold_sizes)
    k = fu.shape[1]
    if k < 2:
        raise ValueError(
            f"a standard error needs at least 2 anchor folds, the score file has {k}; "
            "score with --anchor-folds 2 or more"
        )
    mean = fu @ (sizes / sizes.sum())
    var = ((fu - mean[:, None]) ** 2 * sizes).sum(axis=1) / (k - 1)
    return np.sqrt(var / sizes.sum())


def _p_values(utility: np.ndarray, se: np.ndarray, df: int) -> np.ndarray:
    """One-sided p-value of 'utility < 0' under the null of zero utility."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, utility / se, np.where(utility < 0, -np.inf, np.inf))
    return stats.t.cdf(t, df)


def harmful_threshold(
    fold_utility: np.ndarray,
    fold_sizes: Sequence[int],
    level: float = 0.05,
    correction: str = "none",
    utility: np.ndarray | None = None,
) -> np.ndarray:
    """Per-candidate threshold: a candidate is harmful where its utility is below it.

    -t_{1-level', K-1} * SE_i, with level' = `level` (per candidate) or, with
    `correction="bh"`, the Benjamini-Hochberg cut-off of the pool's p-values (that needs the
    utilities: `utility`, else the fold-size-weighted mean of the fold utilities).
    """
    if not 0 < level < 1:
        raise ValueError(f"harmful level must be in (0, 1), got {level}")
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; choose one of {CORRECTIONS}")
    fu, sizes = _check(fold_utility, fold_sizes)
    se = standard_error(fu, sizes)
    df = fu.shape[1] - 1
    cut = level
    if correction == "bh":
        u = fu @ (sizes / sizes.sum()) if utility is None else np.asarray(utility, np.float64)
        p = np.sort(_p_values(u, se, df))
        passed = np.nonzero(p <= level * np.arange(1, len(p) + 1) / max(len(p), 1))[0]
        # nothing passes: a cut no utility can fall below (p-values are > 0 for finite t)
        cut = float(level * (passed[-1] + 1) / len(p)) if len(passed) else 0.0
    if cut <= 0:
        return np.full(len(se), -np.inf)
    return -stats.t.ppf(1 - cut, df) * se


def calibrated_harmful(
    utility: np.ndarray,
    fold_utility: np.ndarray,
    fold_sizes: Sequence[int],
    level: float = 0.05,
    correction: str = "none",
) -> np.ndarray:
    """True where a candidate's utility is below zero beyond chance (module docstring)."""
    utility = np.asarray(utility, dtype=np.float64)
    threshold = harmful_threshold(fold_utility, fold_sizes, level, correction, utility)
    if len(threshold) != len(utility):
        raise ValueError(f"{len(utility)} utilities but {len(threshold)} rows of fold_utility")
    return (utility < 0) & (utility < threshold)
