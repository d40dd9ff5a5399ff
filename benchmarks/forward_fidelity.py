"""How many curvature directions a forward-only estimate needs, and what linearising the
candidate's step costs in fidelity (issue 17, item 2).

On the scoring-speed setup (built-in proxy warmed up on the benchmark pool, 160 seeded
candidates, 100 anchors), for each step rule, every variant's Spearman ρ and top-20%
overlap against `exact`, from the same candidates' per-sample gradients G:

  first-order      offset + <P g_A, g_i>                  (K = 0: `--method first-order`)
  top-K            ... - ½ Σ_{k≤K} <d_k, g_i>²            (`--method forward`, K directions)
  all directions   ... - ½ ||W P g_i||²                   (the whole rank-64 sketch)
  curvature        the exact update δ_i, not P g_i       (`--method curvature`)

P is the linearised step (lr for SGD; Adam with its second moment frozen at the warm
value), W the anchors' GGN sketch, d_k the top right singular directions of W P. It also
times, interleaved batch by batch (in rotating order, 3 rounds), a plain forward, the
per-sample gradients, curvature, and curvature with the linearised step (one product of G
with the stacked P g_A and W P).

    python benchmarks/forward_fidelity.py --json benchmarks/results/forward_fidelity.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from stepsift.proxy.base import Params
from stepsift.utility.curvature import CurvatureUtility
from stepsift.utility.exact import ExactUtility
from stepsift.utility.first_order import preconditioner
from stepsift.utility.gradients import per_sample_grads
from stepsift.utility.steps import SGDStep, StepRule, make_step_rule

try:
    from scoring_speed import top_overlap, warmed_setup
except ImportError:
    from benchmarks.scoring_speed import top_overlap, warmed_setup

KS = (1, 2, 4, 8, 16)


def flat(tensors: Params, names: list[str], rows: int) -> torch.Tensor:
    return torch.cat([tensors[n].reshape(rows, -1) for n in names], dim=1)


def linearised_rows(curv: CurvatureUtility, rule: StepRule, names: list[str]) -> torch.Tensor:
    """[P g_A; W P] as rows: the linear direction, then the sketch scaled by P."""
    precond = preconditioner(rule, curv.params)
    lin = flat({n: precond[n] * curv.anchor_grad[n] for n in names}, names, 1)
    size = curv.sketch.size
    return torch.cat(
        [lin, flat({n: curv.sketch.vectors[n] * precond[n] for n in names}, names, size)]
    )


def variants(curv: CurvatureUtility, rows: torch.Tensor, grads: torch.Tensor) -> dict:
    proj = grads.double() @ rows.double().T
    linear = curv.offset + proj[:, 0]
    a = rows[1:].double()
    eigvals, eigvecs = torch.linalg.eigh(a @ a.T)  # d_k = u_kᵀ A
    out = {"first-order": linear, "all directions": linear - 0.5 * (proj[:, 1:] ** 2).sum(1)}
    shares = {}
    for k in KS:
        top = eigvecs[:, -k:].T @ a
        out[f"top-{k}"] = linear - 0.5 * ((grads.double() @ top.T) ** 2).sum(1)
        shares[k] = float(eigvals[-k:].sum() / eigvals.clamp(min=0).sum())
    return out, shares


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pool", type=int, default=600)
    ap.add_argument("--candidates", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("runs/scoring_speed"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    proxy, batches, anchors = warmed_setup(
        args.pool, args.candidates, args.batch_size, args.out, torch.device("cpu")
    )
    params = proxy.step_parameters()
    names = list(params)
    grads = []
    for b in batches:
        with torch.no_grad():
            g, _ = per_sample_grads(proxy, params, b.tensors)
        grads.append(flat(g, names, len(b)))
    grads_all = torch.cat(grads)
    rules: dict[str, StepRule] = {f"sgd {e:g}": SGDStep(e) for e in (1e-3, 1e-2, 1e-1)}
    rules["adam (default)"] = make_step_rule("adam", None, proxy, 0.0)
    report: dict = {}
    for rule_name, rule in rules.items():
        exact = np.concatenate([ExactUtility(proxy, anchors, rule)(b).utility for b in batches])
        curv = CurvatureUtility(proxy, anchors, rule)
        got, shares = variants(curv, linearised_rows(curv, rule, names), grads_all)
        got["curvature"] = torch.cat([curv(b).utility for b in batches])
        report[rule_name] = {"share_of_curvature_kept": shares}
        for name, values in got.items():
            v = values.numpy()
            rho, top = float(spearmanr(exact, v).statistic), top_overlap(exact, v)
            report[rule_name][name] = {"spearman": rho, "top20": top}
            print(f"{rule_name:>15} {name:>15}: ρ {rho:+.3f}  top-20% {top:.2f}", flush=True)
        print(f"{rule_name:>15} share of ||W P||² kept by the top K: "
              + ", ".join(f"K={k} {s:.2f}" for k, s in shares.items()))  # fmt: skip

    # -- cost under the default step, interleaved ------------------------------------------
    rule = rules["adam (default)"]
    curv = CurvatureUtility(proxy, anchors, rule)
    rows = linearised_rows(curv, rule, names)
    model_params = dict(proxy.model.named_parameters())

    def forward(b):
        with torch.no_grad():
            proxy.per_sample_loss(model_params, b.tensors)

    def gradients(b):
        with torch.no_grad():
            per_sample_grads(proxy, params, b.tensors)

    def linearised(b):
        with torch.no_grad():
            g, _ = per_sample_grads(proxy, params, b.tensors)
            proj = (flat(g, names, len(b)) @ rows.T).double()
            return curv.offset + proj[:, 0] - 0.5 * (proj[:, 1:] ** 2).sum(1)

    timed = {"forward": forward, "per-sample gradients": gradients, "curvature": curv,
             "curvature, linearised step": linearised}  # fmt: skip
    seconds = dict.fromkeys(timed, 0.0)
    names_timed = list(timed)
    for round_ in range(3):
        for i, b in enumerate(batches):
            # each batch starts with another method, so none always runs on a warm cache
            shift = (i + round_) % len(names_timed)
            for name in names_timed[shift:] + names_timed[:shift]:
                fn = timed[name]
                start = time.perf_counter()
                fn(b)
                seconds[name] += time.perf_counter() - start
    equivalents = {k: v / seconds["forward"] for k, v in seconds.items()}
    for name, fe in equivalents.items():
        print(f"{name:>28}: {fe:.2f} forward-equivalents")
    report["forward_equivalents"] = equivalents
    report["threads"] = torch.get_num_threads()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
