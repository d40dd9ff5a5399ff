"""`select --diverse` at scale: seconds and peak memory on a synthetic score file, beside
plain top-k on the same file.

The score file has n rows with every issue-7 column: `utility` (normal), `tokens`,
`fold_utility` (10 folds: the utility plus fold noise, so reliability and calibrated
harmful flags are computed, as on a real file) and a 64-dim `sketch` in which a share
`--duplicates` of the rows are near-copies (cosine ~0.99) of another row, the copy's utility
a little below its source's. The candidate file is n short prompt/response records, and the
score file records its digest (as `score` does), so both commands take the fast path.
Each command runs in a fresh process; peak memory is its VmHWM.

Also printed: how many kept rows are near-copies of another kept row (the redundancy that
plain top-k keeps and `--diverse` should not), and, in-process, the split of the diverse
time between the neighbour search (LSH) and the greedy.

    python benchmarks/diverse_scale.py --rows 1000000 --json runs/diverse_scale.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scale import run_cli, write_plain_pool  # benchmarks/scale.py: shared pieces

from stepsift.engine.store import DIGEST_KEY, REJECTED_KEY, file_digest


def fixed_list(matrix: np.ndarray, value: pa.DataType) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), value), matrix.shape[1])


def make_files(folder: Path, n: int, duplicates: float, dim: int, seed: int = 0):
    """The pool, the score file, and for each row the row it copies (-1: none)."""
    folder.mkdir(parents=True, exist_ok=True)
    pool, scores = folder / "pool.jsonl", folder / "scores.parquet"
    rng = np.random.default_rng(seed)
    n_dup = int(n * duplicates)
    source = np.full(n, -1, dtype=np.int64)
    copies = rng.choice(n, n_dup, replace=False)
    originals = np.setdiff1d(np.arange(n), copies)
    source[copies] = rng.choice(originals, n_dup)
    write_plain_pool(pool, n)
    if not scores.is_file():
        utility = rng.normal(size=n)
        utility[copies] = utility[source[copies]] - np.abs(rng.normal(size=n_dup)) * 1e-3
        sketch = rng.standard_normal((n, dim), dtype=np.float32)
        sketch[copies] = sketch[source[copies]] + 0.1 * rng.standard_normal(
            (n_dup, dim), dtype=np.float32
        )
        folds = utility[:, None] + rng.normal(size=(n, 10)) * 0.5
        settings = {
            DIGEST_KEY: file_digest(pool),
            REJECTED_KEY: 0,
            "harmful_below": 0.0,
            "anchor_fold_sizes": [10] * 10,
            "sketch_dim": dim,
            "sketch_of": "gradient",
        }
        table = pa.table(
            {
                "id": pa.array([f"c{i}" for i in range(n)]),
                "utility": pa.array(utility),
                "loss": pa.array(np.ones(n)),
                "harmful": pa.array(utility < 0),
                "tokens": pa.array(rng.integers(20, 400, n), pa.int64()),
                "truncated": pa.array(np.zeros(n, dtype=bool)),
                "fold_utility": fixed_list(folds, pa.float64()),
                "sketch": fixed_list(sketch, pa.float32()),
            }
        ).replace_schema_metadata({"stepsift": json.dumps(settings)})
        pq.write_table(table, scores)
    return pool, scores, source


def repeats_kept(kept_file: Path, source: np.ndarray) -> int:
    """Kept rows whose source row (or a sibling copy of it) is also kept."""
    kept = np.array([int(json.loads(line)["id"][1:]) for line in kept_file.open()])
    root = np.where(source[kept] >= 0, source[kept], kept)
    return int(len(root) - len(np.unique(root)))


def split_times(scores: Path, fraction: float) -> dict:
    from stepsift.select import diverse
    from stepsift.select.score_data import read_score_data

    data = read_score_data(scores)
    start = time.perf_counter()
    nb = diverse.neighbours(data.sketch)
    mid = time.perf_counter()
    diverse.greedy(data.utility, nb, k=int(fraction * len(data.ids)))
    return {"neighbours_s": mid - start, "greedy_s": time.perf_counter() - mid}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--duplicates", type=float, default=0.2)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--keep", default="20%")
    ap.add_argument("--root", type=Path, default=Path("runs/diverse_scale"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    folder = args.root / f"rows-{args.rows}"
    start = time.perf_counter()
    pool, scores, source = make_files(folder, args.rows, args.duplicates, args.dim)
    print(f"{args.rows:,} rows, {args.duplicates:.0%} near-copies, D={args.dim}: files ready "
          f"({time.perf_counter() - start:.0f}s)")  # fmt: skip
    report: dict = {"rows": args.rows, "duplicates": args.duplicates, "dim": args.dim,
                    "keep": args.keep}  # fmt: skip
    for name, extra in (("top-k", []), ("diverse", ["--diverse"])):
        out = folder / f"kept-{name}.jsonl"
        argv = ["select", str(pool), "--scores", str(scores), "--keep", args.keep,
                "--out", str(out), *extra]  # fmt: skip
        seconds, mb, text = run_cli(argv)
        kept = sum(1 for _ in out.open())
        repeats = repeats_kept(out, source)
        report[name] = {"seconds": seconds, "peak_mb": mb, "kept": kept, "repeats": repeats}
        print(f"select --keep {args.keep} {' '.join(extra) or '(plain top-k)'}: "
              f"{seconds:.1f}s, peak {mb:,.0f} MB, kept {kept:,}, of which near-copies of "
              f"another kept row: {repeats:,}")  # fmt: skip
        report[name]["output"] = text
    fraction = report["diverse"]["kept"] / args.rows
    report["diverse_split"] = split_times(scores, fraction)
    print("in-process: neighbours (LSH) {neighbours_s:.1f}s, greedy {greedy_s:.1f}s".format(
        **report["diverse_split"]))  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
