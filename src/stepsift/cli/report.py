"""`stepsift report`: an HTML page and plots about a score file (`stepsift.report`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from stepsift.report import DEFAULT_TOP, PAGE_NAME

    p = sub.add_parser(
        "report", help="write a self-contained HTML page (and PNG plots) about a score file"
    )
    p.add_argument("scores", type=Path, help="score file written by `stepsift score`")
    p.add_argument("--candidates", type=Path, required=True, help="the pool that was scored")
    p.add_argument("--out", type=Path, required=True, help=f"folder for {PAGE_NAME} and plots")
    p.add_argument(
        "--top",
        type=int,
        default=DEFAULT_TOP,
        help="how many of the most harmful and of the most useful samples to show",
    )
    p.add_argument(
        "--image-root",
        type=Path,
        default=None,
        help="as for score: where relative image paths resolve",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from stepsift.report import write_report

    files = write_report(args.scores, args.candidates, args.out, args.top, args.image_root)
    print("\n".join(files.lines()))
    return 0
