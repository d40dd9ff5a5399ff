"""bench/stats.py: the t-interval against a hand computation, pairing runs by seed, verdicts."""

from __future__ import annotations

import math

import pytest

from stepsift.bench.stats import (
    Interval,
    difference_to_constant,
    paired_difference,
    paired_differences,
    t_interval,
    verdict,
)

T_975_2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)
T_95_3 = 2.353363434801823  # 95% quantile, 3 degrees of freedom (a 90% interval)


def test_t_interval_matches_a_hand_computation() -> None:
    iv = t_interval([0.05, 0.06, 0.07])
    # mean 0.06, sd (ddof=1) 0.01, half-width t * sd / sqrt(3)
    half = T_975_2 * 0.01 / math.sqrt(3)
    assert iv.n == 3 and iv.mean == pytest.approx(0.06)
    assert iv.low == pytest.approx(0.06 - half) and iv.high == pytest.approx(0.06 + half)
    assert half == pytest.approx(0.0248413, abs=1e-6)
    # another level and n: [1, 2, 3, 6] has mean 3, sd sqrt(14/3)
    iv90 = t_interval([1.0, 2.0, 3.0, 6.0], level=0.90)
    half90 = T_95_3 * math.sqrt(14 / 3) / 2
    assert (iv90.low, iv90.high) == pytest.approx((3 - half90, 3 + half90))


def test_t_interval_small_samples() -> None:
    one = t_interval([0.3])
    assert one.n == 1 and one.mean == 0.3 and math.isnan(one.low) and math.isnan(one.high)
    none = t_interval([])
    assert none.n == 0 and math.isnan(none.mean)
    same = t_interval([0.02, 0.02, 0.02])
    assert same.low == same.high == pytest.approx(0.02)
    with pytest.raises(ValueError):
        t_interval([1.0, 2.0], level=1.0)


def test_verdict_needs_the_interval_to_exclude_zero() -> None:
    assert verdict(Interval(0.06, 0.035, 0.085, 3)) == "win"
    assert verdict(Interval(-0.06, -0.085, -0.035, 3)) == "loss"
    assert verdict(Interval(0.04, -0.01, 0.09, 3)) == "tie"
    assert verdict(Interval(0.04, 0.0, 0.09, 3)) == "tie"  # touching 0 does not exclude it
    assert verdict(t_interval([0.5])) == "tie"  # n < 2: no interval, no verdict
    assert verdict(t_interval([])) == "tie"
    assert verdict(t_interval([0.05, 0.06, 0.07])) == "win"
    assert verdict(t_interval([0.02, 0.04, 0.06])) == "tie"  # mean 0.04, half-width 0.0497


def run(method: str, keep: float, seed: int, accuracy: float, protocol: str = "A",
        noise: float = 0.4) -> dict:  # fmt: skip
    return {"noise": noise, "protocol": protocol, "method": method, "keep": keep,
            "seed": seed, "accuracy": accuracy}  # fmt: skip


def test_paired_difference_pairs_by_seed() -> None:
    rows = [
        # listed out of seed order, so pairing by position would be wrong
        run("ost", 0.2, 2, 0.70),
        run("ost", 0.2, 0, 0.66),
        run("ost", 0.2, 1, 0.65),
        run("full", 1.0, 0, 0.60),
        run("full", 1.0, 1, 0.62),
        run("full", 1.0, 2, 0.64),
        run("full", 1.0, 3, 0.10),  # no ost partner: left out
        run("ost", 0.5, 0, 0.99),  # another keep: another group
        run("full", 1.0, 0, 0.00, protocol="B"),  # another protocol: not paired with A's
        run("full", 1.0, 0, 0.00, noise=0.2),  # another noise rate: likewise
    ]
    diffs = paired_differences(rows, ("ost", 0.2), ("full", 1.0))
    assert diffs == pytest.approx([0.06, 0.03, 0.06])  # seeds 0, 1, 2
    iv = paired_difference(rows, ("ost", 0.2), ("full", 1.0))
    assert iv == t_interval(diffs) and iv.n == 3
    assert iv.mean == pytest.approx(0.05)
    reverse = paired_difference(rows, ("full", 1.0), ("ost", 0.2))
    assert reverse.mean == pytest.approx(-0.05) and reverse.low == pytest.approx(-iv.high)
    assert paired_difference(rows, ("ost", 0.5), ("full", 1.0)).n == 1
    assert paired_difference(rows, ("judge", 0.3), ("full", 1.0)).n == 0
    # keep fractions compare as numbers (a JSON round trip may give 0.2 or 0.20000000001)
    assert paired_difference(rows, ("ost", 0.2 + 1e-12), ("full", 1)).n == 3


def test_paired_difference_refuses_two_runs_of_one_seed() -> None:
    rows = [run("ost", 0.2, 0, 0.5), run("ost", 0.2, 0, 0.6), run("full", 1.0, 0, 0.5)]
    with pytest.raises(ValueError, match="two runs"):
        paired_difference(rows, ("ost", 0.2), ("full", 1.0))


def test_difference_to_constant_is_per_seed_against_the_base() -> None:
    rows = [run("full", 1.0, s, a) for s, a in ((0, 0.60), (1, 0.62), (2, 0.64))]
    iv = difference_to_constant(rows, ("full", 1.0), 0.5)
    hand = t_interval([0.10, 0.12, 0.14])
    assert (iv.mean, iv.low, iv.high, iv.n) == pytest.approx((hand.mean, hand.low, hand.high, 3))
    assert iv.mean == pytest.approx(0.12)
    assert iv.low == pytest.approx(0.12 - T_975_2 * 0.02 / math.sqrt(3))
    assert verdict(iv) == "win"
