"""Generate a bench v2 pool and score it as the bench does, without training anything: for
measurements that need only a score file and the noise tags (benchmarks/noise_flags.py,
benchmarks/anchor_groups.py) on pools other than the bench's default one.

    python benchmarks/score_bench_pool.py --out runs/pool-n30 --pool 3000 --noise 0.3 \\
        --cache runs/cache [--anchor-labels hidden]

Writes OUT/noise-NN/{data,scores.parquet,proxy} exactly as `stepsift bench` would with the
same settings (the proxy pre-trained once in --cache, then warmed up on 5% of the pool;
`curvature` with its audit).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stepsift.bench.runner import BenchConfig, benchmark_data, proxy_start
from stepsift.bench.score_runs import ScoreRecipe, ost_scores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pool", type=int, default=10_000)
    p.add_argument("--noise", type=float, default=0.4)
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--anchor-labels", choices=("shown", "hidden"), default="hidden")
    args = p.parse_args()
    cfg = BenchConfig(out=args.out, pool_size=args.pool, noise_rates=(args.noise,),
                      cache_dir=args.cache, anchor_labels=args.anchor_labels,
                      progress=False)  # fmt: skip
    paths = benchmark_data(cfg, args.noise)
    recipe = ScoreRecipe(
        pool=paths.pool,
        anchors=paths.anchors,
        folder=paths.root.parent,
        warmup=cfg.warmup,
        proxy_init=proxy_start(cfg),
        seed=cfg.data_seed,
        progress=False,
        anchor_group_field="group" if cfg.anchor_labels == "shown" else "",
    )
    cost = ost_scores(recipe, cfg.estimator, cfg.audit)
    print(f"scored {paths.pool} in {cost.score_seconds:.0f} s -> {recipe.folder}/scores.parquet")


if __name__ == "__main__":
    main()
