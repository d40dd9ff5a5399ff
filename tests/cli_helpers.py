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
