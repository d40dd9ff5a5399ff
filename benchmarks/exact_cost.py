"""Cost of the exact one-step utility, measured side by side in one run.

For each proxy size: candidates per second of the `exact` estimator with either anchor
strategy (a loop of functional calls over the stepped parameter sets, or one vmap over
them), and of the obvious per-candidate loop (deep-copy the model, a real torch.optim.SGD
step, evaluate the anchors), on the same candidates and anchors. Prints the ratios.

    python benchmarks/exact_cost.py --candidates 48
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from stepsift.bench.generate import write_benchmark
from stepsift.data import read_records
from stepsift.proxy.builtin import BuiltinProxy
from stepsift.proxy.tiny_vlm import TinyVLMConfig
from stepsift.utility.exact import ExactUtility
from stepsift.utility.steps import SGDStep

SIZES = {
    "default (d64 x2)": TinyVLMConfig(),
    "larger (d96 x3)": TinyVLMConfig(d_model=96, n_layers=3),
}


def loop_utility(proxy: BuiltinProxy, candidates, anchor_batch, lr: float) -> list[float]:
    """One candidate at a time: copy, step with torch.optim.SGD, evaluate anchors."""
    with torch.no_grad():
        base = proxy.per_sample_loss({}, anchor_batch.tensors).mean().item()
    out = []
    for record in candidates:
        model = copy.deepcopy(proxy.model)
        stepped = copy.copy(proxy)
        stepped.model = model
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        stepped.per_sample_loss({}, stepped.collate([record]).tensors)[0].backward()
        opt.step()
        with torch.no_grad():
            out.append(base - stepped.per_sample_loss({}, anchor_batch.tensors).mean().item())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--candidates", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_benchmark(Path(tmp), n_pool=args.candidates, n_anchors=100, n_test=1)
        pool = read_records(paths.pool).records
        anchors = read_records(paths.anchors).records
        print(
            "| proxy | parameters | exact, loop (cand/s) | exact, vmap (cand/s) "
            "| deep-copy loop (cand/s) | loop / deep-copy | vmap / deep-copy |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, cfg in SIZES.items():
            proxy = BuiltinProxy(cfg)
            anchor_batch = proxy.collate(anchors)
            rates, results = {}, {}
            for strategy in ("loop", "vmap"):
                est = ExactUtility(proxy, anchor_batch, SGDStep(1e-3), strategy=strategy)
                start = time.perf_counter()
                out = []
                for s in range(0, len(pool), args.batch_size):
                    out += est(proxy.collate(pool[s : s + args.batch_size])).utility.tolist()
                rates[strategy] = len(pool) / (time.perf_counter() - start)
                results[strategy] = out
            start = time.perf_counter()
            looped = loop_utility(proxy, pool, anchor_batch, 1e-3)
            rate_copy = len(pool) / (time.perf_counter() - start)
            gap = max(abs(a - b) for r in results.values() for a, b in zip(r, looped, strict=True))
            n_params = sum(p.numel() for p in proxy.model.parameters())
            print(
                f"| {name} | {n_params:,} | {rates['loop']:.2f} | {rates['vmap']:.2f} "
                f"| {rate_copy:.2f} | {rates['loop'] / rate_copy:.2f}x "
                f"| {rates['vmap'] / rate_copy:.2f}x |",
                flush=True,
            )
            print(f"(max |U difference| against the deep-copy loop: {gap:.1e})")


if __name__ == "__main__":
    main()
