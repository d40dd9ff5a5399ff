"""Harmful flags and noise rankings against a bench level's hidden noise tags, every rule
side by side (issue 30 item 4).

For each bench level folder (its `scores.parquet` and `data/pool.jsonl` with the noise
tags the generator wrote, read here only to measure), prints:
  * flags: how many, precision (share really wrong: not clean and not a near-duplicate),
    recall, for utility < 0, the calibrated test (plain and Benjamini-Hochberg), the
    loss misfit alone, and `select`'s default (evidence: calibrated and misfit) with its
    variants (one kind for the whole pool; utility < 0 in place of the calibrated test);
  * AUROC of clean against wrong for the utility, the loss filter (low loss first), the
    misfit score (low within-kind loss z first), `select`'s default order (coverage), and
    that order with the default's flagged candidates moved last.

    python benchmarks/noise_flags.py runs/bench/noise-40 [more levels] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stepsift.bench.metrics import NOT_WRONG, flag_quality, noise_auroc
from stepsift.bench.selectors import stepsift_default
from stepsift.engine.store import read_scores
from stepsift.select import misfit
from stepsift.select.harmful import Policy, harmful_flags
from stepsift.select.reliability import calibrated_harmful
from stepsift.select.score_data import read_score_data


def noise_of(pool: Path) -> dict[str, str]:
    tags = {}
    with open(pool, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            tags[record["id"]] = record["meta"]["noise"]
    return tags


def measure(level: Path) -> dict:
    scores = level / "scores.parquet"
    data = read_score_data(scores)
    tags = noise_of(level / "data" / "pool.jsonl")
    noise = [tags[i] for i in data.ids]
    wrong_share = float(np.mean([t not in NOT_WRONG for t in noise]))
    calibrated = calibrated_harmful(data.utility, data.fold_utility, data.fold_sizes)
    kinds = misfit.candidate_kinds(data.sketch, len(data.ids))
    z = misfit.loss_z_within_kind(data.loss, kinds)
    z_pooled = misfit.loss_z_within_kind(data.loss, np.zeros(len(data.ids), dtype=np.int64))
    odd = z > misfit.MISFIT_Z
    default, _ = harmful_flags(data, Policy())
    flags = {
        "utility < 0": data.utility < 0,
        "calibrated (one-sided t, 0.05)": calibrated,
        "calibrated, Benjamini-Hochberg": harmful_flags(
            data, Policy(harmful="calibrated", correction="bh")
        )[0],
        "loss misfit alone (z > 2 in its kind)": odd,
        "default: evidence (calibrated and misfit)": default,
        "evidence, one kind for the pool": calibrated & (z_pooled > misfit.MISFIT_Z),
        "evidence with utility < 0 for calibrated": (data.utility < 0) & odd,
    }
    order = stepsift_default(read_scores(scores), 1.0).kept_ids
    place = {i: p for p, i in enumerate(order)}
    default_order = -np.array([place[i] for i in data.ids], dtype=float)
    rankings = {
        "utility": data.utility,
        "loss filter (low loss first)": -data.loss,
        "misfit score (low within-kind loss z first)": -z,
        "default order (coverage)": default_order,
        "default order, flagged last": default_order - len(order) * default,
    }
    return {
        "level": str(level),
        "n": len(data.ids),
        "wrong_share": wrong_share,
        "kinds": int(len(np.unique(kinds))),
        "flags": {name: flag_quality(f, noise) for name, f in flags.items()},
        "auroc": {name: noise_auroc(s, noise) for name, s in rankings.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("levels", type=Path, nargs="+", help="bench level folders")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    results = []
    for level in args.levels:
        r = measure(level)
        results.append(r)
        print(f"\n{level}: {r['n']} candidates, {r['wrong_share']:.1%} wrong, "
              f"{r['kinds']} kinds by sketch")  # fmt: skip
        print(f"| flag rule | flagged | precision (target {2 * r['wrong_share']:.1%}) | recall |")
        print("|---|---|---|---|")
        for name, q in r["flags"].items():
            print(f"| {name} | {q['flagged']} | {q['precision']:.1%} | {q['recall']:.1%} |")
        loss_auc = r["auroc"]["loss filter (low loss first)"]
        print(f"\n| ranking | noise AUROC (target {loss_auc + 0.05:.3f}) |")
        print("|---|---|")
        for name, a in r["auroc"].items():
            print(f"| {name} | {a:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
