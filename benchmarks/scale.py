"""Scoring at scale: the Ray engine's overhead, memory against pool size, and `select` on
a million-row score file.

1. Throughput, side by side in one run on one pool (text-only chat records from the
   benchmark's generator; the built-in proxy, no warm-up, SGD, `exact`): the local engine,
   Ray with 1 worker and Ray with 2 workers, each single-threaded per process. Wall time of
   the whole `score` call (Ray's start-up included), and the ratios.
2. Peak memory (VmHWM of a fresh process) of a `score` run on pools of 10k and 100k
   candidates. So that the two runs do the same model work, each scores one shard of
   about `--shard-size` candidates (`--shard 0/K`) with `first-order`; what grows with the
   pool is what the run holds for the whole pool (records, ids, batches).
3. `select` of the top 20% from a 1M-row score file and its 1M-record candidate file:
   seconds and peak memory, by the fast path (the score file vouches for the candidate
   bytes, as files from `score` do) and by the full path (re-read and re-validate).

    python benchmarks/scale.py --json runs/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from stepsift.bench.generate import write_text_chat
from stepsift.bench.pools import make_clean, make_pool

FAST = ["--warmup-fraction", "0", "--optimizer", "sgd", "--quiet", "--seed", "0"]


def make_data(folder: Path, n_pool: int, n_anchors: int) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    pool, anchors = folder / "pool.jsonl", folder / "anchors.jsonl"
    if not pool.is_file():
        write_text_chat(make_pool(n_pool, seed=0), pool)
        write_text_chat(make_clean(n_anchors, "dev", "anchor", seed=0), anchors)
    return pool, anchors


def stepsift(*argv: str | Path) -> list[str]:
    return [sys.executable, "-m", "stepsift.cli", *map(str, argv)]


def peak_mb(argv: list[str]) -> tuple[float, float]:
    """Run `argv` in a fresh process under this script's `--probe`; (seconds, peak MB)."""
    seconds, mb, _ = run_cli(argv)
    return seconds, mb


def write_plain_pool(path: Path, n: int) -> None:
    """n short prompt/response records with ids c0..c{n-1} (kept if already written): the
    candidate file of the synthetic large-scale benchmarks."""
    if path.is_file():
        return
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"c{i}", "prompt": f"q{i}", "response": f"a{i}"}) + "\n")


def run_cli(argv: list[str]) -> tuple[float, float, str]:
    """Run `stepsift ARGV` in a fresh, single-threaded process under this script's
    `--probe`; (seconds, peak MB, what it printed). Other scripts time commands with it."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--probe", json.dumps(argv)],
        check=True, capture_output=True, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    ).stdout  # fmt: skip
    lines = out.strip().splitlines()
    return time.perf_counter() - start, float(lines[-1]), "\n".join(lines[:-1])


def probe(argv: list[str]) -> None:
    from stepsift.cli import main

    code = main(argv)
    if code:
        raise SystemExit(code)
    status = Path("/proc/self/status").read_text().splitlines()
    print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024)


def throughput(root: Path, n_pool: int, n_anchors: int) -> dict:
    pool, anchors = make_data(root / f"tp-{n_pool}", n_pool, n_anchors)
    runs = {
        "local": [],
        "ray, 1 worker": ["--engine", "ray", "--workers", "1"],
        "ray, 2 workers": ["--engine", "ray", "--workers", "2"],
    }
    seconds = {}
    for name, extra in runs.items():
        out = root / f"tp-{name.replace(' ', '').replace(',', '-')}.parquet"
        start = time.perf_counter()
        subprocess.run(
            stepsift("score", pool, "--anchors", anchors, "--out", out, "--overwrite",
                     *FAST, *extra),
            check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
        )  # fmt: skip
        seconds[name] = time.perf_counter() - start
        print(f"{name}: {seconds[name]:.1f}s ({n_pool / seconds[name]:.1f} candidates/s)")
    return seconds


def memory(root: Path, sizes: list[int], shard_size: int, n_anchors: int) -> dict:
    out = {}
    for n in sizes:
        pool, anchors = make_data(root / f"mem-{n}", n, n_anchors)
        shards = max(1, n // shard_size)
        argv = ["score", str(pool), "--anchors", str(anchors), "--out",
                str(root / f"mem-{n}.parquet"), "--overwrite", "--method", "first-order",
                "--shard", f"0/{shards}", *FAST]  # fmt: skip
        seconds, mb = peak_mb(argv)
        out[n] = {"peak_mb": mb, "seconds": seconds, "scored": n // shards}
        print(f"{n:,} candidates (scoring 1/{shards}): peak {mb:.0f} MB, {seconds:.0f}s")
    return out


def select_million(root: Path, n: int) -> dict:
    """`select` top 20% of n candidates: from a score file that records the candidate
    file's digest (as `score` writes it: the fast path) and from one that does not (the
    full path, which re-reads and re-validates every record)."""
    from stepsift.engine.store import (
        DIGEST_KEY,
        REJECTED_KEY,
        ScoreRows,
        file_digest,
        write_scores,
    )

    folder = root / f"select-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    pool = folder / "pool.jsonl"
    write_plain_pool(pool, n)
    rng = np.random.default_rng(0)
    rows = ScoreRows()
    rows.extend([f"c{i}" for i in range(n)], rng.normal(size=n), rng.random(n), [3] * n,
                [False] * n)  # fmt: skip
    report = {"rows": n}
    vouched = {DIGEST_KEY: file_digest(pool), REJECTED_KEY: 0}  # as `score` records them
    for path, settings in (("fast", vouched), ("full", {})):
        scores = folder / f"scores-{path}.parquet"
        write_scores(rows, scores, 0.0, settings)
        argv = ["select", str(pool), "--scores", str(scores), "--keep", "20%",
                "--out", str(folder / f"top-{path}.jsonl")]  # fmt: skip
        seconds, mb = peak_mb(argv)
        report[path] = {"seconds": seconds, "peak_mb": mb}
        print(f"select top 20% of {n:,} ({path} path): {seconds:.1f}s, peak {mb:.0f} MB")
    same = (folder / "top-fast.jsonl").read_bytes() == (folder / "top-full.jsonl").read_bytes()
    report["same_output"] = same
    print(f"both paths wrote the same file: {same}")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/scale"))
    ap.add_argument("--pool", type=int, default=512, help="throughput pool")
    ap.add_argument("--anchors", type=int, default=20)
    ap.add_argument("--sizes", default="10000,100000", help="pools for the memory runs")
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--select-rows", type=int, default=1_000_000)
    ap.add_argument("--parts", default="throughput,memory,select")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        probe(json.loads(args.probe))
        return
    parts = args.parts.split(",")
    report: dict = {}
    if "throughput" in parts:
        seconds = throughput(args.out, args.pool, args.anchors)
        report["throughput_seconds"] = seconds
        report["ray_overhead"] = {k: v / seconds["local"] for k, v in seconds.items()}
        print("ratios to local: " + ", ".join(
            f"{k} {v:.2f}x" for k, v in report["ray_overhead"].items()))  # fmt: skip
    if "memory" in parts:
        sizes = [int(s) for s in args.sizes.split(",")]
        report["memory"] = memory(args.out, sizes, args.shard_size, args.anchors)
    if "select" in parts:
        report["select"] = select_million(args.out, args.select_rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
