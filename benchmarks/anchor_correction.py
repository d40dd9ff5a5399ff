"""Does correcting `curvature` with the exact utility on k anchors recover exact's ranking?

On the scoring-speed setup (the built-in proxy warmed up on the benchmark's pool, a
seeded sample of candidates), side by side in one run, under the default Adam step and
SGD at 1e-3 / 1e-2 / 1e-1:

  exact                  all anchors (the reference)
  curvature              the shipped second-order estimate
  curvature-corrected k  curvature + (exact - curvature) on a random k-anchor subset
  exact on k anchors     the plain subsample (`--method anchor-subsample`), the baseline
                         the correction has to beat

Spearman ρ and top-20% overlap with exact, each averaged over `--subset-seeds` draws of
the subset (and the worst draw), and cost per candidate in forward-equivalents (seconds
over a plain forward's, timed interleaved batch by batch).

    python benchmarks/anchor_correction.py --json benchmarks/results/anchor_correction.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from stepsift.utility.curvature import CurvatureUtility
from stepsift.utility.exact import ExactUtility
from stepsift.utility.subsample import AnchorSubsampleUtility

try:
    from anchor_correction_estimator import CorrectedCurvatureUtility
    from scoring_speed import step_rule_named, top_overlap, warmed_setup
except ImportError:
    from benchmarks.anchor_correction_estimator import CorrectedCurvatureUtility
    from benchmarks.scoring_speed import step_rule_named, top_overlap, warmed_setup


def run_all(estimators: dict, batches: list) -> tuple[dict, dict]:
    """Every estimator's utilities, and its seconds per candidate (interleaved)."""
    values: dict[str, list] = defaultdict(list)
    seconds: dict[str, float] = defaultdict(float)
    for batch in batches:
        for name, est in estimators.items():
            start = time.perf_counter()
            values[name] += est(batch).utility.cpu().tolist()
            seconds[name] += time.perf_counter() - start
    n = sum(len(b) for b in batches)
    return {k: np.asarray(v) for k, v in values.items()}, {k: v / n for k, v in seconds.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pool", type=int, default=600)
    ap.add_argument("--candidates", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--ks", default="8,16,32")
    ap.add_argument("--subset-seeds", type=int, default=5)
    ap.add_argument("--rules", default="adam,sgd 0.001,sgd 0.01,sgd 0.1")
    ap.add_argument("--out", type=Path, default=Path("runs/scoring_speed"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    proxy, batches, anchors = warmed_setup(
        args.pool, args.candidates, args.batch_size, args.out, torch.device("cpu")
    )
    params = proxy.step_parameters()
    ks = [int(k) for k in args.ks.split(",")]
    report: dict = {"candidates": sum(len(b) for b in batches), "anchors": len(anchors)}
    for rule_name in args.rules.split(","):
        rule = step_rule_named(rule_name, proxy)

        def forward(batch, rule=rule):
            with torch.no_grad():
                return type("R", (), {"utility": proxy.per_sample_loss(params, batch.tensors)})

        agreement: dict[str, list] = defaultdict(list)
        cost: dict[str, list] = defaultdict(list)
        for seed in range(args.subset_seeds):
            ests = {"forward": forward}
            if seed == 0:
                ests |= {"exact": ExactUtility(proxy, anchors, rule),
                         "curvature": CurvatureUtility(proxy, anchors, rule)}  # fmt: skip
            for k in ks:
                ests[f"curvature-corrected k={k}"] = CorrectedCurvatureUtility(
                    proxy, anchors, rule, exact_anchors=k, seed=seed
                )
                ests[f"exact on k={k} anchors"] = AnchorSubsampleUtility(
                    proxy, anchors, rule, exact_anchors=k, seed=seed
                )
            got, secs = run_all(ests, batches)
            if seed == 0:
                exact = got["exact"]
            for name, v in got.items():
                if name in ("forward", "exact"):
                    if name == "exact":
                        cost[name].append(secs[name] / secs["forward"])
                    continue
                agreement[name].append(
                    (float(spearmanr(exact, v).statistic), top_overlap(exact, v))
                )
                cost[name].append(secs[name] / secs["forward"])
        rows_out = {}
        for name in ["exact", "curvature"] + [n for n in agreement if n != "curvature"]:
            fe = float(np.mean(cost[name]))
            if name == "exact":
                rows_out[name] = {"forward_equivalents": fe}
                print(f"{rule_name:>9} {name:>26}: cost {fe:6.1f} FE", flush=True)
                continue
            a = np.asarray(agreement[name])
            rows_out[name] = {
                "spearman_mean": float(a[:, 0].mean()),
                "spearman_min": float(a[:, 0].min()),
                "top20_mean": float(a[:, 1].mean()),
                "top20_min": float(a[:, 1].min()),
                "draws": len(a),
                "forward_equivalents": fe,
            }
            r = rows_out[name]
            print(f"{rule_name:>9} {name:>26}: ρ {r['spearman_mean']:.3f} "
                  f"(worst {r['spearman_min']:.3f})  top-20% {r['top20_mean']:.2f} "
                  f"(worst {r['top20_min']:.2f})  cost {fe:6.1f} FE", flush=True)  # fmt: skip
        report[rule_name] = rows_out
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
