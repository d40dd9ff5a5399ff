"""`stepsift bench`: the benchmark's arguments, and the `BenchConfig` they make."""

from __future__ import annotations

import argparse
from pathlib import Path

from stepsift.cli.list_args import floats, noise_mix, words
from stepsift.engine.settings import METHODS


def add_parser(sub: argparse._SubParsersAction) -> None:
    from stepsift.bench.runner import METHODS as BENCH_METHODS
    from stepsift.bench.runner import PROXY_STARTS, BenchConfig

    d = BenchConfig(out=Path("runs/bench"))  # every default comes from the config itself

    def listed(values: tuple) -> str:
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)

    p = sub.add_parser("bench", help="the full benchmark: every method, protocols A and B, seeds")
    p.add_argument("--out", type=Path, default=d.out)
    p.add_argument(
        "--methods", type=words, default=d.methods, help=f"of {','.join(BENCH_METHODS)}"
    )
    p.add_argument(
        "--fractions",
        type=floats,
        default=d.fractions,
        help=f"OST keep fractions (default {listed(d.fractions)})",
    )
    p.add_argument(
        "--random-fractions",
        type=floats,
        default=d.random_fractions,
        help=f"random-k keep fractions (default {listed(d.random_fractions)})",
    )
    p.add_argument(
        "--baseline-fraction",
        type=float,
        default=d.baseline_fraction,
        help=f"keep fraction of ost_drop_harmful, high_loss, ifd, deita "
        f"(default {d.baseline_fraction:g})",
    )
    p.add_argument("--protocols", type=words, default=d.protocols)
    p.add_argument("--seeds", type=lambda t: tuple(int(x) for x in words(t)), default=d.seeds)
    p.add_argument(
        "--noise", type=floats, default=d.noise_rates, help="noise rate(s), e.g. 0,0.2,0.4,0.6"
    )
    p.add_argument(
        "--noise-mix",
        type=noise_mix,
        default=d.noise_mix,
        help="weights of the noise types, e.g. near_duplicate=6,misread=1,arithmetic=1 "
        "(unnamed types 0; default: all equal). A near-duplicate-heavy pool: "
        "near_duplicate=6 with the others 1",
    )
    p.add_argument(
        "--target",
        type=words,
        default=d.target,
        help=f"the target task family/families: anchors and test come from them only "
        f"(default {listed(d.target)}; see bench/families.py)",
    )
    p.add_argument(
        "--target-share",
        type=float,
        default=d.target_share,
        help=f"share of the pool from the target families (default {d.target_share:g}; "
        "1: the old single-family pool)",
    )
    p.add_argument(
        "--families",
        type=noise_mix,
        default=d.other_families,
        help="weights of the other families in the rest of the pool, e.g. "
        "transcribe=2,text_arith=1 (unnamed ones 0; default: all equal)",
    )
    p.add_argument(
        "--proxy-start",
        choices=PROXY_STARTS,
        default=d.proxy_start,
        help="the proxy starts from a checkpoint pre-trained on a generic corpus of the "
        "world (cached), or from random weights; both are then warmed up on 5%% of the pool",
    )
    p.add_argument(
        "--anchor-labels",
        choices=("shown", "hidden"),
        default=d.anchor_labels,
        help="shown: score reads the anchors' template from their group field; hidden: it "
        "does not, and finds the anchor groups itself, as on a user's unlabelled anchors",
    )
    p.add_argument(
        "--audit",
        type=int,
        default=d.audit,
        help=f"candidates scored exactly to audit a fast estimator (default {d.audit}; 0 off)",
    )
    p.add_argument("--pool", type=int, default=d.pool_size, help="candidate pool size")
    p.add_argument("--test", type=int, default=d.n_test, help="test set size")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="target batch size")
    p.add_argument("--epochs", type=int, default=d.epochs, help="protocol A's epochs (B: full's)")
    p.add_argument("--lr", type=float, default=d.lr, help="target fine-tuning learning rate")
    p.add_argument(
        "--estimator",
        choices=METHODS,
        default=d.estimator,
        help=f"how OST's scores are computed (default: {d.estimator}, audited against exact)",
    )
    p.add_argument("--cache", type=Path, default=None, help="base checkpoint cache folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from stepsift.bench.runner import BenchConfig
    from stepsift.bench.runner import run_bench as bench

    bench(
        BenchConfig(
            out=args.out,
            methods=args.methods,
            fractions=args.fractions,
            random_fractions=args.random_fractions,
            baseline_fraction=args.baseline_fraction,
            protocols=args.protocols,
            seeds=args.seeds,
            noise_rates=args.noise,
            noise_mix=args.noise_mix,
            target=args.target,
            target_share=args.target_share,
            other_families=args.families,
            proxy_start=args.proxy_start,
            anchor_labels=args.anchor_labels,
            audit=args.audit,
            pool_size=args.pool,
            n_test=args.test,
            batch_size=args.batch_size,
            epochs=args.epochs,
            lr=args.lr,
            estimator=args.estimator,
            cache_dir=args.cache,
            progress=not args.quiet,
        )
    )
    return 0
