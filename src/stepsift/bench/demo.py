"""`stepsift demo`: the quick version of `stepsift bench`, and the README's quick start.

One seed, protocol B (the same-compute comparison), the main methods: full-SFT, random 20%,
stepsift's default selection at 20% and 50% (coverage of the anchor groups by one-step
utility), the plain loss filter at 20% and 50%, and the judge, on the bench's v2
regime at 2,000 candidates: a mixed pool of task families (the target family 30%), 40%
generator errors of which half systematic, a proxy pre-trained on a generic corpus of the
world. It generates the data, scores it through the public `score` (the fast estimator,
audited against exact on 200 random candidates), writes the default 20% in the pool's own
format through the public `select` (what a user hands to their trainer), then fine-tunes the
benchmark's target on each subset and prints the table and the noise-detection figures.
Sized to finish in under 10 minutes on a 2-core CPU, including the one-off pre-training of
the target's base and of the proxy.
"""

from __future__ import annotations

from pathlib import Path

from stepsift.bench.judge import JudgeSettings
from stepsift.bench.problems import DEFAULT_NOISE_RATE
from stepsift.bench.runner import BenchConfig, benchmark_data, run_bench
from stepsift.select.keep import parse_keep
from stepsift.select.topk import select

DEMO_METHODS = ("full", "random", "stepsift", "loss_filter", "judge")


def demo_config(
    out: Path = Path("runs/demo"),
    pool_size: int = 2000,
    noise_rate: float = DEFAULT_NOISE_RATE,
    seed: int = 0,
    progress: bool = True,
    **overrides,
) -> BenchConfig:
    """The demo's bench settings; `overrides` replace any other BenchConfig field."""
    settings = {
        "methods": DEMO_METHODS,
        "fractions": (0.2, 0.5),
        "random_fractions": (0.2,),
        "protocols": ("B",),
        "seeds": (seed,),
        "noise_rates": (noise_rate,),
        "pool_size": pool_size,
        "data_seed": seed,
        "judge": JudgeSettings(n_train=pool_size),
        "n_test": 500,  # the bench's 1,000 cost the demo ~30 s more
        "progress": progress,
        **overrides,
    }
    return BenchConfig(out=Path(out), **settings)


def run_demo(cfg: BenchConfig) -> list[dict]:
    """Run the demo's bench, and write the default 20% as a user would get it."""
    rows = run_bench(cfg)
    for noise in cfg.noise_rates:
        paths = benchmark_data(cfg, noise)
        subset = paths.root.parent / "subset-20.jsonl"
        summary = select(
            paths.pool, paths.root.parent / "scores.parquet", parse_keep("20%"), subset
        )
        print(
            "\n".join(summary.lines()) + f"\nwrote {subset} (the pool's format, ready to train on)"
        )
        # the page a user would look at before training: `stepsift report` on the same scores
        from stepsift.report import write_report

        report = write_report(
            paths.root.parent / "scores.parquet", paths.pool, paths.root.parent / "report"
        )
        print("\n".join(report.lines()))
    return rows
