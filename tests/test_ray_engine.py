"""`score --engine ray`: a real local Ray cluster (2 CPUs) scores the pool with 2 actors to
the same scores as one process, and survives a worker process killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_helpers import run_cli

from stepsift.bench.generate import write_benchmark

pytest.importorskip("ray")

FAST = [
    "--warmup-min-samples", "8", "--warmup-min-steps", "3", "--batch-size", "4",
    "--method", "exact",  # the engine under test, not the default estimator
    "--quiet", "--seed", "0", "--flush-seconds", "0",
]  # fmt: skip
# the optional columns, all made by default (the bench's anchors carry a `group` field)
VECTORS = ("fold_utility", "group_utility", "sketch")
RAY = ["--engine", "ray", "--workers", "2"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    # 40 anchors: a batch takes long enough that a worker can be killed between batches
    return write_benchmark(tmp_path_factory.mktemp("bench"), n_pool=32, n_anchors=40, n_test=1)


def argv(bench, out, *extra):
    return ["score", str(bench.pool), "--anchors", str(bench.anchors), "--out", str(out),
            *FAST, *extra]  # fmt: skip


def table(path):
    t = pq.read_table(path).to_pydict()
    assert len(set(t["id"])) == len(t["id"])  # every id once
    return {k: dict(zip(t["id"], t[k], strict=True)) for k in t if k != "id"}


@pytest.fixture(scope="module")
def local(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "scores.parquet"
    assert run_cli(*argv(bench, out)).rc == 0
    return table(out)


def same(got, expected):
    assert got["utility"].keys() == expected["utility"].keys()
    for column in ("utility", "loss", "harmful", "tokens", "truncated"):
        assert got[column] == pytest.approx(expected[column], rel=1e-9, abs=1e-12), column
    ids = sorted(expected["utility"])
    for column in VECTORS:  # the actors' 2-D columns come back through Ray Data intact
        want = np.array([expected[column][i] for i in ids])
        assert want.ndim == 2 and len(want) == len(ids), column
        have = np.array([got[column][i] for i in ids])
        np.testing.assert_allclose(have, want, rtol=1e-9, atol=1e-12, err_msg=column)


def test_ray_with_two_workers_equals_one_process(bench, local, tmp_path):
    out = tmp_path / "scores.parquet"
    run = run_cli(*argv(bench, out, *RAY))
    assert run.rc == 0, run.err
    same(table(out), local)
    settings = pq.read_schema(out).metadata[b"stepsift"].decode()
    assert '"engine": "ray"' in settings


def ray_workers() -> list[int]:
    """PIDs of the processes running stepsift's score actors."""
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in ps.splitlines() if "ScoreActor" in line]


def test_a_killed_worker_is_replaced_and_nothing_is_lost(bench, local, tmp_path):
    out = tmp_path / "scores.parquet"
    parts = out.with_name(out.name + ".parts")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stepsift.cli", *argv(bench, out, *RAY)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(parts.glob("part-*.parquet")):  # the actors are up and scoring
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no scores in time"
        time.sleep(0.05)
    victims = ray_workers()
    assert victims, "no Ray score worker found"
    os.kill(victims[0], signal.SIGKILL)
    before = len(list(parts.glob("part-*.parquet")))
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert before < 8  # the kill landed part-way through the 8 batches
    same(table(out), local)


def test_ray_reads_a_parquet_pool_with_embedded_images(bench, local, tmp_path):
    """Actors are handed a table reader and (file, row group, row) positions, and read the
    rows themselves: the same utilities as the JSONL pool with image files."""
    import json

    import pyarrow as pa

    rows = []
    for line in bench.pool.read_text().splitlines():
        obj = json.loads(line)
        path = bench.pool.parent / obj["image"]
        rows.append({**obj, "image": {"bytes": path.read_bytes(), "path": obj["image"]}})
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(rows), pool, row_group_size=8)
    out = tmp_path / "scores.parquet"
    run = run_cli("score", str(pool), *argv(bench, out, *RAY)[2:])
    assert run.rc == 0, run.err
    got = table(out)
    assert got["utility"].keys() == local["utility"].keys()
    for i, expected in local["utility"].items():  # batched otherwise: float32 rounding only
        assert got["utility"][i] == pytest.approx(expected, rel=1e-5, abs=1e-9), i
