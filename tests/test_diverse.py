"""Set-wise selection (`select --diverse`, select/diverse.py)."""

from __future__ import annotations

import numpy as np
import pytest
from cli_helpers import run_cli
from score_files import write_pool, write_score_file

from stepsift.select import diverse
from stepsift.select.decide import decide
from stepsift.select.harmful import Policy
from stepsift.select.keep import Keep
from stepsift.select.score_data import read_score_data


def naive_greedy(utility: np.ndarray, nb: diverse.Neighbours, k: int) -> list[int]:
    """One-at-a-time greedy over the same neighbour graph, written the obvious way."""
    n = len(utility)
    c = np.zeros((n, n))
    for i in range(n):
        for j, s in zip(nb.index[i], nb.similarity[i], strict=True):
            if j >= 0:
                c[i, j] = c[j, i] = max(c[i, j], s)
    redundancy, alive, chosen = np.zeros(n), np.ones(n, dtype=bool), []
    for _ in range(k):
        advantage = np.maximum(utility - np.median(utility), 0)
        gain = np.where(alive, utility - advantage * redundancy, -np.inf)
        j = int(np.argmax(gain))
        chosen.append(j)
        alive[j] = False
        redundancy = np.maximum(redundancy, c[j])
    return chosen


def test_exact_duplicates_that_top_k_keeps_are_dropped() -> None:
    rng = np.random.default_rng(0)
    n, d = 400, 32
    sketch = rng.normal(size=(n, d)).astype(np.float32)
    utility = rng.normal(size=n)
    utility[:40] = 5 + rng.random(40)  # the best 40 ...
    sketch[40:80] = sketch[:40]  # ... each with an exact duplicate just below it
    utility[40:80] = utility[:40] - 1e-3
    top_k = np.argsort(-utility)[:60]
    assert np.isin(np.arange(40, 80), top_k).sum() == 30  # top-k keeps 30 pairs whole
    chosen = diverse.diverse_order(utility, sketch, k=60)
    assert len(chosen) == len(set(chosen.tolist())) == 60
    pairs = [(i in chosen) + (i + 40 in chosen) for i in range(40)]
    assert max(pairs) == 1  # never both copies
    assert all(p == 1 for p in pairs)  # and one of each pair (they are the best samples)


def test_orthogonal_sketches_give_plain_top_k() -> None:
    rng = np.random.default_rng(1)
    n = 64
    sketch = np.eye(n, dtype=np.float32) * rng.uniform(0.5, 2, size=(n, 1)).astype(np.float32)
    utility = rng.normal(size=n)
    utility[5] = utility[9]  # a tie, broken by the ranking's order
    tie = np.empty(n, dtype=np.int64)
    order = np.lexsort((np.arange(n), -utility))
    tie[order] = np.arange(n)
    for k in (1, 10, 40, 64):
        got = diverse.diverse_order(utility, sketch, k=k, tie=tie)
        assert got.tolist() == order[:k].tolist()


@pytest.mark.parametrize("block", [1, 7, 64, 4096])
def test_blocked_greedy_equals_one_at_a_time_greedy(block: int) -> None:
    rng = np.random.default_rng(2)
    n, d = 600, 32
    sketch = rng.normal(size=(n, d)).astype(np.float32)
    src = rng.integers(0, n // 2, n // 2)
    sketch[n // 2 :] = sketch[src] + 0.4 * rng.normal(size=(n // 2, d)).astype(np.float32)
    utility = rng.normal(size=n) + 0.3
    nb = diverse.neighbours(sketch)
    want = naive_greedy(utility, nb, 250)
    assert diverse.greedy(utility, nb, k=250, block=block).tolist() == want


def test_token_budget_stops_before_the_first_choice_that_does_not_fit() -> None:
    rng = np.random.default_rng(3)
    n = 200
    sketch = rng.normal(size=(n, 16)).astype(np.float32)
    utility = rng.normal(size=n)
    tokens = rng.integers(10, 100, n)
    nb = diverse.neighbours(sketch)
    everything = diverse.greedy(utility, nb, k=n)
    got = diverse.greedy(utility, nb, tokens=tokens, budget_tokens=1500)
    assert got.tolist() == everything[: len(got)].tolist()
    assert tokens[got].sum() <= 1500 < tokens[everything[: len(got) + 1]].sum()


def test_lsh_neighbours_find_near_duplicates_in_a_big_pool() -> None:
    """Past EXACT_MAX the neighbours come from LSH; near-duplicates must still be found."""
    rng = np.random.default_rng(4)
    n, d = 12_000, 64
    sketch = rng.normal(size=(n, d)).astype(np.float32)
    half = n // 2
    sketch[half:] = sketch[:half] + 0.1 * rng.normal(size=(half, d)).astype(np.float32)
    nb = diverse.neighbours(sketch, exact_max=1000)
    twin = np.r_[np.arange(half, n), np.arange(half)]
    found = (nb.index == twin[:, None]).any(axis=1).mean()
    assert found > 0.97
    assert nb.index.shape == (n, diverse.NEIGHBOURS)
    assert (nb.similarity >= 0).all() and (nb.similarity <= 1).all()
    # no candidate is its own neighbour, no neighbour twice
    assert not (nb.index == np.arange(n)[:, None]).any()
    for row in nb.index[:200]:
        real = row[row >= 0]
        assert len(set(real.tolist())) == len(real)


def test_scale_and_shift_free_and_below_median_samples_untouched() -> None:
    rng = np.random.default_rng(5)
    sketch = rng.normal(size=(300, 16)).astype(np.float32)
    sketch[150:] = sketch[:150]
    utility = rng.normal(size=300)
    a = diverse.diverse_order(utility, sketch, k=100)
    scaled = diverse.diverse_order(utility * 2.0**-20, sketch * 32, k=100)  # exact in floats
    assert scaled.tolist() == a.tolist()
    # a shared offset (all utilities negative, as Adam's momentum can make them) changes
    # nothing: the penalty is measured from the median, not from 0
    assert diverse.diverse_order(utility - 64.0, sketch, k=100).tolist() == a.tolist()
    pairs = [(i in a) + (i + 150 in a) for i in range(150)]
    assert max(pairs) == 1  # never both copies of a pair within the better half
    # below the median nothing is discounted: the tail comes in plain utility order, after
    # the redundant copies (which fall to the median, no lower)
    chosen = diverse.diverse_order(utility, sketch, k=300)
    below = utility[chosen] < np.median(utility)
    first_below = int(np.argmax(below))
    assert below[first_below:].all()
    tail = utility[chosen[first_below:]]
    assert (np.diff(tail) <= 0).all()


def test_select_diverse_cli_and_missing_sketch_error(tmp_path) -> None:
    rng = np.random.default_rng(6)
    n = 100
    utility = rng.normal(size=n)
    utility[:10] = 10 + np.arange(10)
    sketch = rng.normal(size=(n, 16)).astype(np.float32)
    sketch[10:20] = sketch[:10]
    utility[10:20] = utility[:10] - 0.5
    ids = write_score_file(tmp_path / "s.parquet", utility, sketch=sketch)
    write_pool(tmp_path / "pool.jsonl", ids)
    args = ("select", tmp_path / "pool.jsonl", "--scores", tmp_path / "s.parquet", "--keep", "20")
    plain = run_cli(*args, "--out", tmp_path / "plain.jsonl")
    div = run_cli(*args, "--diverse", "--out", tmp_path / "div.jsonl")
    assert plain.rc == 0 and div.rc == 0, div.err
    plain_ids = {line.split('"')[3] for line in (tmp_path / "plain.jsonl").read_text().splitlines()}
    div_ids = {line.split('"')[3] for line in (tmp_path / "div.jsonl").read_text().splitlines()}
    copies = {ids[i] for i in range(10, 20)}
    assert copies <= plain_ids and not copies & div_ids and len(div_ids) == 20
    assert "diverse:" in div.out and "10 of the 20 kept are not in the plain top 20" in div.out
    write_score_file(tmp_path / "nosketch.parquet", utility, ids=ids)
    run = run_cli("select", tmp_path / "pool.jsonl", "--scores", tmp_path / "nosketch.parquet",
                  "--keep", "20", "--diverse", "--out", tmp_path / "x.jsonl")  # fmt: skip
    assert run.rc == 2 and "nosketch.parquet" in run.err and "`sketch` column" in run.err
    assert "exact, curvature, less" in run.err and not (tmp_path / "x.jsonl").exists()


def test_decide_diverse_with_auto_keeps_the_auto_count(tmp_path) -> None:
    rng = np.random.default_rng(7)
    utility = np.r_[np.full(30, 1.0) + rng.random(30) * 0.01, np.full(170, 0.01), -np.ones(50)]
    sketch = rng.normal(size=(250, 16)).astype(np.float32)
    write_score_file(tmp_path / "s.parquet", utility, sketch=sketch)
    data = read_score_data(tmp_path / "s.parquet")
    plain = decide(data, Keep(auto=True))
    div = decide(data, Keep(auto=True), policy=Policy(diverse=True))
    assert plain.n_target == div.n_target == len(div.kept_ids) == 30


def test_bench_selectors_ost_auto_and_ost_diverse(tmp_path) -> None:
    """The bench's ost_auto and ost_diverse make `select`'s own choices."""
    from stepsift.bench.selectors import SELECTORS, SelectorInputs

    rng = np.random.default_rng(8)
    n = 120
    utility = np.r_[
        np.full(20, 1.0) + rng.random(20) * 0.01, rng.random(60) * 0.01, -rng.random(40)
    ]
    sketch = rng.normal(size=(n, 16)).astype(np.float32)
    sketch[10:20] = sketch[:10]
    write_score_file(tmp_path / "s.parquet", utility, sketch=sketch)
    data = read_score_data(tmp_path / "s.parquet")
    import pyarrow.parquet as pq

    inputs = SelectorInputs([], scores=pq.read_table(tmp_path / "s.parquet"))
    auto = SELECTORS["ost_auto"](inputs, 1.0)
    assert auto.kept_ids == decide(data, Keep(auto=True)).kept_ids and auto.n_kept == 20
    assert "auto budget" in auto.note
    div = SELECTORS["ost_diverse"](inputs, 0.25)
    want = decide(data, Keep(fraction=0.25), policy=Policy(diverse=True)).kept_ids
    assert div.kept_ids == want and div.n_kept == div.n_target == 30
    assert len(set(div.kept_ids) & {data.ids[i] for i in range(20)}) == 10  # one per pair


def test_non_finite_sketches_are_similar_to_nothing() -> None:
    rng = np.random.default_rng(9)
    sketch = rng.normal(size=(50, 8)).astype(np.float32)
    sketch[3] = np.nan
    sketch[7, 2] = np.inf
    unit = diverse.unit_sketches(sketch)
    assert np.isfinite(unit).all() and not unit[3].any() and not unit[7].any()
    chosen = diverse.diverse_order(rng.normal(size=50), sketch, k=50)
    assert sorted(chosen.tolist()) == list(range(50))
