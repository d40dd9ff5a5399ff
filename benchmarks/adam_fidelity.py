"""Where the curvature estimate loses `exact`'s ranking under the default Adam step.

The curvature estimator (utility/curvature.py) writes the utility around θ + c, with c the
step every candidate shares and b_i the candidate's own part of its exact update:

    U_i = [L_A(θ) - L_A(θ + c)] - <g_A, b_i> - ½ b_iᵀ H_A b_i - (higher orders)

and replaces H_A by a sketched Gauss-Newton matrix. On the scoring-speed setup this script
computes, for the same candidates, each layer of that approximation exactly, so the loss
of rank correlation can be put where it happens:

  linear        offset - <g_A, b_i>
  GGN exact     ... - ½ b_iᵀ G_A b_i with G_A exact (forward-mode through the logits)
  Hessian exact ... - ½ b_iᵀ H_A b_i with H_A exact (second directional derivative)
  curvature     the estimator as shipped (sketched GGN, rank 64)

    python benchmarks/adam_fidelity.py --candidates 160 --json runs/adam_fidelity.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.func import jvp

from stepsift.proxy.base import Batch, Params, Proxy
from stepsift.utility.anchors import AnchorLoss, expand_at_shared_step
from stepsift.utility.curvature import CurvatureUtility
from stepsift.utility.exact import ExactUtility
from stepsift.utility.gradients import per_sample_grads
from stepsift.utility.steps import StepRule

try:
    from scoring_speed import step_rule_named, top_overlap, warmed_setup
except ImportError:
    from benchmarks.scoring_speed import step_rule_named, top_overlap, warmed_setup


def ggn_quadratic(proxy: Proxy, anchors: Batch, center: Params, b: Params) -> float:
    """b ᵀ G_A b exactly: the logits' tangent u = J b, then per supervised token
    uᵀ (diag p - p pᵀ) u, averaged as the anchor loss averages tokens and anchors."""
    total = 0.0
    for part in AnchorLoss(proxy, anchors).chunks(64):
        logits, u = jvp(lambda p, part=part: proxy.token_logits(p, part), (center,), (b,))
        prob = logits.double().softmax(-1)
        u = u.double()
        per_token = (prob * u * u).sum(-1) - (prob * u).sum(-1) ** 2
        mask = part["loss_mask"].double()
        total += float(((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).sum())
    return total / len(anchors)


def hessian_quadratic(proxy: Proxy, anchors: Batch, center: Params, b: Params) -> float:
    """b ᵀ H_A b exactly: d²/dt² L_A(center + t b) at t = 0, forward over forward."""
    total = 0.0
    for part in AnchorLoss(proxy, anchors).chunks(64):

        def loss(p, part=part):
            return proxy.per_sample_loss(p, part).double().sum()

        def slope(p):
            return jvp(loss, (p,), (b,))[1]

        total += float(jvp(slope, (center,), (b,))[1])
    return total / len(anchors)


def decompose(proxy: Proxy, batches: list[Batch], anchors: Batch, rule: StepRule) -> dict:
    params = proxy.step_parameters()
    expansion = expand_at_shared_step(proxy, anchors, params, rule)
    exact = ExactUtility(proxy, anchors, rule)
    curvature = CurvatureUtility(proxy, anchors, rule)
    rows: dict[str, list[float]] = {k: [] for k in ("exact", "linear", "ggn", "hessian", "curv")}
    sizes = []
    for batch in batches:
        rows["exact"] += exact(batch).utility.tolist()
        rows["curv"] += curvature(batch).utility.tolist()
        with torch.no_grad():
            grads, _ = per_sample_grads(proxy, params, batch.tensors)
            deltas = rule(grads)
        for i in range(len(batch)):
            b = {n: deltas[n][i] - expansion.shared[n] for n in params}
            lin = expansion.offset - float(
                sum((b[n].double() * expansion.anchor_grad[n].double()).sum() for n in params)
            )
            rows["linear"].append(lin)
            rows["ggn"].append(lin - 0.5 * ggn_quadratic(proxy, anchors, expansion.center, b))
            rows["hessian"].append(
                lin - 0.5 * hessian_quadratic(proxy, anchors, expansion.center, b)
            )
            sizes.append(float(torch.sqrt(sum((b[n].double() ** 2).sum() for n in params))))
    ex = np.asarray(rows["exact"])
    out = {}
    for name, values in rows.items():
        if name == "exact":
            continue
        v = np.asarray(values)
        out[name] = {
            "spearman": float(spearmanr(ex, v).statistic),
            "top20": top_overlap(ex, v),
            "mean_abs_error": float(np.abs(v - ex).mean()),
        }
    out["exact_spread"] = float(ex.std())
    out["own_step_norm"] = {"median": float(np.median(sizes)), "max": float(np.max(sizes))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pool", type=int, default=600)
    ap.add_argument("--candidates", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("runs/scoring_speed"))
    ap.add_argument("--rules", default="adam,sgd 0.1")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    proxy, batches, anchors = warmed_setup(
        args.pool, args.candidates, args.batch_size, args.out, torch.device("cpu")
    )
    report = {}
    for name in args.rules.split(","):
        rule = step_rule_named(name, proxy)
        report[name] = got = decompose(proxy, batches, anchors, rule)
        for k in ("linear", "ggn", "hessian", "curv"):
            g = got[k]
            print(f"{name:>8} {k:>8}: ρ {g['spearman']:+.3f}  top-20% {g['top20']:.2f}  "
                  f"|err| {g['mean_abs_error']:.2e}", flush=True)  # fmt: skip
        print(f"{name:>8} exact spread {got['exact_spread']:.2e}, ‖b‖ {got['own_step_norm']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
