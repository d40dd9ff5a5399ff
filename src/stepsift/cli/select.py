"""`stepsift select`: its arguments, and the call of `stepsift.select`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stepsift.select.harmful import COVERAGE_MODES, HARMFUL_MODES, Policy
from stepsift.select.keep import parse_keep
from stepsift.select.topk import select


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("select", help="write the top candidates by utility, in the input's format")
    p.add_argument(
        "candidates",
        type=Path,
        help="the pool that was scored; Parquet/Arrow input is written as one --out *.parquet",
    )
    p.add_argument("--scores", type=Path, required=True)
    p.add_argument(
        "--keep",
        required=True,
        help="20%%, 0.2, a count such as 5000, a token budget (2M-tokens, 500k-tokens: "
        "supervised tokens from the score file), or auto (the knee of cumulative utility "
        "against tokens over the positive-utility candidates; select prints the cut and why)",
    )
    p.add_argument(
        "--diverse",
        action="store_true",
        help="set-wise greedy selection that leaves out near-duplicates of better candidates "
        "(their gradient sketches' similarity takes away their gain); needs the score "
        "file's `sketch` column",
    )
    p.add_argument(
        "--coverage",
        choices=COVERAGE_MODES,
        default="auto",
        help="auto (default): when the score file has utilities towards 2+ anchor groups "
        "(`score --anchor-group-field`), fill the budget by group in proportion to the "
        "anchors, each group's share by its own utility, so no part of the anchors' task "
        "starves; off: the plain top-k by utility (the paper's OST)",
    )
    p.add_argument(
        "--harmful",
        choices=HARMFUL_MODES,
        default="auto",
        help="which candidates are harmful: evidence (the step hurts the anchors beyond "
        "their noise AND the proxy's loss is an outlier among candidates of its kind, kinds "
        "found from the gradient sketches), calibrated (utility below 0 beyond the anchors' "
        "noise, from the fold_utility column), threshold (utility < the score run's "
        "--harmful-below), auto (evidence when the file has fold_utility, else the file's own "
        "harmful column)",
    )
    p.add_argument(
        "--harmful-level",
        type=float,
        default=0.05,
        help="one-sided significance level of calibrated harmful flags (default 0.05)",
    )
    p.add_argument(
        "--harmful-correction",
        choices=("none", "bh"),
        default="none",
        help="bh: control the false discovery rate of the calibrated flags over the whole "
        "pool (Benjamini-Hochberg) instead of each flag's level",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--drop-harmful", action="store_true", help="never keep a harmful candidate")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="ignore invalid candidate records (those `score --skip-invalid` rejected)",
    )
    p.add_argument(
        "--image-root",
        type=Path,
        default=None,
        help="as for score: where relative image paths resolve (images are re-validated)",
    )
    p.add_argument(
        "--order",
        choices=("input", "utility"),
        default="input",
        help="write kept records in the input's order or best first",
    )
    p.add_argument(
        "--llamafactory-info",
        metavar="NAME",
        default=None,
        help="also register the output for LLaMA-Factory: add or replace the entry NAME in "
        "dataset_info.json in the output's folder (other entries are kept), with formatting, "
        "columns and tags read from the selected records; train with `dataset: NAME` and "
        "`dataset_dir:` that folder. The output must be *.jsonl or *.json. Image paths are "
        "kept as written: LLaMA-Factory resolves relative ones against its media_dir "
        "(default: the dataset folder), so a warning says when that is not where stepsift "
        "found them. If LLaMA-Factory could not read the selection as one dataset (mixed "
        "formats, content parts, turns not in user/assistant pairs, images without <image> "
        "placeholders) or dataset_info.json is not valid JSON, nothing is written (exit 2)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = dict(
        drop_harmful=args.drop_harmful,
        skip_invalid=args.skip_invalid,
        order=args.order,
        image_root=args.image_root,
        policy=Policy(
            harmful=args.harmful,
            level=args.harmful_level,
            correction=args.harmful_correction,
            diverse=args.diverse,
            coverage=args.coverage,
        ),
    )
    keep = parse_keep(args.keep)
    info = None
    if args.llamafactory_info is None:
        selection = select(args.candidates, args.scores, keep, args.out, **options)
    else:
        from stepsift.select.llamafactory import select_with_dataset_info

        selection, info = select_with_dataset_info(
            args.candidates, args.scores, keep, args.out, args.llamafactory_info, **options
        )
    print("\n".join(selection.lines()))
    for warning in selection.warnings:
        print(f"stepsift select: warning: {warning}", file=sys.stderr)
    print(f"wrote {args.out}")
    if info is not None:
        for warning in info.warnings:
            print(f"stepsift select: warning: {warning}", file=sys.stderr)
        print(info.line())
    return 0
