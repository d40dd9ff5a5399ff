"""How many label draws per anchor curvature's Gauss-Newton sketch needs (issue 31).

The sketch's set-up draws `label_draws` sampled-label gradients per anchor and, on the
built-in proxy, spends more on the algebra over those vectors than on drawing them; both
grow with the draws. This script builds `curvature` (with ten anchor folds and six groups,
as a default run has) from a saved, warmed-up proxy at each draw count and seed, scores
the same candidates, and prints the set-up's seconds and the agreement with `exact` on
the same candidates: Spearman ρ of the utility, and the mean over folds of the per-fold ρ.

    python benchmarks/label_draws.py --proxy runs/whole-run/proxy-builtin-p300-a100-after1 \\
        --data runs/whole-run/data/builtin-p300-a100-s0 --candidates 300 \\
        --json benchmarks/results/issue31/label_draws_builtin.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from stepsift.data import read_records
from stepsift.engine.scoring import length_sorted
from stepsift.proxy.loading import load_saved_proxy
from stepsift.utility.anchor_views import build_views
from stepsift.utility.curvature import CurvatureUtility
from stepsift.utility.exact import ExactUtility
from stepsift.utility.steps import make_step_rule


def scored(estimator, proxy, records, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(utility (n,), fold utilities (n, K)) over `records` in batches."""
    utility, folds = [], []
    for s in range(0, len(records), batch_size):
        result = estimator(proxy.collate(records[s : s + batch_size]))
        utility.append(result.utility.cpu().numpy())
        folds.append(result.fold_utility.cpu().numpy())
    return np.concatenate(utility), np.concatenate(folds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--proxy", type=Path, required=True, help="a saved, warmed-up proxy folder")
    p.add_argument("--data", type=Path, required=True, help="folder with pool.jsonl, anchors.jsonl")
    p.add_argument("--candidates", type=int, default=300)
    p.add_argument("--draws", default="1,2,4,8,16")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--params", default="all")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    proxy = load_saved_proxy(args.proxy)
    proxy.restrict_step(args.params)
    anchors = read_records(args.data / "anchors.jsonl").records
    pool = length_sorted(read_records(args.data / "pool.jsonl").records)
    rng = np.random.default_rng(0)
    picked = sorted(rng.choice(len(pool), min(args.candidates, len(pool)), replace=False))
    candidates = [pool[i] for i in picked]
    anchor_batch = proxy.collate(anchors)
    rule = make_step_rule("adam", None, proxy, 0.01)
    # ten folds and six groups (round robin): the views a default run with found groups has
    views = build_views(anchors, 10, "", 0, labels=[str(i % 6) for i in range(len(anchors))])

    start = time.perf_counter()
    exact, exact_folds = scored(
        ExactUtility(proxy, anchor_batch, rule, views=views), proxy, candidates, args.batch_size
    )
    print(f"exact: {len(candidates)} candidates in {time.perf_counter() - start:.1f}s", flush=True)
    rows = []
    for draws in [int(x) for x in args.draws.split(",")]:
        for seed in [int(x) for x in args.seeds.split(",")]:
            torch.manual_seed(seed)
            start = time.perf_counter()
            est = CurvatureUtility(proxy, anchor_batch, rule, label_draws=draws, seed=seed,
                                   views=views)  # fmt: skip
            setup = time.perf_counter() - start
            start = time.perf_counter()
            utility, folds = scored(est, proxy, candidates, args.batch_size)
            scoring = time.perf_counter() - start
            fold_rho = np.mean([
                spearmanr(folds[:, k], exact_folds[:, k]).statistic for k in range(folds.shape[1])
            ])  # fmt: skip
            row = {
                "label_draws": draws, "seed": seed, "setup_s": round(setup, 2),
                "scoring_s": round(scoring, 2),
                "rho": round(float(spearmanr(utility, exact).statistic), 4),
                "fold_rho_mean": round(float(fold_rho), 4),
                "sketch": est.describe(),
            }  # fmt: skip
            rows.append(row)
            print(f"draws {draws:>2} seed {seed}: set-up {setup:6.1f}s, scoring {scoring:6.1f}s, "
                  f"ρ {row['rho']:.4f}, fold ρ {row['fold_rho_mean']:.4f}", flush=True)  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"proxy": str(args.proxy), "data": str(args.data),
                  "candidates": len(candidates), "rows": rows}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
