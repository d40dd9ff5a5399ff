"""`stepsift score`: its arguments, and the `ScoreSettings` they make for `stepsift.score`."""

from __future__ import annotations

import argparse
from pathlib import Path

from stepsift.cli.estimator_options import add_estimator_arguments
from stepsift.cli.hf_options import add_hf_arguments, hf_options_from
from stepsift.cli.run_options import add_run_arguments
from stepsift.engine.scoring import score
from stepsift.engine.settings import ScoreSettings
from stepsift.proxy.warmup import WarmupSettings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score every candidate's one-step utility")
    p.add_argument(
        "candidates",
        type=Path,
        help="candidate pool: JSONL or a JSON array, or Parquet/Arrow (a .parquet file, a "
        "folder of shards, a quoted glob, or a datasets save_to_disk folder)",
    )
    p.add_argument("--anchors", type=Path, required=True, help="trusted anchor set (same formats)")
    p.add_argument("--out", type=Path, required=True, help="score file to write (.parquet)")
    p.add_argument(
        "--proxy",
        default="builtin",
        help="'builtin' (tiny VLM, warmed up on the pool), a folder from --save-proxy, or a "
        "Hugging Face causal LM / image-text-to-text model: a local folder or a hub id",
    )
    p.add_argument(
        "--proxy-init",
        type=Path,
        default=None,
        help="with the built-in proxy: a saved proxy folder (a pre-trained checkpoint) whose "
        "weights it starts from instead of random ones; the warm-up on the pool still runs",
    )
    add_estimator_arguments(p)
    add_run_arguments(p)
    add_hf_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    summary = score(args.candidates, args.anchors, args.out, settings_from(args))
    print("\n".join(summary.lines()))
    return 0


def settings_from(args: argparse.Namespace) -> ScoreSettings:
    return ScoreSettings(
        proxy=args.proxy,
        proxy_init=args.proxy_init,
        hf=hf_options_from(args),
        method=args.method,
        params=args.params,
        less_dim=args.less_dim,
        exact_anchors=args.exact_anchors,
        forward_directions=args.forward_directions,
        streamed_sketch=args.streamed_sketch,
        label_draws=args.label_draws,
        grad_autocast=args.grad_autocast,
        audit=args.audit,
        anchor_folds=args.anchor_folds,
        anchor_group_field=args.anchor_group_field,
        anchor_groups=args.anchor_groups,
        sketch_dim=args.sketch_dim,
        optimizer=args.optimizer,
        lr=args.lr,
        warmup=WarmupSettings(
            fraction=args.warmup_fraction,
            min_samples=args.warmup_min_samples,
            min_steps=args.warmup_min_steps,
            lr=args.warmup_lr,
        ),
        batch_size=args.batch_size,
        seed=args.seed,
        image_root=args.image_root,
        skip_invalid=args.skip_invalid,
        harmful_below=args.harmful_below,
        save_proxy=args.save_proxy,
        dtype=args.dtype,
        progress=not args.quiet,
        overwrite=args.overwrite,
        flush_seconds=args.flush_seconds,
        shard=args.shard,
        engine=args.engine,
        ray_address=args.ray_address,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        threads=args.threads,
        gpus_per_worker=args.gpus_per_worker,
    )
