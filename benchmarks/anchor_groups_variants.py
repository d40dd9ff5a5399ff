"""The anchor-group rules tried before the default was fixed (issue 30 item 1), on one bench
level whose anchors carry a hidden label: for probes of 256 and 1,024 candidates, the k
each rule picks and that partition's adjusted Rand index with the label; and clustering by
the anchors' gradient cosine instead of their step profiles, at k = 5 and 6.

    python benchmarks/anchor_groups_variants.py runs/bench/noise-40 [--label group]

Rules: `most stable (ARI)` is the k whose partitions on two probe halves agree best (mean
adjusted Rand over 10 splits); `largest ARI >= 0.8` the largest k with that mean at least
0.8; `default` the rule `score` uses (utility/anchor_groups.py: the largest k whose every
group has mean best-match Jaccard >= 0.75, with the size floor).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from stepsift.data import read_records
from stepsift.data.index import index_records
from stepsift.engine import anchor_grouping
from stepsift.engine.scorer import DEFAULT_SGD_LR
from stepsift.engine.settings import ScoreSettings
from stepsift.proxy.loading import load_saved_proxy
from stepsift.utility import anchor_groups as ag
from stepsift.utility.anchor_views import field_value
from stepsift.utility.gradients import per_sample_grads
from stepsift.utility.steps import make_step_rule, shared_step


def ari_stability(profiles: np.ndarray, k: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    n = profiles.shape[1]
    scores = []
    for split in range(ag.SPLITS):
        order = rng.permutation(n)
        a, b = (ag.partition(ag.unit_profiles(profiles[:, h]), k, seed + split)
                for h in (order[: n // 2], order[n // 2 :]))  # fmt: skip
        scores.append(adjusted_rand_score(a, b))
    return float(np.mean(scores))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("level", type=Path)
    p.add_argument("--label", default="group")
    args = p.parse_args()
    settings = ScoreSettings()
    proxy = load_saved_proxy(args.level / "proxy")
    proxy.restrict_step(settings.params)
    rule = make_step_rule(settings.optimizer, settings.lr, proxy, DEFAULT_SGD_LR)
    records = read_records(args.level / "data" / "anchors.jsonl").records
    truth = [str(field_value(r.metadata, args.label)) for r in records]
    pool = index_records(args.level / "data" / "pool.jsonl")
    anchors = proxy.collate(records)
    print("| probe | rule | k | ARI with the label |")
    print("|---|---|---|---|")
    for probe in (256, 1024):
        anchor_grouping.PROBE = probe
        batches = anchor_grouping.probe_batches(pool, proxy, settings.batch_size, settings.seed)
        profiles, _ = ag.anchor_profiles(proxy, anchors, batches, rule)
        unit = ag.unit_profiles(profiles)
        floor = ag.min_group_size(len(records))
        ks = range(2, min(ag.MAX_GROUPS, len(records) // floor) + 1)
        ari = {k: ari_stability(profiles, k) for k in ks}
        picks = {
            "most stable (ARI)": max(ks, key=lambda k: (ari[k], k)),
            "largest ARI >= 0.8": max([k for k in ks if ari[k] >= 0.8], default=None),
            "default": ag.choose_groups(profiles, anchors.ids).k or None,
        }
        for name, k in picks.items():
            score = adjusted_rand_score(truth, ag.partition(unit, k, 0)) if k else float("nan")
            print(f"| {probe} | {name} | {k} | {score:.3f} |")
    params = proxy.step_parameters()
    shared = shared_step(rule, params)
    center = {n: q + shared[n] for n, q in params.items()}
    rows = []
    with torch.no_grad():
        for s in range(0, len(anchors), 16):
            grads, _ = per_sample_grads(proxy, center, anchors.select(slice(s, s + 16)).tensors)
            rows.append(torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], 1))
    g = torch.cat(rows).double().numpy()
    unit = g / np.linalg.norm(g, axis=1, keepdims=True)
    for k in (5, 6):
        score = adjusted_rand_score(truth, ag.partition(unit, k, 0))
        print(f"| - | anchor-gradient cosine, k given | {k} | {score:.3f} |")


if __name__ == "__main__":
    main()
