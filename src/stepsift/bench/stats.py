"""Paired statistics over training seeds: is a method's accuracy different from a reference's?

Runs of two methods that share a noise rate, a protocol and a seed share everything but the
selection (the pool, the training order's seed, the test set), so their accuracy difference
is the comparison; the mean of those differences over seeds gets a Student-t interval. A
method "wins" or "loses" only when that interval excludes 0; otherwise, and with fewer than
two pairs, it is a tie.

Accuracies (and so differences) are fractions in [0, 1]; the report multiplies by 100.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as scipy_stats

MethodKey = tuple[str, float]  # (method, keep fraction), as the report groups runs
PAIR_FIELDS = ("noise", "protocol", "seed")


@dataclass(frozen=True)
class Interval:
    """The mean of n values and its two-sided Student-t confidence interval."""

    mean: float
    low: float
    high: float
    n: int


def t_interval(diffs: Sequence[float], level: float = 0.95) -> Interval:
    """Student-t interval of the mean of `diffs`: mean -+ t_{(1+level)/2, n-1} * sd / sqrt(n),
    sd with ddof=1. One value has no spread to measure: its bounds are nan (none: all nan)."""
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    x = np.asarray(diffs, dtype=np.float64)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(scipy_stats.t.ppf((1 + level) / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def _key(method: str, keep: float) -> MethodKey:
    return (str(method), round(float(keep), 6))


def _by_pair(rows: Iterable[dict], method_key: MethodKey) -> dict[tuple, float]:
    """Accuracy by (noise, protocol, seed) of the runs of one (method, keep) group."""
    want = _key(*method_key)
    out: dict[tuple, float] = {}
    for r in rows:
        if _key(r["method"], r["keep"]) != want:
            continue
        pair = tuple(r[f] for f in PAIR_FIELDS)
        if pair in out:
            raise ValueError(f"two runs of {want} at (noise, protocol, seed) = {pair}")
        out[pair] = float(r["accuracy"])
    return out


def paired_differences(
    rows: Iterable[dict], method_key: MethodKey, reference_key: MethodKey
) -> list[float]:
    """method's accuracy minus reference's, one per (noise, protocol, seed) both ran, in
    sorted order of those; a run without its partner is left out."""
    rows = list(rows)
    method = _by_pair(rows, method_key)
    reference = _by_pair(rows, reference_key)
    return [method[p] - reference[p] for p in sorted(method.keys() & reference.keys())]


def paired_difference(
    rows: Iterable[dict], method_key: MethodKey, reference_key: MethodKey, level: float = 0.95
) -> Interval:
    """Mean accuracy difference (method - reference) over runs paired by (noise, protocol,
    seed), with its t-interval; `method_key` and `reference_key` are (method, keep)."""
    return t_interval(paired_differences(rows, method_key, reference_key), level)


def difference_to_constant(
    rows: Iterable[dict], method_key: MethodKey, constant: float, level: float = 0.95
) -> Interval:
    """Mean of (accuracy - constant) over a group's runs, with its t-interval: e.g. full-SFT
    against the base model, whose accuracy is one number per noise rate."""
    diffs = [acc - constant for _, acc in sorted(_by_pair(rows, method_key).items())]
    return t_interval(diffs, level)


def verdict(interval: Interval) -> Literal["win", "loss", "tie"]:
    """`win` when the interval lies above 0, `loss` when below, else (or n < 2) `tie`."""
    if interval.n < 2 or math.isnan(interval.low) or math.isnan(interval.high):
        return "tie"
    if interval.low > 0:
        return "win"
    if interval.high < 0:
        return "loss"
    return "tie"


__all__ = [
    "Interval",
    "difference_to_constant",
    "paired_difference",
    "paired_differences",
    "t_interval",
    "verdict",
]
