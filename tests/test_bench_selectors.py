"""Benchmark baseline selectors: sizes, determinism, ranking, IFD by hand, DEITA's diversity
filter, the oracles on a hand-made pool, and that no selector but the oracles reads a record's
(hidden) metadata."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from stepsift.bench.generate import write_benchmark
from stepsift.bench.selectors import (
    ORACLES,
    SELECTORS,
    SelectionResult,
    SelectorInputs,
    deita_like,
    diverse_greedy,
    full,
    high_loss,
    ifd,
    ifd_scores,
    less,
    loss_filter,
    oracle_clean,
    oracle_clean_all,
    oracle_target,
    ost_drop_harmful,
    ost_top_k,
    random_k,
)
from stepsift.data import read_records
from stepsift.data.record import Record, Source, Turn
from stepsift.proxy.builtin import BuiltinProxy
from stepsift.proxy.tiny_vlm import TinyVLMConfig

SMALL = TinyVLMConfig(d_model=32, n_layers=2, n_heads=2, max_len=96)


def qa(rid: str, user: str, reply: str, images: Sequence[Path] = ()) -> Record:
    return Record(
        id=rid,
        turns=(Turn("user", user), Turn("assistant", reply, True)),
        images=tuple(images),
        source=Source(Path("test.jsonl"), 1),
        format="test",
        raw="{}",
    )


class Poison(dict):
    """A metadata dict that fails the test on any read."""

    def _boom(self, *a, **k):
        raise AssertionError("a selector read Record.metadata")

    __getitem__ = get = __contains__ = __iter__ = __len__ = _boom
    keys = values = items = __repr__ = _boom


@pytest.fixture(scope="module")
def proxy() -> BuiltinProxy:
    return BuiltinProxy(SMALL, seed=0)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    paths = write_benchmark(tmp_path_factory.mktemp("bench"), n_pool=40, n_anchors=4, n_test=2)
    return list(read_records(paths.pool).records)


def table(ids: list[str], utility: list[float], loss: list[float], harmful=None) -> pa.Table:
    cols = {"id": ids, "utility": utility, "loss": loss}
    if harmful is not None:
        cols["harmful"] = harmful
    return pa.table(cols)


# --- sizes, random --------------------------------------------------------------------------


def test_full_and_random_sizes(pool: list[Record]) -> None:
    assert full(pool).kept_ids == [r.id for r in pool]
    for fraction, size in ((0.25, 10), (0.33, 13), (1.0, 40), (0.01, 0)):
        res = random_k(pool, fraction, seed=1)
        assert res.n_kept == res.n_target == size
        assert len(set(res.kept_ids)) == size and res.select_seconds >= 0
    with pytest.raises(ValueError):
        random_k(pool, 0.0)
    with pytest.raises(ValueError):
        random_k(pool, 1.5)


def test_random_deterministic_by_seed(pool: list[Record]) -> None:
    assert random_k(pool, 0.5, seed=3).kept_ids == random_k(pool, 0.5, seed=3).kept_ids
    assert random_k(pool, 0.5, seed=3).kept_ids != random_k(pool, 0.5, seed=4).kept_ids


# --- score-table selectors ------------------------------------------------------------------


def test_ost_top_k_is_top_by_utility() -> None:
    rng = np.random.default_rng(0)
    ids = [f"r{i:02d}" for i in range(30)]
    utility = rng.normal(size=30)
    utility[5] = utility[6]  # a tie: broken by id
    res = ost_top_k(table(ids, utility.tolist(), [1.0] * 30), 0.3)
    expected = [ids[i] for i in sorted(range(30), key=lambda i: (-utility[i], ids[i]))[:9]]
    assert res.kept_ids == expected and res.n_target == 9 and res.note == ""


def test_ost_drop_harmful_never_keeps_harmful() -> None:
    ids = [f"r{i}" for i in range(10)]
    utility = [0.9, 0.8, -0.1, -0.2, -0.3, -0.4, -0.5, -0.6, -0.7, -0.8]
    harmful = [u < 0 for u in utility]
    res = ost_drop_harmful(table(ids, utility, [1.0] * 10, harmful), 0.5)
    assert res.kept_ids == ["r0", "r1"] and res.n_target == 5
    assert "3 harmful" in res.note
    # without a harmful column, negative utility counts as harmful (as in `stepsift select`)
    assert ost_drop_harmful(table(ids, utility, [1.0] * 10), 0.5).kept_ids == ["r0", "r1"]
    assert ost_top_k(table(ids, utility, [1.0] * 10, harmful), 0.5).n_kept == 5


def test_high_loss_keeps_the_highest_loss() -> None:
    ids = [f"r{i}" for i in range(8)]
    loss = [0.5, 3.0, 0.1, 2.0, 9.0, 0.2, 1.0, 4.0]
    res = high_loss(table(ids, [0.0] * 8, loss), 0.5)
    assert res.kept_ids == ["r4", "r7", "r1", "r3"]
    assert res.scores is not None and res.scores["r4"] == 9.0


def test_loss_filter_keeps_the_lowest_loss_ties_by_id_nan_last() -> None:
    ids = ["r5", "r1", "r4", "r0", "r3", "r2", "r6", "r7"]
    loss = [0.5, 3.0, 0.2, float("nan"), 0.2, 9.0, 1.0, 0.1]
    res = loss_filter(table(ids, [0.0] * 8, loss), 0.5)
    # 0.1 (r7), then the 0.2 tie by id (r3 before r4), then 0.5 (r5)
    assert res.kept_ids == ["r7", "r3", "r4", "r5"]
    assert res.name == "loss_filter" and res.n_target == 4 and res.note == ""
    assert res.scores is not None and res.scores["r7"] == 0.1 and np.isnan(res.scores["r0"])
    everything = loss_filter(table(ids, [0.0] * 8, loss), 1.0).kept_ids
    assert everything[-1] == "r0"  # NaN last, not first as a naive -loss sort would put it
    assert everything[:-1] == ["r7", "r3", "r4", "r5", "r6", "r1", "r2"]
    # the opposite direction of high_loss, NaN last in both
    assert high_loss(table(ids, [0.0] * 8, loss), 1.0).kept_ids == [
        "r2", "r1", "r6", "r5", "r3", "r4", "r7", "r0"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="lacks column 'loss'"):
        loss_filter(pa.table({"id": ids, "utility": [0.0] * 8}), 0.5)


def test_less_keeps_the_top_by_utility_of_a_less_table() -> None:
    ids = ["b", "a", "c", "d", "e"]
    utility = [0.3, 0.3, float("nan"), 0.9, -0.2]
    res = less(table(ids, utility, [1.0] * 5), 0.6)
    assert res.kept_ids == ["d", "a", "b"] and res.n_target == 3 and res.name == "less"
    assert less(table(ids, utility, [1.0] * 5), 1.0).kept_ids[-1] == "c"
    tagged = table(ids, utility, [1.0] * 5)
    made_by_less = tagged.replace_schema_metadata({"stepsift": '{"method": "less"}'})
    assert less(made_by_less, 0.6).kept_ids == ["d", "a", "b"]
    made_by_exact = tagged.replace_schema_metadata({"stepsift": '{"method": "exact"}'})
    with pytest.raises(ValueError, match="score --method less"):
        less(made_by_exact, 0.6)


# --- oracles (the only selectors allowed to read the hidden metadata) ------------------------


def tagged(rid: str, noise: str, family: str | None = None) -> Record:
    meta = {"noise": noise} if family is None else {"noise": noise, "family": family}
    return replace(qa(rid, "q", "a"), metadata={"meta": meta})


def oracle_pool() -> list[Record]:
    return [
        tagged("c0", "clean", "chain"),
        tagged("w0", "misread", "chain"),
        tagged("c1", "clean", "count"),
        tagged("d0", "near_duplicate", "chain"),
        tagged("w1", "arithmetic"),
        tagged("c2", "clean"),  # no family: counts as chain
        tagged("w2", "truncated", "count"),
        tagged("c3", "clean", "compare"),
        tagged("d1", "near_duplicate", "count"),
        tagged("c4", "clean", "chain"),
    ]


NOT_WRONG_IDS = ["c0", "c1", "d0", "c2", "c3", "d1", "c4"]


def test_oracle_clean_all_keeps_exactly_the_not_wrong() -> None:
    res = oracle_clean_all(oracle_pool())
    assert res.kept_ids == NOT_WRONG_IDS  # pool order, near-duplicates kept (not wrong)
    assert res.n_pool == 10 and res.n_target == 7 and res.name == "oracle_clean_all"


def test_oracle_clean_is_a_seeded_subset_of_the_not_wrong() -> None:
    pool = oracle_pool()
    res = oracle_clean(pool, 0.5, seed=3)
    assert res.n_kept == res.n_target == 5 and res.note == ""
    assert set(res.kept_ids) <= set(NOT_WRONG_IDS) and len(set(res.kept_ids)) == 5
    assert res.kept_ids == [i for i in NOT_WRONG_IDS if i in res.kept_ids]  # pool order
    assert oracle_clean(pool, 0.5, seed=3).kept_ids == res.kept_ids
    draws = {tuple(oracle_clean(pool, 0.5, seed=s).kept_ids) for s in range(10)}
    assert len(draws) > 1  # the seed matters
    # 8 asked for, 7 not wrong: all 7, and the note says so
    short = oracle_clean(pool, 0.8, seed=0)
    assert short.kept_ids == NOT_WRONG_IDS and short.n_target == 8
    assert short.note == "only 7 of 10 not wrong, for a target of 8"


def test_oracle_target_keeps_the_not_wrong_of_the_target_families() -> None:
    pool = oracle_pool()
    res = oracle_target(pool)
    assert res.kept_ids == ["c0", "d0", "c2", "c4"]  # chain; c2 has no family: chain
    assert res.n_target == 4 and "4 of 7 not-wrong" in res.note
    assert oracle_target(pool, ("count", "compare")).kept_ids == ["c1", "c3", "d1"]
    assert oracle_target(pool, ("nothing",)).kept_ids == []
    inputs = SelectorInputs(pool, target_families=("count",))
    assert SELECTORS["oracle_target"](inputs, 1.0).kept_ids == ["c1", "d1"]
    with pytest.raises(ValueError, match="at least one"):
        oracle_target(pool, ())


def test_oracles_refuse_records_without_the_hidden_tags() -> None:
    with pytest.raises(ValueError, match='metadata\\["meta"\\]\\["noise"\\]'):
        oracle_clean_all([qa("x", "q", "a")])


# --- IFD -------------------------------------------------------------------------------------


def test_ifd_equals_the_ratio_by_hand(proxy: BuiltinProxy, pool: list[Record]) -> None:
    record = pool[0]
    assert record.images  # the benchmark's records carry an image; s(A) drops it by default
    with torch.no_grad():
        conditioned = proxy.per_sample_loss({}, proxy.collate([record]).tensors)
        answer = replace(record, turns=(record.turns[1],), images=())
        alone = proxy.per_sample_loss({}, proxy.collate([answer]).tensors)
    by_hand = float(conditioned[0] / alone[0])
    assert ifd_scores(proxy, pool[:5], batch_size=3)[0] == pytest.approx(by_hand, rel=1e-5)
    res = ifd(proxy, pool[:5], 1.0, batch_size=3)
    assert res.scores is not None and res.scores[record.id] == pytest.approx(by_hand, rel=1e-5)


def test_ifd_excludes_above_one_and_says_so(proxy: BuiltinProxy, pool: list[Record]) -> None:
    scores = ifd_scores(proxy, pool, batch_size=16)
    above = scores > 1
    assert above.any() and (~above).any()  # an untrained proxy puts IFD on both sides of 1
    res = ifd(proxy, pool, 1.0, batch_size=16)
    kept = {pool.index(r) for r in pool if r.id in set(res.kept_ids)}
    assert not any(above[i] for i in kept)
    assert res.n_kept == int((~above).sum()) < res.n_target == len(pool)
    assert f"{int(above.sum())} with IFD > 1" in res.note
    # kept best first, and the top by IFD among the eligible
    kept_scores = [res.scores[i] for i in res.kept_ids]
    assert kept_scores == sorted(kept_scores, reverse=True)
    small = ifd(proxy, pool, 0.1, batch_size=16)
    assert small.kept_ids == res.kept_ids[:4] and small.note == ""


def test_ifd_undefined_without_answer_tokens(proxy: BuiltinProxy) -> None:
    long_question = qa("long", "x" * 200, "short")  # the answer falls outside the window
    records = [long_question, qa("a", "what is 2+2", "4"), qa("b", "name a digit", "7")]
    scores = ifd_scores(proxy, records)
    assert np.isnan(scores[0]) and not np.isnan(scores[1:]).any()
    assert "long" not in ifd(proxy, records, 1.0).kept_ids


# --- DEITA-like ------------------------------------------------------------------------------


def twin_pool() -> list[Record]:
    texts = [
        ("What is the sum of the digits?", "3 + 4 = 7.\nAnswer: 7"),
        ("Which digit is larger?", "Largest 9.\nAnswer: 9"),
        ("How many even digits?", "Even digits: 2, 4. Count = 2."),
        ("Hello there", "Completely unrelated prose about the weather today."),
        ("Multiply the two digits", "6 * 5 = 30.\nAnswer: 30"),
    ]
    records = [qa(f"s{i}", q, a) for i, (q, a) in enumerate(texts)]
    return records + [replace(records[1], id="twin")]


@pytest.mark.parametrize("embedding", ["proxy", "tfidf"])
def test_deita_filter_drops_an_exact_twin(proxy: BuiltinProxy, embedding: str) -> None:
    records = twin_pool()
    on = deita_like(proxy, records, 1.0, threshold=0.99, embedding=embedding, batch_size=8)
    assert on.n_kept == len(records) - 1
    assert ("s1" in on.kept_ids) != ("twin" in on.kept_ids)  # exactly one of the twins
    assert "diversity filter" in on.note
    off = deita_like(proxy, records, 1.0, threshold=None, embedding=embedding, batch_size=8)
    assert sorted(off.kept_ids) == sorted(r.id for r in records) and off.note == ""
    # filter off: plain ranking by complexity x quality, best first
    ranked = [off.scores[i] for i in off.kept_ids]
    assert ranked == sorted(ranked, reverse=True)


def test_diverse_greedy_blocks_do_not_change_the_result() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 8))
    emb[[7, 23, 41]] = emb[3]  # twins of row 3, in other blocks
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    order = list(rng.permutation(50))
    full_run = diverse_greedy(order, emb, 40, 0.8, block=1000)
    assert sum(i in full_run for i in (3, 7, 23, 41)) == 1
    for block in (1, 2, 7, 16):
        assert diverse_greedy(order, emb, 40, 0.8, block=block) == full_run
    assert diverse_greedy(order, emb, 10, None) == order[:10]


def test_proxy_selectors_are_deterministic(proxy: BuiltinProxy, pool: list[Record]) -> None:
    for run in (
        lambda: ifd(proxy, pool, 0.3, batch_size=16),
        lambda: deita_like(proxy, pool, 0.3, batch_size=16),
    ):
        a, b = run(), run()
        assert a.kept_ids == b.kept_ids and a.n_kept == a.n_target == 12


# --- hidden metadata, registry ---------------------------------------------------------------


def test_selectors_never_read_metadata(proxy: BuiltinProxy, pool: list[Record]) -> None:
    assert all("meta" in r.metadata for r in pool)  # the benchmark's ground truth is there
    poisoned = [replace(r, metadata=Poison()) for r in pool]
    stripped = [replace(r, metadata={}) for r in pool]
    ids = [r.id for r in pool]
    rng = np.random.default_rng(0)
    scores = table(ids, rng.normal(size=40).tolist(), rng.random(40).tolist())
    for name, selector in SELECTORS.items():
        if name in ORACLES or name in ("ost_auto", "ost_diverse"):
            continue  # those two read the same table as ost (tests/test_diverse.py)
        results = [
            selector(
                SelectorInputs(records, scores=scores, less_scores=scores, proxy=proxy, seed=2),
                0.25,
            ).kept_ids
            for records in (pool, poisoned, stripped)
        ]
        assert results[0] == results[1] == results[2], name
    tfidf = [deita_like(proxy, rs, 0.25, embedding="tfidf") for rs in (pool, poisoned)]
    assert tfidf[0].kept_ids == tfidf[1].kept_ids
    # the oracles, and only they, read it
    assert set(ORACLES) <= set(SELECTORS)
    for name in ORACLES:
        assert "ORACLE" in SELECTORS[name].description
        with pytest.raises(AssertionError, match="read Record.metadata"):
            SELECTORS[name](SelectorInputs(poisoned), 0.25)


def test_registry_runs_every_selector(proxy: BuiltinProxy, pool: list[Record]) -> None:
    ids = [r.id for r in pool]
    rng = np.random.default_rng(1)
    scores = table(ids, rng.normal(size=40).tolist(), rng.random(40).tolist())
    inputs = SelectorInputs(pool, scores=scores, proxy=proxy, batch_size=16, less_scores=scores)
    not_wrong = [r.id for r in pool if r.metadata["meta"]["noise"] in ("clean", "near_duplicate")]
    for name, selector in SELECTORS.items():
        assert selector.description
        if name in ("ost_auto", "ost_diverse"):
            continue  # their own budgets and inputs: tests/test_diverse.py
        res = selector(inputs, 0.5)
        assert isinstance(res, SelectionResult) and res.name == name
        assert set(res.kept_ids) <= set(ids) and res.n_pool == 40
        if name == "oracle_clean_all":
            assert res.kept_ids == not_wrong
        elif name == "oracle_target":  # the generator's records: no family yet, or some
            assert set(res.kept_ids) <= set(not_wrong)
        else:
            assert res.n_kept <= res.n_target == (40 if name == "full" else 20)
    assert SELECTORS["deita"](inputs, 0.5, threshold=None).n_kept == 20
    with pytest.raises(ValueError, match="needs scores"):
        SELECTORS["ost"](SelectorInputs(pool), 0.5)
    with pytest.raises(ValueError, match="needs proxy"):
        SELECTORS["ifd"](SelectorInputs(pool), 0.5)
    with pytest.raises(ValueError, match="needs less_scores"):
        SELECTORS["less"](SelectorInputs(pool, scores=scores), 0.5)
