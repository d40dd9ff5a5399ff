"""Noise detection of the exact one-step utility across optimizers and step sizes.

Generates a noisy visual-math pool, warms up one built-in proxy, then scores the same
pool with each (optimizer, lr) and prints the AUROC of ranking clean samples above
wrong ones, beside the proxy-loss baseline, and the share flagged harmful.

    python benchmarks/step_size_sweep.py --pool 300 --out runs/sweep
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from stepsift.bench.generate import write_benchmark
from stepsift.bench.metrics import noise_auroc, noise_tags
from stepsift.data import read_records
from stepsift.engine.scoring import length_sorted
from stepsift.proxy.builtin import BuiltinProxy
from stepsift.proxy.warmup import WarmupSettings, warm_up
from stepsift.utility.exact import ExactUtility
from stepsift.utility.steps import AdamStep, SGDStep, make_step_rule


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pool", type=int, default=300)
    ap.add_argument("--noise", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sgd-lrs", default="0.001,0.01,0.05,0.1")
    ap.add_argument("--adam-lrs", default="0.001")
    ap.add_argument("--out", type=Path, default=Path("runs/sweep"))
    args = ap.parse_args()

    paths = write_benchmark(
        args.out, n_pool=args.pool, n_anchors=100, n_test=10, noise_rate=args.noise, seed=args.seed
    )
    pool = length_sorted(read_records(paths.pool).records)
    anchors = read_records(paths.anchors).records
    tags = noise_tags(read_records(paths.pool).records)
    noise = [tags[r.id] for r in pool]

    proxy = BuiltinProxy(seed=args.seed)
    report = warm_up(proxy, pool, WarmupSettings(seed=args.seed), progress=False)
    print(f"warm-up: {report.steps} steps, loss {report.first_loss:.3f} -> {report.last_loss:.3f}")
    anchor_batch = proxy.collate(anchors)

    rules = [SGDStep(float(x)) for x in args.sgd_lrs.split(",")]
    for lr in args.adam_lrs.split(","):
        rules.append(make_step_rule("adam", float(lr), proxy, 0.0))  # warm-up state
        rules.append(AdamStep(lr=float(lr)))  # fresh state
    print("| step | AUROC utility | AUROC loss | harmful share | s/sample |")
    print("|---|---|---|---|---|")
    for rule in rules:
        est = ExactUtility(proxy, anchor_batch, rule)
        start = time.perf_counter()
        utility, loss = [], []
        for s in range(0, len(pool), 16):
            r = est(proxy.collate(pool[s : s + 16]))
            utility += r.utility.tolist()
            loss += r.loss.tolist()
        sec = (time.perf_counter() - start) / len(pool)
        d = rule.describe()
        name = f"{d['optimizer']} lr={d['lr']:g}" + (
            f" ({d['adam_state']})" if "adam_state" in d else ""
        )
        u = np.asarray(utility)
        print(
            f"| {name} | {noise_auroc(u, noise):.3f} | {noise_auroc(-np.asarray(loss), noise):.3f} "
            f"| {np.mean(u < 0):.2f} | {sec:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
