"""Where a `score` run's time goes: seconds per stage, printed in its summary and kept in
the score file's metadata (`stage_seconds`).

A user waits for the whole command, and on a small pool or a real model the fixed costs
(warm-up, the anchors' set-up, the audit) can outweigh scoring the candidates; naming
each stage is how a run shows which one it is.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

# the stages of a run, in the order they happen (a stage a run skips is absent)
STAGES = ("load", "warm-up", "anchor groups", "anchor set-up", "scoring", "audit", "write")


class StageClock:
    """Seconds spent in each named stage; a stage entered twice adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def take(self, name: str, seconds: float) -> None:
        """Move `seconds` out of stage `name` (time a nested stage measured itself)."""
        if name in self.seconds:
            self.seconds[name] = max(0.0, self.seconds[name] - seconds)

    def record(self) -> dict[str, float]:
        """The stages in run order, rounded for the score file."""
        order = {name: i for i, name in enumerate(STAGES)}
        names = sorted(self.seconds, key=lambda n: order.get(n, len(order)))
        return {n: round(self.seconds[n], 2) for n in names}


def stage_line(seconds: dict[str, float], total: float) -> str:
    """`stages: load 1.2s (2%), warm-up ...` for the run's summary."""
    parts = [
        f"{name} {s:.1f}s ({100 * s / total:.0f}%)" if total > 0 else f"{name} {s:.1f}s"
        for name, s in seconds.items()
    ]
    return "stages: " + ", ".join(parts)
