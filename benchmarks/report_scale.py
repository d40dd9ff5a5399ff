"""`stepsift report` on big score files: seconds and peak memory (VmHWM of a fresh process).

For each size N: a score file of N rows written by the real store writer with every optional
column (10 anchor folds, 4 anchor groups, 64-dim sketches; random values), and an N-line
candidate file of plain prompt/response records. The report reads the whole score file
(distribution, curve, reliability over the folds, groups) but only the shown records of the
candidate file (an index pass, then 20 records read back).

    python benchmarks/report_scale.py --sizes 100000,1000000 --json runs/report_scale.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scale import peak_mb, write_plain_pool  # benchmarks/scale.py: shared pieces

from stepsift.engine.store import ScoreRows, write_scores

FOLD_SIZES = [10] * 10
GROUPS = ["count", "sum", "difference", "larger"]


def make_files(folder: Path, n: int) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    pool, scores = folder / "pool.jsonl", folder / "scores.parquet"
    write_plain_pool(pool, n)
    rng = np.random.default_rng(0)
    signal = rng.normal(0.01, 0.02, n)
    folds = signal[:, None] + rng.normal(0, 0.02, (n, len(FOLD_SIZES)))
    rows = ScoreRows()
    rows.extend(
        [f"c{i}" for i in range(n)], folds.mean(axis=1), rng.random(n),
        rng.integers(10, 400, n), np.zeros(n, bool),
        fold_utility=folds,
        group_utility=signal[:, None] + rng.normal(0, 0.01, (n, len(GROUPS))),
        sketch=rng.normal(size=(n, 64)).astype(np.float32),
    )  # fmt: skip
    settings = {
        "anchor_fold_sizes": FOLD_SIZES,
        "anchor_groups": GROUPS,
        "anchor_group_sizes": [25] * 4,
        "n_anchors": sum(FOLD_SIZES),
        "seed": 0,
    }
    write_scores(rows, scores, 0.0, settings)
    return pool, scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/report_scale"))
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    report = {}
    for n in (int(s) for s in args.sizes.split(",")):
        pool, scores = make_files(args.out / f"n-{n}", n)
        argv = ["report", str(scores), "--candidates", str(pool),
                "--out", str(args.out / f"n-{n}" / "report")]  # fmt: skip
        seconds, mb = peak_mb(argv)
        size = (args.out / f"n-{n}" / "report" / "report.html").stat().st_size
        report[n] = {"seconds": seconds, "peak_mb": mb, "page_kb": size / 1024}
        print(f"report on {n:,} rows: {seconds:.1f}s, peak {mb:.0f} MB, page {size / 1024:.0f} kB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
