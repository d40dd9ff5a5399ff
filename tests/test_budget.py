"""Token budgets and the automatic budget (select/budget.py), through the library and the CLI,
with the fast and the full path agreeing byte for byte."""

from __future__ import annotations

import numpy as np
import pytest
from cli_helpers import run_cli
from score_files import write_pool, write_score_file

from stepsift.engine.store import DIGEST_KEY, REJECTED_KEY, file_digest
from stepsift.select import fast, topk
from stepsift.select.budget import (
    KNEE_MIN_GAP,
    auto_cut,
    explain_auto_cut,
    token_cut,
    utility_curve,
)
from stepsift.select.harmful import Policy
from stepsift.select.keep import Keep, parse_keep


def ids_for(n: int) -> list[str]:
    return [f"r{i:05d}" for i in range(n)]


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "tokens"),
    [
        ("2M-tokens", 2_000_000),
        ("500k-tokens", 500_000),
        ("1500000-tokens", 1_500_000),
        ("1.5M-tokens", 1_500_000),
        ("3G-tokens", 3_000_000_000),
        ("7-tokens", 7),
    ],
)
def test_token_budgets_parse(spec: str, tokens: int) -> None:
    keep = parse_keep(spec)
    assert keep.tokens == tokens and keep.by_curve and not keep.auto


def test_auto_parses_and_bad_budgets_are_refused() -> None:
    assert parse_keep("auto").auto and parse_keep(" AUTO ").auto
    for spec in ("0-tokens", "2X-tokens", "tokens", "-5-tokens", "2M tokens"):
        with pytest.raises(ValueError, match=repr(spec).replace("'", ".")):
            parse_keep(spec)
    with pytest.raises(ValueError, match="depends on the scores"):
        Keep(auto=True).size(10)


# --- the curve and token cuts --------------------------------------------------------------


def test_curve_follows_the_ranking_and_token_cut_keeps_what_fits() -> None:
    utility = np.array([0.1, 0.5, 0.3, -0.2])
    tokens = np.array([10, 40, 20, 5])
    curve = utility_curve(ids_for(4), utility, tokens)
    assert curve.order.tolist() == [1, 2, 0, 3]
    assert curve.cum_tokens.tolist() == [40, 60, 70, 75]
    assert curve.cum_utility == pytest.approx([0.5, 0.8, 0.9, 0.7])
    assert [token_cut(curve, b) for b in (0, 39, 40, 59, 60, 74, 75, 10**9)] == [
        0, 0, 1, 1, 2, 3, 4, 4,
    ]  # fmt: skip


def test_token_budget_keeps_the_right_count_through_select(tmp_path) -> None:
    rng = np.random.default_rng(0)
    n = 200
    utility = rng.normal(size=n)
    tokens = rng.integers(50, 500, size=n)
    ids = write_score_file(tmp_path / "s.parquet", utility, tokens)
    write_pool(tmp_path / "pool.jsonl", ids)
    order = np.lexsort((np.asarray(ids), -utility))
    budget = 20_000
    want = int((np.cumsum(tokens[order]) <= budget).sum())
    run = run_cli("select", tmp_path / "pool.jsonl", "--scores", tmp_path / "s.parquet",
                  "--keep", "20k-tokens", "--out", tmp_path / "out.jsonl")  # fmt: skip
    assert run.rc == 0, run.err
    kept = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(kept) == want
    assert f"kept {want} of {n}" in run.out and "token budget 20,000" in run.out
    assert f"supervised tokens kept: {int(tokens[order[:want]].sum()):,}" in run.out
    assert int(tokens[order[:want]].sum()) <= budget < int(tokens[order[: want + 1]].sum())


def test_a_budget_smaller_than_the_best_candidate_is_refused(tmp_path) -> None:
    ids = write_score_file(tmp_path / "s.parquet", np.array([1.0, 0.5]), np.array([100, 10]))
    write_pool(tmp_path / "pool.jsonl", ids)
    run = run_cli("select", tmp_path / "pool.jsonl", "--scores", tmp_path / "s.parquet",
                  "--keep", "50-tokens", "--out", tmp_path / "out.jsonl")  # fmt: skip
    assert run.rc == 2 and "smaller than the best candidate's 100" in run.err
    assert not (tmp_path / "out.jsonl").exists()


# --- auto ---------------------------------------------------------------------------------


def knee_curve(n_high: int, n_low: int, high: float, low: float, n_neg: int = 0):
    utility = np.r_[np.full(n_high, high), np.full(n_low, low), -np.ones(n_neg)]
    return utility_curve(ids_for(len(utility)), utility, np.full(len(utility), 100))


@pytest.mark.parametrize(("n_high", "n_low"), [(10, 90), (30, 70), (200, 800)])
def test_auto_finds_a_known_knee(n_high: int, n_low: int) -> None:
    """Two regimes of utility per token: the knee is where the first one ends."""
    assert auto_cut(knee_curve(n_high, n_low, 1.0, 0.02, n_neg=50)) == n_high


def test_auto_is_scale_free() -> None:
    """Multiplying utilities or tokens by a constant does not move the cut."""
    rng = np.random.default_rng(1)
    u = rng.lognormal(size=500) * np.where(rng.random(500) < 0.3, -1, 1)
    t = rng.integers(10, 1000, 500)
    ids = ids_for(500)
    cut = auto_cut(utility_curve(ids, u, t))
    assert 0 < cut < 500
    assert auto_cut(utility_curve(ids, u * 1e-6, t)) == cut
    assert auto_cut(utility_curve(ids, u * 3e4, t * 7)) == cut


def test_auto_on_a_smooth_curve_cuts_where_the_marginal_falls_below_the_average() -> None:
    """Knee = where utility per token drops below the positive prefix's average."""
    u = np.linspace(1.0, 0.0, 1001)[:-1]  # positive, linearly falling, equal tokens
    cut = auto_cut(utility_curve(ids_for(len(u)), u, np.ones(len(u))))
    assert cut == pytest.approx(500, abs=2)  # the marginal equals the mean 0.5 halfway


@pytest.mark.parametrize("power", [0.0, 1.0, 2.0])
def test_auto_cuts_where_a_token_buys_less_than_the_average_token(power: float) -> None:
    """With utility per token falling along the ranking, the knee is exactly the last
    candidate whose utility per token is at least the positive prefix's average."""
    u = np.linspace(1.0, 0.0, 401)[:-1]
    t = (50 + np.arange(len(u)) ** power * 3).astype(int)
    cut = auto_cut(utility_curve(ids_for(len(u)), u, t))
    average = u.sum() / t.sum()
    per_token = u / t
    assert per_token[cut - 1] >= average > per_token[cut]


def test_auto_stays_sane_on_flat_negative_and_tiny_curves() -> None:
    flat = utility_curve(ids_for(100), np.full(100, 0.3), np.full(100, 7))
    cut = explain_auto_cut(flat)
    assert cut.n == 100 and cut.gap < KNEE_MIN_GAP and "no knee" in cut.reason
    assert auto_cut(utility_curve(ids_for(50), -np.ones(50), np.ones(50))) == 0
    assert auto_cut(utility_curve(ids_for(50), np.zeros(50), np.ones(50))) == 0
    assert auto_cut(utility_curve(["a"], np.array([2.0]), np.array([5]))) == 1
    assert auto_cut(utility_curve(["a"], np.array([-2.0]), np.array([5]))) == 0
    assert auto_cut(utility_curve([], np.zeros(0), np.zeros(0))) == 0
    one_positive = utility_curve(ids_for(3), np.array([1.0, -1, -2]), np.ones(3))
    assert auto_cut(one_positive) == 1
    no_tokens = utility_curve(ids_for(100), np.r_[np.ones(10), np.full(90, 0.01)], np.zeros(100))
    assert auto_cut(no_tokens) == 10  # zero cost everywhere: every candidate costs the same


def test_auto_through_the_cli_prints_the_cut_and_why(tmp_path) -> None:
    utility = np.r_[np.full(20, 1.0), np.full(80, 0.01), -np.ones(100)]
    ids = write_score_file(tmp_path / "s.parquet", utility, np.full(200, 30))
    write_pool(tmp_path / "pool.jsonl", ids)
    run = run_cli("select", tmp_path / "pool.jsonl", "--scores", tmp_path / "s.parquet",
                  "--keep", "auto", "--out", tmp_path / "out.jsonl")  # fmt: skip
    assert run.rc == 0, run.err
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 20
    assert "auto budget: kept 20" in run.out and "knee" in run.out
    assert "100 positive-utility candidates" in run.out


def test_auto_with_nothing_positive_is_refused_with_the_reason(tmp_path) -> None:
    ids = write_score_file(tmp_path / "s.parquet", -np.ones(5))
    write_pool(tmp_path / "pool.jsonl", ids)
    run = run_cli("select", tmp_path / "pool.jsonl", "--scores", tmp_path / "s.parquet",
                  "--keep", "auto", "--out", tmp_path / "out.jsonl")  # fmt: skip
    assert run.rc == 2 and "no candidate has positive utility" in run.err


# --- the fast path agrees -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("keep", "order", "policy", "drop"),
    [
        ("auto", "input", Policy(), False),
        ("3k-tokens", "utility", Policy(), True),
        ("auto", "utility", Policy(diverse=True), True),
        ("4k-tokens", "input", Policy(diverse=True, harmful="threshold"), False),
        ("30%", "utility", Policy(harmful="calibrated", correction="bh"), True),
    ],
)
def test_fast_and_full_paths_agree_with_budgets_and_policies(tmp_path, keep, order, policy, drop):
    """A score file that vouches for the pool's bytes takes the fast path; the full path
    (re-reading every record) must choose and write exactly the same."""
    rng = np.random.default_rng(3)
    n = 150
    signal = rng.normal(size=n) * 0.01
    folds = signal[:, None] + rng.normal(size=(n, 10)) * 0.01
    sketch = rng.normal(size=(n, 16)).astype(np.float32)
    sketch[100:] = sketch[:50]  # duplicates
    ids = ids_for(n)
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, ids)
    scores = tmp_path / "s.parquet"
    settings = {DIGEST_KEY: file_digest(pool), REJECTED_KEY: 0}
    write_score_file(scores, folds.mean(axis=1), rng.integers(20, 200, n), folds, [10] * 10,
                     sketch, ids, settings)  # fmt: skip
    parsed = parse_keep(keep)
    got = fast.fast_select(pool, scores, parsed, tmp_path / "fast.jsonl", drop, order,
                           policy=policy)  # fmt: skip
    assert got is not None
    plan = topk.plan_selection(pool, scores, parsed, drop, False, order, None, policy)
    from stepsift.data import write_records

    write_records(plan.records, tmp_path / "full.jsonl", container=plan.container)
    assert got == plan.selection
    assert (tmp_path / "fast.jsonl").read_bytes() == (tmp_path / "full.jsonl").read_bytes()
    assert len(got.kept_ids) > 0
