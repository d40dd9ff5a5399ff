"""Selection variants on one bench score file, side by side: the family and anchor-task
composition and wrong share of each variant's subset (no training), read from the bench's
hidden tags. It is how the variants of issue #16 were compared before any of them trained.

    python benchmarks/selection_variants.py runs/bench/noise-40

Printed per variant: target-family share, wrong share, AUROC (where the variant is a score),
the anchor tasks' and the families' shares of the subset.

Variants: the plain top-k by utility (OST), utility per gradient-sketch norm (a cosine-like
relevance), utility per supervised token, the plain loss filter, coverage of the anchor
groups (the default), and two "fit gates" (the lower-loss half of a shortlist twice the
budget: of coverage's, and of the top-k's).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from stepsift.select.coverage import coverage_order
from stepsift.select.score_data import read_score_data


def main(level: Path) -> None:
    data = read_score_data(level / "scores.parquet")
    meta = {}
    for line in open(level / "data" / "pool.jsonl", encoding="utf-8"):
        row = json.loads(line)
        meta[row["id"]] = row["meta"]
    ids, n = data.ids, len(data.ids)
    fam = np.array([meta[i]["family"] for i in ids])
    task = np.array([meta[i]["task"] for i in ids])
    wrong = ~np.isin([meta[i]["noise"] for i in ids], ["clean", "near_duplicate"])
    u, loss = data.utility, data.table.column("loss").to_numpy()
    tokens = data.tokens.astype(np.float64)
    norm = np.linalg.norm(data.sketch, axis=1)
    names, sizes = data.groups
    tie = np.empty(n, dtype=np.int64)
    tie[np.argsort(-u, kind="stable")] = np.arange(n)
    target = "chain"
    print(f"anchor groups {dict(zip(names, sizes, strict=True))}; pool: {n}, "
          f"target {np.mean(fam == target):.2f}, wrong {wrong.mean():.2f}")  # fmt: skip

    def top(score: np.ndarray, k: int) -> np.ndarray:
        return np.argsort(-score, kind="stable")[:k]

    def lower_loss_half(chosen: np.ndarray, served: np.ndarray) -> np.ndarray:
        keep = [c[np.argsort(loss[c], kind="stable")[: len(c) // 2]]
                for c in (chosen[served == j] for j in range(len(names)))]  # fmt: skip
        return np.concatenate(keep)

    for fraction in (0.2, 0.5):
        k = int(fraction * n)
        cover, _ = coverage_order(data.group_utility, np.array(sizes), k, tie)
        wide, served = coverage_order(data.group_utility, np.array(sizes), min(n, 2 * k), tie)
        short = top(u, min(n, 2 * k))
        variants = {
            "ost top-k (utility)": (top(u, k), u),
            "utility / sketch norm": (top(u / norm, k), u / norm),
            "utility / tokens": (top(u / tokens, k), u / tokens),
            "loss filter": (top(-loss, k), -loss),
            "coverage (default)": (cover, None),
            "coverage + fit gate": (lower_loss_half(wide, served)[:k], None),
            "top-k + fit gate": (short[np.argsort(loss[short], kind="stable")[:k]], None),
        }
        print(f"\nkeep {fraction:.0%} | target | wrong | AUROC | anchor tasks in kept | families")
        for name, (idx, score) in variants.items():
            auroc = f"{roc_auc_score(~wrong, score):.3f}" if score is not None else "-"
            tasks = ", ".join(f"{g} {np.mean(task[idx] == g):.2f}" for g in names)
            families = ", ".join(f"{f} {np.mean(fam[idx] == f):.2f}" for f in np.unique(fam))
            print(f"{name} | {np.mean(fam[idx] == target):.2f} | {wrong[idx].mean():.2f} | "
                  f"{auroc} | {tasks} | {families}")  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]))
