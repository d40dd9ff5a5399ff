"""Anchor groups found from the proxy (utility/anchor_groups.py, engine/anchor_grouping.py)
for anchors without a group field: the choice rule on planted profiles, the profiles of a
real proxy, and `stepsift score` / `select` end to end."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_helpers import run_cli
from sklearn.metrics import adjusted_rand_score

from stepsift.bench.generate import write_benchmark
from stepsift.engine.store import read_settings
from stepsift.utility.anchor_groups import (
    STABILITY,
    choose_groups,
    min_group_size,
    unit_profiles,
)

IDS = [f"a{i}" for i in range(100)]


def planted(n_groups: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Profiles of 100 anchors over 256 probe candidates: each group shares a pattern."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_groups, 256))
    truth = np.arange(100) % n_groups
    scale = rng.uniform(0.1, 10.0, size=(100, 1))  # gradient sizes differ; they must not count
    return scale * (centers[truth] + noise * rng.normal(size=(100, 256))), truth


@pytest.mark.parametrize("n_groups", [2, 4, 6])
def test_planted_groups_are_found_with_their_number(n_groups) -> None:
    profiles, truth = planted(n_groups, noise=1.0)
    found = choose_groups(profiles, IDS)
    assert found.k == n_groups, found.stability
    assert adjusted_rand_score(truth, found.labels) == 1.0
    assert found.stability[n_groups] >= STABILITY
    # named by first appearance: anchor 0 is in found-1, and every group has an example
    assert found.labels[0] == "found-1" and set(found.examples) == set(found.labels)
    assert all(found.labels[IDS.index(a)] == g for g, a in found.examples.items())
    assert sorted(a for ids in found.members.values() for a in ids) == sorted(IDS)


def test_homogeneous_anchors_get_no_groups() -> None:
    rng = np.random.default_rng(1)
    profiles = rng.normal(size=(1, 256)) + rng.normal(size=(100, 256))
    found = choose_groups(profiles, IDS)
    assert found.labels is None and found.k == 0
    assert max(found.stability.values()) < STABILITY
    assert "no k from 2 up" in found.reason


def test_a_group_under_the_size_floor_is_not_made() -> None:
    # two groups of 97 and 3 anchors: the 3 are too few to be a group of their own
    rng = np.random.default_rng(2)
    centers = rng.normal(size=(2, 256))
    truth = (np.arange(100) < 3).astype(int)
    profiles = centers[truth] + 0.5 * rng.normal(size=(100, 256))
    found = choose_groups(profiles, IDS)
    assert found.smallest[2] == 3 < min_group_size(100)
    assert found.labels is None or all(np.bincount(
        [int(x.split("-")[1]) for x in found.labels]
    )[1:] >= min_group_size(100))  # fmt: skip


def test_too_few_anchors_for_two_groups() -> None:
    found = choose_groups(np.random.default_rng(0).normal(size=(7, 64)), IDS[:7])
    assert found.labels is None and "too few for 2 groups of 4" in found.reason


def test_unit_profiles_ignore_scale_and_the_shared_part() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=256)
    a = unit_profiles(np.stack([base, 5.0 * base + 3.0, np.full(256, 2.0)]))
    np.testing.assert_allclose(a[0], a[1], atol=1e-12)
    assert np.all(a[2] == 0.0)  # a profile no candidate moves differently stays zero
    np.testing.assert_allclose(np.linalg.norm(a[:2], axis=1), 1.0)


# ---- end to end, on the built-in proxy ----------------------------------------------

FAST = [
    "--warmup-min-samples", "8", "--warmup-min-steps", "3", "--batch-size", "4",
    "--quiet", "--seed", "0", "--audit", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return write_benchmark(tmp_path_factory.mktemp("bench"), n_pool=24, n_anchors=16, n_test=1)


def anchors_without_groups(bench):
    """The bench's anchors with every group-like field removed, as a user's would be."""
    out = bench.root / "anchors-no-groups.jsonl"
    lines = []
    for line in open(bench.anchors):
        record = json.loads(line)
        record.pop("group", None)
        record.pop("meta", None)
        lines.append(json.dumps(record))
    out.write_text("\n".join(lines) + "\n")
    return out


def test_score_finds_groups_records_them_and_select_covers_them(bench, tmp_path) -> None:
    anchors = anchors_without_groups(bench)
    out = tmp_path / "scores.parquet"
    # exact: its group utilities are means of per-anchor values, so they sum exactly
    run = run_cli("score", bench.pool, "--anchors", anchors, "--out", out, *FAST,
                  "--method", "exact")  # fmt: skip
    assert run.rc == 0, run.err
    facts = read_settings(out)
    found = facts["anchor_groups_found"]
    assert found["probe"] == 24 and found["products"] == "full gradients"
    assert found["min_size"] == 4 and set(found["stability"]) == {"2", "3", "4"}
    anchor_ids = [json.loads(x)["id"] for x in open(anchors)]
    group_of = {a: g for g, members in found["members"].items() for a in members}
    labels = [group_of[a] for a in anchor_ids] if group_of else None
    if labels is None:  # no stable split on this tiny pool: the file says why, no columns
        assert found["k"] == 0 and found["reason"]
        assert "group_utility" not in pq.read_schema(out).names
        return
    names = sorted(set(labels))
    assert facts["anchor_groups"] == names and found["k"] == len(names)
    assert facts["anchor_group_sizes"] == [labels.count(n) for n in names]
    table = pq.read_table(out).to_pydict()
    by_group = np.array(table["group_utility"])
    sizes = np.array(facts["anchor_group_sizes"])
    # the groups partition the anchors, so their size-weighted mean is the utility
    np.testing.assert_allclose(by_group @ sizes / sizes.sum(), table["utility"], rtol=1e-4,
                               atol=1e-6)  # fmt: skip
    pool_ids = table["id"]
    sel = run_cli("select", bench.pool, "--scores", out, "--keep", "50%",
                  "--out", tmp_path / "subset.jsonl")  # fmt: skip
    assert sel.rc == 0, sel.err
    assert "coverage: the budget filled by anchor group" in sel.out + sel.err
    assert len(pool_ids) == 24


@pytest.fixture(scope="module")
def two_kinds(tmp_path_factory):
    """Anchors of two unrelated kinds (text-only arithmetic; reading digits in an image),
    candidates of the bench's image families: (bench, anchors file, kind of each anchor,
    the anchors' JSON lines)."""
    bench = write_benchmark(tmp_path_factory.mktemp("b"), n_pool=48, n_anchors=24, n_test=1)
    records = [json.loads(x) for x in open(bench.anchors)]
    kinds, lines = [], []
    for i, r in enumerate(records):
        text_only = i % 2 == 0
        convo = r["conversations"]
        if text_only:  # the same numbers, asked as text with no image
            question = f"What is {i} plus {i + 3}?"
            r = {"id": r["id"], "conversations": [
                {"from": "human", "value": question},
                {"from": "gpt", "value": f"{i} + {i + 3} = {2 * i + 3}. Answer: {2 * i + 3}"},
            ]}  # fmt: skip
        else:
            r = {"id": r["id"], "image": r["image"], "conversations": convo}
        kinds.append(int(text_only))
        lines.append(json.dumps(r))
    anchors = bench.root / "anchors-two-kinds.jsonl"
    anchors.write_text("\n".join(lines) + "\n")
    return bench, anchors, kinds, lines


def test_planted_kinds_are_found_on_a_real_proxy(two_kinds, tmp_path) -> None:
    """The profiles of the built-in proxy, with every default, separate the two kinds."""
    bench, anchors, kinds, lines = two_kinds
    out = tmp_path / "scores.parquet"
    run = run_cli("score", bench.pool, "--anchors", anchors, "--out", out, *FAST)
    assert run.rc == 0, run.err
    facts = read_settings(out)
    assert facts["anchor_groups_found"]["k"] >= 2, facts["anchor_groups_found"]
    members = facts["anchor_groups_found"]["members"]
    group_of = {a: g for g, ids in members.items() for a in ids}
    found = [group_of[json.loads(x)["id"]] for x in lines]
    # the found groups follow the kinds (a kind may be split further): purity, the share of
    # anchors in their group's majority kind, is at least 90% (seen: 23 of 24)
    majority = 0
    for name in set(found):
        in_group = [k for k, g in zip(kinds, found, strict=True) if g == name]
        majority += max(in_group.count(0), in_group.count(1))
    assert majority / len(found) >= 0.9, (found, kinds)
    # the report names the found groups, an anchor of each, and what the default 20% takes
    report = run_cli("report", out, "--candidates", bench.pool, "--out", tmp_path / "report")
    assert report.rc == 0, report.err
    page = (tmp_path / "report" / "report.html").read_text()
    assert "found these groups" in page and "taken for it by select --keep 20%" in page
    for name, ids in members.items():
        assert f"<td>{name}</td><td>{ids[0]}</td>" in page


def test_field_groups_win_and_off_turns_groups_off(bench, tmp_path) -> None:
    field = tmp_path / "field.parquet"
    exact = ("--method", "exact")  # which groups are used does not depend on the estimator
    run = run_cli("score", bench.pool, "--anchors", bench.anchors, "--out", field, *FAST,
                  *exact, "--anchor-group-field", "meta.task")  # fmt: skip
    assert run.rc == 0, run.err
    facts = read_settings(field)
    assert "anchor_groups_found" not in facts
    tasks = sorted({json.loads(x)["meta"]["task"] for x in open(bench.anchors)})
    assert facts["anchor_groups"] == tasks
    off = tmp_path / "off.parquet"
    run = run_cli("score", bench.pool, "--anchors", bench.anchors, "--out", off, *FAST,
                  *exact, "--anchor-group-field", "meta.task",
                  "--anchor-groups", "off")  # fmt: skip
    assert run.rc == 0, run.err
    facts = read_settings(off)
    assert "anchor_groups" not in facts and "anchor_groups_found" not in facts
    assert "group_utility" not in pq.read_schema(off).names
    with pytest.raises(SystemExit):  # argparse refuses it, naming the choices
        run_cli("score", bench.pool, "--anchors", bench.anchors, "--out", tmp_path / "x",
                *FAST, "--anchor-groups", "maybe")  # fmt: skip


def test_shards_score_towards_the_same_found_groups_as_one_process(two_kinds, tmp_path):
    """The first shard finds the groups beside the shared proxy; the other loads them."""
    bench, anchors, _, _ = two_kinds
    args = ("score", bench.pool, "--anchors", anchors, *FAST, "--method", "exact")
    one = tmp_path / "one.parquet"
    assert run_cli(*args, "--out", one).rc == 0
    two = tmp_path / "two.parquet"
    runs = [run_cli(*args, "--out", two, "--shard", f"{i}/2") for i in range(2)]
    assert all(r.rc == 0 for r in runs), [r.err for r in runs]
    merged = run_cli("merge", two)
    assert merged.rc == 0, merged.err
    found = read_settings(one)["anchor_groups_found"]
    assert found["k"] >= 2 and read_settings(two)["anchor_groups_found"] == found
    a, b = (pq.read_table(p).to_pydict() for p in (one, two))
    by_id = dict(zip(b["id"], b["group_utility"], strict=True))
    np.testing.assert_allclose([by_id[i] for i in a["id"]], a["group_utility"], rtol=1e-9)


def test_a_method_without_group_utilities_finds_no_groups(bench, tmp_path) -> None:
    """first-order writes no group_utility, so nothing is spent finding groups for it."""
    out = tmp_path / "fo.parquet"
    run = run_cli("score", bench.pool, "--anchors", anchors_without_groups(bench), "--out", out,
                  *FAST, "--method", "first-order")  # fmt: skip
    assert run.rc == 0, run.err
    assert "anchor_groups_found" not in read_settings(out)
