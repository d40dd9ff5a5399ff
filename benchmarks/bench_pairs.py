"""Paired differences between two methods of one `stepsift bench` run, over seeds.

    python benchmarks/bench_pairs.py runs/bench/results.json ost@0.2 judge ost@0.2 less@0.2

Each pair `A B` prints A - B in accuracy points: the mean over the seeds both ran, with its
95% Student-t interval, and the verdict (win/loss only when the interval excludes 0). A
method without `@keep` matches the one keep it ran at (full, judge, the oracles).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stepsift.bench.stats import paired_difference, verdict


def key_of(spec: str, rows: list[dict]) -> tuple[str, float]:
    method, _, keep = spec.partition("@")
    keeps = sorted({r["keep"] for r in rows if r["method"] == method})
    if not keeps:
        raise SystemExit(f"no runs of {method!r}")
    if keep:
        return method, float(keep)
    if len(keeps) > 1:
        raise SystemExit(f"{method!r} ran at keeps {keeps}: say which with {method}@KEEP")
    return method, keeps[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("pairs", nargs="+", help="METHOD[@KEEP] METHOD[@KEEP] ...")
    a = ap.parse_args()
    if len(a.pairs) % 2:
        raise SystemExit("give the methods in pairs")
    rows = json.loads(a.results.read_text())
    for lhs, rhs in zip(a.pairs[::2], a.pairs[1::2], strict=True):
        iv = paired_difference(rows, key_of(lhs, rows), key_of(rhs, rows))
        print(
            f"{lhs} - {rhs}: {100 * iv.mean:+.1f} ({100 * iv.low:+.1f} .. {100 * iv.high:+.1f}), "
            f"n={iv.n}, {verdict(iv)}"
        )


if __name__ == "__main__":
    main()
