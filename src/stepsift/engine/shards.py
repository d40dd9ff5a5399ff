"""Splitting one scoring run over N processes that a scheduler starts (Slurm arrays,
`torchrun`), and merging their outputs.

Shard i of N scores every N-th batch of the run's fixed batch order (round-robin, so each
shard gets a like mix of short and long records) into `OUT.shard-i-of-N.parquet`, with
the usual resumable parts beside it. All shards use one proxy: the first to finish its
warm-up publishes it beside the output (`OUT.proxy/`, by an atomic rename) and every
shard, the publisher included, scores with the published one. `merge` checks that every
shard of one run is there, with nothing missing or doubled, and writes `OUT`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from stepsift.engine.audit import merge_audits
from stepsift.engine.store import (
    ScoreRows,
    columns_of,
    read_scores,
    read_settings,
    write_scores,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based, as SLURM_ARRAY_TASK_ID and torchrun's RANK count
    count: int

    @classmethod
    def parse(cls, spec: str) -> Shard:
        """'i/N' with 0 <= i < N."""
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
        if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
            raise ValueError(f"--shard {spec!r}: expected i/N with 0 <= i < N, e.g. 0/4")
        return cls(int(m.group(1)), int(m.group(2)))

    def output(self, out: Path) -> Path:
        return shard_path(Path(out), self.index, self.count)

    def take(self, batches: Sequence[T]) -> list[T]:
        """This shard's batches: every count-th one, starting at index."""
        return list(batches[self.index :: self.count])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_path(out: Path, index: int, count: int) -> Path:
    return out.with_name(f"{out.stem}.shard-{index}-of-{count}{out.suffix}")


def shared_proxy_dir(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".proxy")


def publish_or_adopt(staging: Path, published: Path, load: Callable[[Path], T]) -> tuple[T, bool]:
    """Publish the proxy saved in `staging` as `published`, unless another shard already
    did; either way load and return the published one (and whether this call published).
    The rename is atomic: a shard never sees a half-written proxy."""
    try:
        os.rename(staging, published)  # fails if `published` exists and is not empty
        return load(published), True
    except OSError:
        if not published.is_dir():
            raise
        shutil.rmtree(staging, ignore_errors=True)
        return load(published), False


def merge(out: Path) -> tuple[int, int]:
    """Combine the shard files of the run whose output is `out`; return (rows, shards).

    Refuses, naming what is wrong, when a shard is missing or unfinished, shards come from
    runs with different inputs or settings, an id appears twice, or a shard holds fewer
    rows than it was given.
    """
    out = Path(out)
    pattern = re.compile(re.escape(out.stem) + r"\.shard-(\d+)-of-(\d+)" + re.escape(out.suffix))
    found = {}
    for path in out.parent.glob(f"{out.stem}.shard-*-of-*{out.suffix}"):
        m = pattern.fullmatch(path.name)
        if m:
            found[(int(m.group(1)), int(m.group(2)))] = path
    counts = {n for _, n in found}
    if not found:
        raise FileNotFoundError(f"{out}: no shard files {out.stem}.shard-I-of-N{out.suffix} here")
    if len(counts) > 1:
        raise ValueError(f"{out}: shard files of different splits are here (N = {sorted(counts)})")
    n = counts.pop()
    missing = [i for i in range(n) if (i, n) not in found]
    if missing:
        raise ValueError(
            f"{out}: shard(s) {', '.join(map(str, missing))} of {n} have no finished file "
            f"(e.g. {shard_path(out, missing[0], n).name}); run them (again) to finish"
        )
    rows, settings, seen, audits, stages = ScoreRows(), None, {}, [], {}
    for i in range(n):
        path = found[(i, n)]
        recorded = read_settings(path)
        if recorded.get("audit"):
            audits.append(recorded["audit"])
        for stage, seconds in recorded.get("stage_seconds", {}).items():
            stages[stage] = round(stages.get(stage, 0.0) + seconds, 2)
        run = recorded.get("run_fingerprint")
        if settings is None:
            settings = recorded
        elif run != settings.get("run_fingerprint"):
            raise ValueError(f"{path}: made by a run with other inputs or settings than shard 0")
        t = columns_of(read_scores(path))  # optional vector columns stay Arrow arrays
        if len(t["id"]) != recorded.get("shard_candidates"):
            raise ValueError(
                f"{path}: holds {len(t['id'])} scores, but the shard was given "
                f"{recorded.get('shard_candidates')}"
            )
        for rid in t["id"]:
            if rid in seen:
                raise ValueError(f"{path}: id {rid!r} is also in shard {seen[rid]}")
            seen[rid] = i
        rows.add(t)
    assert settings is not None
    if len(rows) != settings.get("pool_candidates"):
        raise ValueError(
            f"{out}: the shards hold {len(rows)} scores, the pool has "
            f"{settings.get('pool_candidates')} scorable candidates"
        )
    merged = {k: v for k, v in settings.items() if k not in ("shard", "shard_candidates")}
    merged["merged_shards"] = n
    merged["stage_seconds"] = stages  # summed over the shards: machine time, not wall time
    if audits:  # each shard audited its part of one sample: compare them together
        merged["audit"] = merge_audits(audits, rows)
    write_scores(rows, out, settings["harmful_below"], merged)
    return len(rows), n
