"""A fixed run's scores and selections, recorded in `tests/data/fixed_run.json`: a change
that only moves code (issue 19's layering) must reproduce every score and every kept id.

The run is small and in float64, so its values do not hang on a machine's float32
kernels: the built-in proxy scores a generated 24-candidate pool with `exact` and with
`curvature`, and `select` keeps 25% of each. A change *meant* to change scores (a new
warm-up, another generator) rewrites the record on purpose:

    python tests/test_unchanged_scores.py
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from stepsift.bench.generate import write_benchmark
from stepsift.cli import main

RECORD = Path(__file__).parent / "data" / "fixed_run.json"
METHODS = ("exact", "curvature")
ARGS = [
    "--dtype", "float64", "--seed", "0", "--audit", "0", "--batch-size", "4", "--quiet",
    "--warmup-min-samples", "8", "--warmup-min-steps", "3", "--flush-seconds", "0",
]  # fmt: skip


def fixed_run(folder: Path) -> dict:
    """Score the fixed pool with each method and select 25%: {"pool_sha256", method: ...}."""
    bench = write_benchmark(folder / "bench", n_pool=24, n_anchors=8, n_test=1)
    run: dict = {"pool_sha256": hashlib.sha256(bench.pool.read_bytes()).hexdigest()}
    for method in METHODS:
        scores, subset = folder / f"{method}.parquet", folder / f"{method}.jsonl"
        argv = ["score", str(bench.pool), "--anchors", str(bench.anchors), "--out", str(scores)]
        assert main([*argv, "--method", method, *ARGS]) == 0
        keep = ["select", str(bench.pool), "--scores", str(scores), "--keep", "25%"]
        assert main([*keep, "--out", str(subset)]) == 0
        table = pq.read_table(scores).to_pydict()
        run[method] = {
            "utility": dict(zip(table["id"], table["utility"], strict=True)),
            # the subset is the pool's own lines; their `id` fields name them
            "kept": [json.loads(line)["id"] for line in subset.read_text().splitlines()],
        }
    return run


def test_a_fixed_run_scores_and_selects_as_recorded(tmp_path: Path) -> None:
    want = json.loads(RECORD.read_text())
    got = fixed_run(tmp_path)
    assert got["pool_sha256"] == want["pool_sha256"], (
        "the bench generator's pool changed, so this record no longer applies: if that was "
        "meant, rewrite it (see this file's docstring)"
    )
    for method in METHODS:
        ids = sorted(want[method]["utility"])
        assert sorted(got[method]["utility"]) == ids
        np.testing.assert_allclose(
            [got[method]["utility"][i] for i in ids],
            [want[method]["utility"][i] for i in ids],
            rtol=1e-9,
            atol=1e-13,
            err_msg=f"{method}'s scores changed",
        )
        assert got[method]["kept"] == want[method]["kept"], f"{method}'s selection changed"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        RECORD.write_text(json.dumps(fixed_run(Path(tmp)), indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORD}")
    sys.exit(0)
