"""`score --shard i/N` then `merge`: the same scores as one process, every id once, one
shared proxy; merge refuses a missing, foreign or doubled shard."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_helpers import run_cli

from stepsift.bench.generate import write_benchmark
from stepsift.engine.shards import Shard, shard_path, shared_proxy_dir

FAST = [
    "--warmup-min-samples", "8", "--warmup-min-steps", "3", "--batch-size", "4",
    "--method", "exact",  # the engine under test, not the default estimator
    "--quiet", "--seed", "0",
]  # fmt: skip
# the optional columns, all made by default (the bench's anchors carry a `group` field)
VECTORS = ("fold_utility", "group_utility", "sketch")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return write_benchmark(tmp_path_factory.mktemp("bench"), n_pool=30, n_anchors=6, n_test=1)


def score(bench, out, *extra):
    argv = ["score", bench.pool, "--anchors", bench.anchors, "--out", out, *FAST, *extra]
    return run_cli(*argv)


def table(path):
    t = pq.read_table(path).to_pydict()
    return {k: dict(zip(t["id"], t[k], strict=True)) for k in t if k != "id"}


@pytest.fixture(scope="module")
def single(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "scores.parquet"
    assert score(bench, out).rc == 0
    return out


@pytest.fixture(scope="module")
def sharded(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded") / "scores.parquet"
    runs = [score(bench, out, "--shard", f"{i}/4") for i in range(4)]
    assert all(r.rc == 0 for r in runs), [r.err for r in runs]
    return out


def test_four_merged_shards_equal_one_process(single, sharded):
    merged = run_cli("merge", sharded)
    assert merged.rc == 0, merged.err
    assert "merged 4 shards: 30 candidates" in merged.out
    one, four = table(single), table(sharded)
    assert four["utility"].keys() == one["utility"].keys()
    for column in ("utility", "loss", "harmful", "tokens", "truncated"):
        assert four[column] == pytest.approx(one[column], rel=1e-9, abs=1e-12), column
    ids = sorted(one["utility"])
    for column in VECTORS:  # carried through the shards' parts and the merge
        expected = np.array([one[column][i] for i in ids])
        assert expected.ndim == 2 and len(expected) == 30, column
        got = np.array([four[column][i] for i in ids])
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, err_msg=column)


def test_shards_split_the_pool_and_share_one_proxy(sharded):
    sizes, ids = [], set()
    for i in range(4):
        t = pq.read_table(shard_path(sharded, i, 4)).to_pydict()
        sizes.append(len(t["id"]))
        assert not ids & set(t["id"])
        ids |= set(t["id"])
    assert sum(sizes) == 30 and min(sizes) > 0
    assert (shared_proxy_dir(sharded) / "proxy.json").is_file()
    # only the first shard warmed up; the others adopted its proxy
    leftovers = list(sharded.parent.glob("*.tmp-*"))
    assert not leftovers


def test_merge_refuses_a_missing_shard(bench, tmp_path):
    out = tmp_path / "scores.parquet"
    for i in (0, 2):
        assert score(bench, out, "--shard", f"{i}/3").rc == 0
    run = run_cli("merge", out)
    assert run.rc == 2 and "shard(s) 1 of 3" in run.err
    assert not out.exists()


def test_shards_of_other_runs_are_refused(bench, tmp_path):
    out = tmp_path / "scores.parquet"
    assert score(bench, out, "--shard", "0/2").rc == 0
    # another seed is another run: it may not adopt the first run's proxy ...
    other = score(bench, out, "--shard", "1/2", "--seed", "1")
    assert other.rc == 2 and "shared proxy of a run with other" in other.err
    # ... and once forced, merge sees two runs' shards and refuses them
    assert score(bench, out, "--shard", "1/2", "--seed", "1", "--overwrite").rc == 0
    run = run_cli("merge", out)
    assert run.rc == 2 and "other inputs or settings" in run.err


def test_merge_refuses_a_doubled_id(sharded, tmp_path):
    import shutil

    import pyarrow as pa

    out = tmp_path / "scores.parquet"
    for i in range(4):
        shutil.copy(shard_path(sharded, i, 4), shard_path(out, i, 4))
    # shard 1 gets shard 0's first id in place of its own: one id doubled, one missing
    path1 = shard_path(out, 1, 4)
    t = pq.read_table(path1)
    first0 = pq.read_table(shard_path(out, 0, 4)).column("id")[0].as_py()
    ids = [first0, *t.column("id").to_pylist()[1:]]
    t = t.set_column(t.schema.get_field_index("id"), "id", pa.array(ids, pa.string()))
    pq.write_table(t, path1)
    run = run_cli("merge", out)
    assert run.rc == 2 and first0 in run.err and "also in shard 0" in run.err


def test_shard_spec_is_checked():
    assert Shard.parse("2/4") == Shard(2, 4)
    for bad in ("4/4", "-1/4", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="i/N"):
            Shard.parse(bad)
    assert str(Shard(1, 3)) == "1/3"
