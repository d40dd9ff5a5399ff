"""How well the groups `score` finds for unlabelled anchors match the groups a label names.

Given a bench level folder (its `data/pool.jsonl`, `data/anchors.jsonl` and the warmed-up
`proxy/` its score run saved), finds the anchor groups exactly as `stepsift score
--anchor-groups auto` does when the anchors carry no group field (the label is hidden
from it), then prints the rule's figures (stability per k, smallest group) and the found
groups against the hidden label: a contingency table and the adjusted Rand index.

    python benchmarks/anchor_groups.py runs/bench/noise-40 [--label group]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from stepsift.data import read_records
from stepsift.data.index import index_records
from stepsift.engine.anchor_grouping import probe_batches
from stepsift.engine.scorer import DEFAULT_SGD_LR
from stepsift.engine.settings import ScoreSettings
from stepsift.proxy.loading import load_saved_proxy
from stepsift.utility.anchor_groups import find_anchor_groups
from stepsift.utility.anchor_views import field_value
from stepsift.utility.steps import make_step_rule


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("level", type=Path, help="a bench level folder (data/, proxy/)")
    p.add_argument("--label", default="group", help="the anchors' hidden group field")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = args.level / "data"
    settings = ScoreSettings()
    proxy = load_saved_proxy(args.level / "proxy")
    proxy.restrict_step(settings.params)
    rule = make_step_rule(settings.optimizer, settings.lr, proxy, DEFAULT_SGD_LR)
    anchor_records = read_records(data / "anchors.jsonl").records
    truth = [str(field_value(r.metadata, args.label)) for r in anchor_records]
    pool = index_records(data / "pool.jsonl")
    start = time.perf_counter()
    anchors = proxy.collate(anchor_records)
    batches = probe_batches(pool, proxy, settings.batch_size, settings.seed)
    found = find_anchor_groups(proxy, anchors, anchors.ids, batches, rule, settings.seed)
    seconds = time.perf_counter() - start
    print(f"{len(anchor_records)} anchors, probe {found.probe} candidates, "
          f"products on {found.products}, {seconds:.1f} s")  # fmt: skip
    print("k | stability (least stable group's mean best-match Jaccard, probe halves) | smallest")
    for k in sorted(found.stability):
        print(f"{k} | {found.stability[k]:.3f} | {found.smallest[k]}")
    out = {"k": found.k, "seconds": seconds, **found.describe()}
    if found.labels is None:
        print(f"no groups: {found.reason}")
    else:
        ari = adjusted_rand_score(truth, list(found.labels))
        out["ari_with_label"] = ari
        print(f"found k={found.k}; adjusted Rand index with the hidden '{args.label}': "
              f"{ari:.3f}")  # fmt: skip
        names = sorted(set(truth))
        print("found \\ " + " | ".join(names))
        for g in sorted(set(found.labels)):
            row = [sum(1 for t, f in zip(truth, found.labels, strict=True) if f == g and t == n)
                   for n in names]  # fmt: skip
            print(f"{g} | " + " | ".join(str(c) for c in row))
        out["table"] = {
            g: {n: int(np.sum([(f == g and t == n) for t, f in zip(truth, found.labels,
                                                                     strict=True)]))
                for n in names}
            for g in sorted(set(found.labels))
        }  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
