"""Coverage selection (select/coverage.py): quotas by anchor group, each filled by that
group's own utility, and `select`'s default use of it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import run_cli
from score_files import write_pool, write_score_file

from stepsift.select.coverage import apportion, coverage_order


def test_apportion_is_proportional_and_sums_to_k() -> None:
    assert apportion(10, np.array([1, 1])).tolist() == [5, 5]
    # 4.49, 2.65, 2.86: floors 4, 2, 2 and the two largest remainders get one more
    assert apportion(10, np.array([22, 13, 14])).tolist() == [4, 3, 3]
    assert apportion(7, np.array([1, 1, 1])).tolist() == [3, 2, 2]  # ties: earlier first
    assert apportion(0, np.array([3, 1])).tolist() == [0, 0]
    for bad in ([], [0, 0], [-1, 2]):
        with pytest.raises(ValueError, match="cannot apportion"):
            apportion(5, np.array(bad))


def _two_kinds(n_a: int = 40, n_b: int = 40, seed: int = 0):
    """Kind-a candidates help group 0 a lot; kind-b ones help group 1 a little."""
    rng = np.random.default_rng(seed)
    g = np.zeros((n_a + n_b, 2))
    g[:n_a, 0] = 1.0 + rng.random(n_a)
    g[:n_a, 1] = -0.1 * rng.random(n_a)
    g[n_a:, 0] = -0.1 * rng.random(n_b)
    g[n_a:, 1] = 0.01 + 0.01 * rng.random(n_b)
    return g


def test_each_group_gets_its_quota_of_its_own_best() -> None:
    g = _two_kinds()
    total = g @ np.array([0.5, 0.5])
    plain = np.argsort(-total, kind="stable")[:20]
    assert np.all(plain < 40), "the plain top-k is all of the kind that moves the sum"
    tie = np.empty(80, dtype=np.int64)
    tie[np.argsort(-total, kind="stable")] = np.arange(80)
    chosen, served = coverage_order(g, np.array([30, 10]), 20, tie)
    assert sorted(np.bincount(served).tolist()) == [5, 15]
    assert np.bincount(served).tolist() == [15, 5]
    # group 0's 15 are its 15 best; group 1's 5 its 5 best
    assert set(chosen[served == 0]) == set(np.argsort(-g[:, 0])[:15])
    assert set(chosen[served == 1]) == set(np.argsort(-g[:, 1])[:5])
    assert len(set(chosen.tolist())) == 20


def test_a_candidate_two_groups_want_is_taken_once() -> None:
    # candidate 0 is best for both groups; the other groups' next best fill in
    g = np.array([[9.0, 9.0], [5.0, 0.0], [4.0, 0.0], [0.0, 5.0], [0.0, 4.0]])
    chosen, served = coverage_order(g, np.array([1, 1]), 4, np.arange(5))
    assert sorted(chosen.tolist()) == [0, 1, 2, 3] or sorted(chosen.tolist()) == [0, 1, 3, 4]
    assert len(set(chosen.tolist())) == 4 and np.bincount(served).tolist() == [2, 2]
    assert chosen[0] == 0  # the first turn is group 0's (ties to the earlier group)
    assert chosen.tolist() == [0, 3, 1, 4]


def test_nan_ranks_last_within_a_group() -> None:
    g = np.array([[np.nan], [1.0], [2.0]])
    chosen, _ = coverage_order(g, np.array([1]), 3, np.arange(3))
    assert chosen.tolist() == [2, 1, 0]


def test_select_fills_by_group_by_default_and_off_restores_top_k(tmp_path) -> None:
    g = _two_kinds()
    total = g @ np.array([0.75, 0.25])
    ids = write_score_file(
        tmp_path / "s.parquet", total, group_utility=g, groups={"algebra": 30, "geometry": 10}
    )
    write_pool(tmp_path / "pool.jsonl", ids)
    args = ("select", tmp_path / "pool.jsonl", "--scores", tmp_path / "s.parquet", "--keep", "25%")
    default = run_cli(*args, "--out", tmp_path / "default.jsonl")
    off = run_cli(*args, "--coverage", "off", "--out", tmp_path / "off.jsonl")
    assert default.rc == 0 and off.rc == 0, default.err + off.err
    assert "coverage: the budget filled by anchor group" in default.out
    assert "algebra 15, geometry 5" in default.out
    assert "coverage" not in off.out

    def kept(name: str) -> set[int]:
        lines = (tmp_path / name).read_text().splitlines()
        return {ids.index(json.loads(line)["id"]) for line in lines}

    assert kept("off.jsonl") == set(np.argsort(-total, kind="stable")[:20].tolist())
    default_kept = kept("default.jsonl")
    assert sum(i >= 40 for i in default_kept) == 5  # geometry's quota, from kind b


def test_a_budget_on_the_curve_stays_plain_and_no_groups_means_top_k(tmp_path) -> None:
    g = _two_kinds()
    total = g.mean(axis=1)
    ids = write_score_file(tmp_path / "s.parquet", total, group_utility=g, groups={"a": 1, "b": 1})
    write_pool(tmp_path / "pool.jsonl", ids)
    run = run_cli("select", tmp_path / "pool.jsonl", "--scores", tmp_path / "s.parquet",
                  "--keep", "auto", "--out", tmp_path / "auto.jsonl")  # fmt: skip
    assert run.rc == 0 and "coverage" not in run.out
    one = write_score_file(
        tmp_path / "one.parquet", total, group_utility=g[:, :1], groups={"a": 1}, ids=ids
    )
    assert one == ids
    run = run_cli("select", tmp_path / "pool.jsonl", "--scores", tmp_path / "one.parquet",
                  "--keep", "10", "--out", tmp_path / "one.jsonl")  # fmt: skip
    assert run.rc == 0 and "coverage" not in run.out


def test_group_metadata_that_does_not_match_the_columns_is_refused(tmp_path) -> None:
    g = _two_kinds()
    ids = write_score_file(
        tmp_path / "s.parquet", g.mean(1), group_utility=g, groups={"a": 1, "b": 1, "c": 1}
    )
    write_pool(tmp_path / "pool.jsonl", ids)
    run = run_cli("select", tmp_path / "pool.jsonl", "--scores", tmp_path / "s.parquet",
                  "--keep", "10", "--out", tmp_path / "x.jsonl")  # fmt: skip
    assert run.rc != 0 and "anchor_groups" in run.err and "2 columns" in run.err
