"""The `stepsift` command. Thin: each command's module parses its arguments and calls the
library (the same functions the Python API exposes: `stepsift.score`, `stepsift.select`,
`stepsift.report`); this one assembles them and turns errors into exit codes."""

from __future__ import annotations

import argparse
import sys

from stepsift.cli import bench, demo, merge, report, score, select
from stepsift.data import DataValidationError

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stepsift", description="Pick the training data worth training on (one-step utility)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (score, select, merge, demo, bench, report):
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except DataValidationError as e:
        print(f"stepsift {args.command}: invalid input\n{e}", file=sys.stderr)
        if args.command == "score" and not getattr(args, "skip_invalid", False):
            print("(pass --skip-invalid to go on without these records)", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, ValueError, FloatingPointError) as e:
        print(f"stepsift {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"stepsift {args.command}: interrupted", file=sys.stderr)
        return 130
