"""Anchor split-half reliability and calibrated harmful flags (select/reliability.py)."""

from __future__ import annotations

import numpy as np
import pytest
from cli_helpers import run_cli
from score_files import write_pool, write_score_file

from stepsift.select.reliability import (
    MIN_RELIABILITY,
    calibrated_harmful,
    harmful_threshold,
    split_half_reliability,
    standard_error,
)


def folds_with(signal: np.ndarray, noise: float, k: int, rng) -> np.ndarray:
    return signal[:, None] + noise * rng.normal(size=(len(signal), k))


def test_high_reliability_when_folds_share_a_signal() -> None:
    rng = np.random.default_rng(0)
    fu = folds_with(rng.normal(size=2000), 0.5, 10, rng)
    r = split_half_reliability(fu, [10] * 10)
    assert r.rho_mean > 0.9 and r.full_set_reliability > 0.95 and r.warning is None
    assert r.rho_low <= r.rho_mean <= r.rho_high
    assert r.full_set_reliability == pytest.approx(2 * r.rho_mean / (1 + r.rho_mean))
    assert r.n_anchors == 100 and r.n_splits == 50


def test_low_reliability_and_a_warning_on_pure_noise() -> None:
    rng = np.random.default_rng(1)
    r = split_half_reliability(rng.normal(size=(2000, 10)), [10] * 10)
    assert abs(r.rho_mean) < 0.1 and r.full_set_reliability < MIN_RELIABILITY
    assert r.warning is not None and "below 0.7" in r.warning


def test_expected_reliability_from_the_noise_level() -> None:
    """Signal variance 1, per-fold noise s^2 with K folds: a half of K/2 folds has noise
    variance 2 s^2 / K, so the halves correlate about 1 / (1 + 2 s^2 / K)."""
    rng = np.random.default_rng(2)
    k, s = 10, 2.0
    fu = folds_with(rng.normal(size=20_000), s, k, rng)
    r = split_half_reliability(fu, [10] * k)
    pearson = 1 / (1 + 2 * s**2 / k)
    spearman = 6 / np.pi * np.arcsin(pearson / 2)  # for jointly normal halves
    assert r.rho_mean == pytest.approx(spearman, abs=0.02)


def test_small_anchor_sets_warn_and_unequal_folds_are_weighted() -> None:
    rng = np.random.default_rng(3)
    fu = folds_with(rng.normal(size=500), 0.1, 5, rng)
    r = split_half_reliability(fu, [4, 4, 4, 4, 4])
    assert r.n_anchors == 20 and "only 20 anchors" in r.warning
    assert r.full_set_reliability > 0.9  # the ranking itself agrees; only the size warns
    # a fold of one anchor weighs 1/41 of a half's utility: its noise hardly matters
    fu = folds_with(rng.normal(size=2000), 0.05, 4, rng)
    fu[:, 0] = rng.normal(size=2000) * 10
    weighted = split_half_reliability(fu, [1, 40, 40, 40])
    flat = split_half_reliability(fu, [40, 40, 40, 40])
    assert weighted.rho_mean > 0.9 > flat.rho_mean


def test_cannot_split_one_fold() -> None:
    r = split_half_reliability(np.ones((10, 1)), [50])
    assert np.isnan(r.rho_mean) and "cannot split" in r.warning
    with pytest.raises(ValueError, match="2 anchor folds"):
        standard_error(np.ones((10, 1)), [50])
    with pytest.raises(ValueError, match="3 folds but anchor_fold_sizes lists 2"):
        split_half_reliability(np.ones((10, 3)), [5, 5])


def test_standard_error_is_between_fold_spread_over_sqrt_k_for_equal_folds() -> None:
    rng = np.random.default_rng(4)
    fu = rng.normal(size=(50, 8))
    se = standard_error(fu, [12] * 8)
    assert se == pytest.approx(fu.std(axis=1, ddof=1) / np.sqrt(8))


def simulated_pool(rng, n: int = 4000, k: int = 10, per_anchor_sd: float = 1.0):
    """Truth known: 20% harmful (true utility -0.3), the rest >= 0; each fold's utility is the
    mean of 10 anchors' noisy loss drops."""
    harmful = rng.random(n) < 0.2
    true = np.where(harmful, -0.3, np.abs(rng.normal(size=n)) * 0.2)
    anchors = true[:, None] + per_anchor_sd * rng.normal(size=(n, k * 10))
    fu = anchors.reshape(n, k, 10).mean(axis=2)
    return true, harmful, fu, fu.mean(axis=1)


def test_calibrated_flags_fewer_false_positives_than_negative_utility() -> None:
    rng = np.random.default_rng(5)
    _, harmful, fu, utility = simulated_pool(rng)
    naive = utility < 0
    calibrated = calibrated_harmful(utility, fu, [10] * 10)
    fp_naive, fp_cal = (naive & ~harmful).sum(), (calibrated & ~harmful).sum()
    precision = lambda f: (f & harmful).sum() / f.sum()  # noqa: E731
    assert fp_cal < fp_naive / 3
    assert precision(calibrated) > precision(naive) + 0.1
    assert calibrated.sum() > 0.3 * harmful.sum()  # still finds a good share of them
    # on candidates whose true utility is 0 exactly, about `level` of them are flagged
    null = np.zeros(20_000)[:, None] + rng.normal(size=(20_000, 10)) * 0.3
    rate = calibrated_harmful(null.mean(axis=1), null, [10] * 10).mean()
    assert rate == pytest.approx(0.05, abs=0.01)


def test_bh_correction_flags_a_subset_and_thresholds_are_negative() -> None:
    rng = np.random.default_rng(6)
    _, harmful, fu, utility = simulated_pool(rng)
    t = harmful_threshold(fu, [10] * 10)
    assert (t < 0).all()
    plain = calibrated_harmful(utility, fu, [10] * 10)
    bh = calibrated_harmful(utility, fu, [10] * 10, correction="bh")
    assert bh.sum() <= plain.sum() and not (bh & ~plain).any()
    null = rng.normal(size=(5000, 10))
    assert calibrated_harmful(null.mean(axis=1), null, [10] * 10, correction="bh").sum() <= 5
    with pytest.raises(ValueError, match="level"):
        harmful_threshold(fu, [10] * 10, level=0)


def test_select_prints_reliability_and_uses_calibrated_flags(tmp_path) -> None:
    rng = np.random.default_rng(7)
    _, harmful, fu, utility = simulated_pool(rng, n=600)
    ids = write_score_file(tmp_path / "s.parquet", utility, fold_utility=fu)
    write_pool(tmp_path / "pool.jsonl", ids)
    base = ("select", tmp_path / "pool.jsonl", "--scores", tmp_path / "s.parquet",
            "--keep", "100%", "--drop-harmful")  # fmt: skip
    # (the default, evidence, also asks the loss: tests/test_harmful_evidence.py)
    run = run_cli(*base, "--harmful", "calibrated", "--out", tmp_path / "a.jsonl")
    assert run.rc == 0, run.err
    assert "anchor reliability:" in run.out and "harmful: calibrated" in run.out
    calibrated = int(calibrated_harmful(utility, fu, [10] * 10).sum())
    assert f"dropped as harmful: {calibrated}" in run.out
    kept = len((tmp_path / "a.jsonl").read_text().splitlines())
    assert kept == 600 - calibrated
    thr = run_cli(*base, "--harmful", "threshold", "--out", tmp_path / "b.jsonl")
    assert f"dropped as harmful: {int((utility < 0).sum())}" in thr.out
    # a noisy anchor set: the warning goes to stderr
    noise = rng.normal(size=(600, 10))
    write_score_file(tmp_path / "n.parquet", noise.mean(axis=1), fold_utility=noise, ids=ids)
    noisy = run_cli("select", tmp_path / "pool.jsonl", "--scores", tmp_path / "n.parquet",
                    "--keep", "10%", "--out", tmp_path / "c.jsonl")  # fmt: skip
    assert noisy.rc == 0 and "warning: anchor set:" in noisy.err and "below 0.7" in noisy.err
    # calibrated flags need fold utilities
    write_score_file(tmp_path / "plain.parquet", utility, ids=ids)
    none = run_cli("select", tmp_path / "pool.jsonl", "--scores", tmp_path / "plain.parquet",
                   "--keep", "10%", "--harmful", "calibrated",
                   "--out", tmp_path / "d.jsonl")  # fmt: skip
    assert none.rc == 2 and "plain.parquet" in none.err and "fold_utility" in none.err
    auto = run_cli("select", tmp_path / "pool.jsonl", "--scores", tmp_path / "plain.parquet",
                   "--keep", "10%", "--out", tmp_path / "e.jsonl")  # fmt: skip
    assert auto.rc == 0 and "the score file's own flags" in auto.out
    assert "anchor reliability" not in auto.out
