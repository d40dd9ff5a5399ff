"""`stepsift merge`: the shard files of a `score --shard` run into one score file."""

from __future__ import annotations

import argparse
from pathlib import Path

from stepsift.engine.shards import merge


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="combine the shard files of a `score --shard` run")
    p.add_argument("out", type=Path, help="the --out every shard was given")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rows, shards = merge(args.out)
    print(f"merged {shards} shards: {rows} candidates, each once -> {args.out}")
    return 0
