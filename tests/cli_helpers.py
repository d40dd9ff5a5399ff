"""Running the `stepsift` command in-process, for tests."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

from stepsift.cli import main


@dataclass
class Run:
    rc: int
    out: str
    err: str


def run_cli(*argv: str | Path) -> Run:
    """`stepsift ARGV` in-process, capturing what it prints."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return Run(rc, out.getvalue(), err.getvalue())


# `score` flags that make a run on a tiny generated bench take seconds
FAST_SCORE = [
    "--warmup-min-samples", "8", "--warmup-min-steps", "3", "--batch-size", "4",
    "--flush-seconds", "0", "--quiet", "--seed", "0",
]  # fmt: skip


def score_bench(bench, out: str | Path, *extra: str) -> Run:
    """`stepsift score` of a generated bench's pool against its anchors, fast."""
    return run_cli(
        "score", str(bench.pool), "--anchors", str(bench.anchors), "--out", str(out),
        *FAST_SCORE, *extra,
    )  # fmt: skip
