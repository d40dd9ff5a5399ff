"""`stepsift demo`: the quick benchmark."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the quick benchmark: one seed, protocol B, the main methods (< 10 min)"
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--pool", type=int, default=2000, help="candidate pool size")
    p.add_argument("--noise", type=float, default=0.4, help="fraction of noisy pool samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=None, help="base checkpoint cache folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from stepsift.bench.demo import demo_config
    from stepsift.bench.demo import run_demo as demo

    demo(
        demo_config(
            args.out, args.pool, args.noise, args.seed, not args.quiet, cache_dir=args.cache
        )
    )
    return 0
