"""Two `stepsift bench` output folders, the same runs paired by seed: which trains better.

For bench runs that differ in one setting (e.g. `--estimator curvature` against `--estimator
exact`, on the same cache and seeds), prints each run's accuracy per seed and the paired
difference (first minus second, accuracy points) with its 95% t-interval:

    python benchmarks/compare_bench_runs.py runs/bench17-10k-curvature runs/bench17-10k-exact

A run is the same when its noise level, method, keep fraction and protocol match; seeds
missing from either folder are left out of the pairing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from stepsift.bench.stats import t_interval


def runs_by_setting(folder: Path) -> dict[tuple, dict[int, float]]:
    """{(noise, method, keep, protocol): {seed: accuracy}} from a folder's runs.jsonl."""
    out: dict[tuple, dict[int, float]] = defaultdict(dict)
    for line in (folder / "runs.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out[(r["noise"], r["method"], r["keep"], r["protocol"])][r["seed"]] = r["accuracy"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    args = ap.parse_args(argv)
    first, second = runs_by_setting(args.first), runs_by_setting(args.second)
    print(f"first: {args.first}   second: {args.second}   (accuracy, %)")
    print("| noise | method | keep | protocol | seeds | first | second | first - second (95% t) |")
    print("|---|---|---|---|---|---|---|---|")
    for setting in sorted(set(first) & set(second), key=str):
        seeds = sorted(set(first[setting]) & set(second[setting]))
        if not seeds:
            continue
        a = [100 * first[setting][s] for s in seeds]
        b = [100 * second[setting][s] for s in seeds]
        diff = t_interval([x - y for x, y in zip(a, b, strict=True)])
        noise, method, keep, protocol = setting
        print(
            f"| {noise:g} | {method} | {keep} | {protocol} | {','.join(map(str, seeds))} | "
            f"{' / '.join(f'{x:.1f}' for x in a)} | {' / '.join(f'{x:.1f}' for x in b)} | "
            f"{diff.mean:+.2f} [{diff.low:+.1f}, {diff.high:+.1f}] |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
