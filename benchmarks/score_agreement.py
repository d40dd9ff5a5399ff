"""How closely fast estimators' score files rank a whole pool like an exact one.

The audit every fast run makes compares a random sample; this compares every candidate,
for score files made of the same pool (e.g. a bench level's `scores.parquet` under
`--estimator exact` against `stepsift score --method curvature` on the same saved proxy):

    python benchmarks/score_agreement.py runs/bench17-10k-exact/noise-40/scores.parquet \
        runs/time10k-curvature-off.parquet runs/time10k-curvature-bfloat16.parquet

prints Spearman's ρ and the overlap of the top 20% against the first file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from stepsift.engine.audit import top_overlap
from stepsift.engine.store import read_scores, read_settings


def utilities(path: Path) -> dict[str, float]:
    table = read_scores(path).to_pydict()
    return dict(zip(table["id"], table["utility"], strict=True))


def compare(reference: Path, estimate: Path, fraction: float = 0.2) -> dict:
    ref, est = utilities(reference), utilities(estimate)
    if set(ref) != set(est):
        raise ValueError(f"{estimate} scores other candidates than {reference}")
    ids = sorted(ref)
    a = np.array([ref[i] for i in ids])
    b = np.array([est[i] for i in ids])
    settings = read_settings(estimate)
    return {
        "file": str(estimate),
        "method": settings.get("method"),
        "grad_autocast": settings.get("grad_autocast", "off"),
        "n": len(ids),
        "spearman": float(spearmanr(a, b).statistic),
        f"top{round(fraction * 100)}_overlap": top_overlap(a, b, fraction),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", type=Path, help="the exact score file")
    ap.add_argument("estimates", type=Path, nargs="+", help="score files of the same pool")
    ap.add_argument("--top", type=float, default=0.2, help="top share compared (default 0.2)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = [compare(args.reference, e, args.top) for e in args.estimates]
    key = f"top{round(args.top * 100)}_overlap"
    print(f"against {args.reference} (method {read_settings(args.reference).get('method')})")
    print(f"| file | method | autocast | n | ρ | top-{round(args.top * 100)}% |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['file']} | {r['method']} | {r['grad_autocast']} | {r['n']} | "
            f"{r['spearman']:.4f} | {r[key]:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
