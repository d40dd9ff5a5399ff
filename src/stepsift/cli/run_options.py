"""`score`'s options for how a run goes: the warm-up, batches, input checks, output,
resuming, and where the work runs (shards, Ray)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stepsift.engine.settings import DTYPES, ScoreSettings
from stepsift.engine.shards import Shard
from stepsift.proxy.warmup import WarmupSettings


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    w = WarmupSettings()
    p.add_argument(
        "--warmup-fraction",
        type=float,
        default=w.fraction,
        help="fraction of the pool the proxy warms up on (0: no warm-up; a saved proxy never)",
    )
    p.add_argument(
        "--warmup-min-samples",
        type=int,
        default=w.min_samples,
        help="the warm-up's slice is at least this many records (default: 256 for the "
        "built-in proxy, which starts from scratch; 64 for a pretrained Hugging Face model)",
    )
    p.add_argument(
        "--warmup-min-steps",
        type=int,
        default=w.min_steps,
        help="the warm-up takes at least this many steps (default: 150 for the built-in "
        "proxy; none beyond one pass over its slice for a pretrained model)",
    )
    p.add_argument("--warmup-lr", type=float, default=w.lr)
    p.add_argument("--batch-size", type=int, default=16, help="candidates per batched step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--image-root",
        type=Path,
        default=None,
        help="resolve relative image paths here (default: each data file's folder)",
    )
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="go on past invalid candidates, writing them to OUT.rejected.jsonl",
    )
    p.add_argument(
        "--harmful-below",
        type=float,
        default=0.0,
        help="flag a candidate harmful when its utility is below this",
    )
    p.add_argument("--save-proxy", type=Path, default=None, help="save the warmed-up proxy here")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument(
        "--shard",
        type=Shard.parse,
        default=None,
        metavar="I/N",
        help="score only shard I (0-based) of N into OUT.shard-I-of-N.parquet, for N processes "
        "a scheduler starts; then `stepsift merge OUT`",
    )
    r = p.add_argument_group("distributed scoring (Ray)")
    r.add_argument(
        "--engine",
        choices=("local", "ray"),
        default=ScoreSettings.engine,
        help="score in this process, or as a Ray Data pipeline of --workers actors",
    )
    r.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: local)")
    r.add_argument("--workers", type=int, default=ScoreSettings.workers, help="Ray actors")
    r.add_argument("--cpus-per-worker", type=float, default=ScoreSettings.cpus_per_worker)
    r.add_argument("--gpus-per-worker", type=float, default=ScoreSettings.gpus_per_worker)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for this process (default: the CPUs it may run on). With "
        "several scoring processes on one machine (shards, two jobs) give each its share "
        "of the cores: more threads than cores slow every process down many times",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing score file or unfinished run made with other settings",
    )
    p.add_argument(
        "--flush-seconds",
        type=float,
        default=ScoreSettings.flush_seconds,
        help="write finished scores to disk at least this often (what a crash can cost)",
    )
