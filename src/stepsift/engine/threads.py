"""How many threads torch may use in one scoring process.

torch's default is every core of the machine, whatever else runs on it. Several stepsift
processes on one machine (shards, Ray actors, a user's two jobs) then each start that many
threads and fight over the cores: three scoring jobs on 2 cores ran about 10x slower
each, not 3x (issue 31). So a process takes the CPUs it was given: `--threads N`, or a Ray
actor's `num_cpus`, or else no more than the CPUs the operating system lets it run on (a
scheduler's or container's CPU set, `taskset`) and no more than torch already uses (its
default, OMP_NUM_THREADS, or a caller's own `torch.set_num_threads`). A run sets them for
its own duration and gives the caller's setting back after it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def threads_for(
    requested: int | None = None, cpus: float | None = None, current: int | None = None
) -> int:
    """`requested` threads; else a share of `cpus` (a Ray actor's); else torch's `current`
    count (default: torch's own) capped at the CPUs this process may run on."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be at least 1, got {requested}")
        return requested
    if cpus is not None:
        return max(1, math.floor(cpus))
    if current is None:
        current = torch.get_num_threads()
    return max(1, min(current, available_cpus()))


def use_threads(requested: int | None = None, cpus: float | None = None) -> int:
    """Set torch's intra-op threads for this process; returns how many."""
    n = threads_for(requested, cpus)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@contextmanager
def run_threads(requested: int | None = None) -> Iterator[int]:
    """torch's threads for one run (`threads_for`), the caller's restored after it."""
    before = torch.get_num_threads()
    try:
        yield use_threads(requested)
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def busy_note(threads: int) -> str | None:
    """A note when the machine is already busy (its 1-minute load average at least the
    CPUs this process may use): another torch job there makes both many times slower
    unless each takes its share (two runs side by side on 2 cores: 113 s each with 2
    threads, 34-41 s with one; 29 s alone; benchmarks/RESULTS.md)."""
    if not hasattr(os, "getloadavg"):
        return None
    load = os.getloadavg()[0]
    cpus = available_cpus()
    if load < cpus - 0.5 or threads == 1:
        return None
    return (
        f"note: this machine's load is {load:.1f} on {cpus} CPUs and this run takes {threads} "
        "torch threads; if other jobs are running, give each its share (--threads)"
    )
