"""Paired differences between two methods of one `stepsift bench` run, over seeds.

    python benchmarks/bench_pairs.py runs/bench/results.json ost@0.2 judge ost@0.2 less@0.2

Each pair `A B` prints A - B in accuracy points: the mean over the seeds both ran, with its
95% Student-t interval, and the verdict (win/loss only when the interval excludes 0). A
method without `@keep` matches the one keep it ran at (full, judge, the oracles).

Runs of one cache and seeds split over several bench folders are paired by naming more
results files with `--also LABEL=PATH`; their methods are then called `LABEL:METHOD`:

    python benchmarks/bench_pairs.py runs/a/results.json --also hidden=runs/b/results.json \
        hidden:stepsift@0.2 stepsift@0.2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

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
    ap.add_argument("--also", action="append", default=[], metavar="LABEL=PATH",
                    help="more results of the same cache and seeds; methods become LABEL:METHOD")
    a = ap.parse_args()
    if len(a.pairs) % 2:
        raise SystemExit("give the methods in pairs")
    rows = json.loads(a.results.read_text())
    for extra in a.also:
        label, _, path = extra.partition("=")
        if not label or not path:
            raise SystemExit(f"--also {extra!r}: give LABEL=PATH")
        more = json.loads(Path(path).read_text())
        rows += [{**r, "method": f"{label}:{r['method']}"} for r in more]
    print_table(rows)
    for lhs, rhs in zip(a.pairs[::2], a.pairs[1::2], strict=True):
        iv = paired_difference(rows, key_of(lhs, rows), key_of(rhs, rows))
        print(
            f"{lhs} - {rhs}: {100 * iv.mean:+.1f} ({100 * iv.low:+.1f} .. {100 * iv.high:+.1f}), "
            f"n={iv.n}, {verdict(iv)}"
        )


def print_table(rows: list[dict]) -> None:
    """Every method's accuracy over seeds (mean ± sd) and its subset's wrong and target
    shares."""
    print("| method | keep | seeds | wrong / target in kept | accuracy |")
    print("|---|---|---|---|---|")
    for method, keep in sorted({(r["method"], r["keep"]) for r in rows}):
        mine = [r for r in rows if r["method"] == method and r["keep"] == keep]
        acc = np.array([100 * r["accuracy"] for r in mine])
        sd = acc.std(ddof=1) if len(acc) > 1 else float("nan")
        wrong = np.mean([r.get("wrong_share", np.nan) for r in mine])
        target = np.mean([r.get("target_share", np.nan) for r in mine])
        print(f"| {method} | {keep:g} | {len(mine)} | {wrong:.0%} / {target:.0%} | "
              f"{acc.mean():.1f} ± {sd:.1f} |")  # fmt: skip
    print()


if __name__ == "__main__":
    main()
