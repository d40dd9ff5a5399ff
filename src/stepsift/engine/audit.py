"""The self-audit of a fast estimator: a seeded random sample of the pool scored again with
`exact`, on the same warmed-up proxy and step, and compared with the run's own scores.

A fast estimator (curvature, first-order, LESS) is an approximation whose quality depends
on the model, the data and the step; the audit measures it on the user's own run instead
of on our benchmark. The score file's metadata then carries the sample size, Spearman ρ
and the overlap of the two top-20% sets, plus the audited ids and their exact utilities,
so a reader can recompute them. Audit scores are kept in parts like the main scores
(engine/store.py), so an interrupted audit resumes where it stopped.

The sample is drawn over the whole pool's index with the run's seed, so every shard of a
sharded run draws the same sample and audits the part of it in its own batches; merging
the shards pools their audits.

By default the audit is sized by time too (AUDIT_TIME_SHARE of the run, at least
AUDIT_FLOOR candidates): the sample is audited in its random order, so an audit cut
short is still a uniform sample. `--audit N` asks for exactly N.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from stepsift.engine.store import PartStore, ScoreRows

AUDIT_MIN = 128  # candidates, or AUDIT_SHARE of the pool when that is more
AUDIT_SHARE = 0.01
# By default the audit is sized by time as well: once AUDIT_FLOOR candidates are scored,
# it stops when it has taken AUDIT_TIME_SHARE of the time the run spent before it. On a
# real model `exact` costs a forward pass over every anchor per candidate (SmolLM2-135M,
# 64 anchors: 6.8 s), so 128 of them would outlast the rest of the run; 32 still measure
# ρ to about ±0.05 near 0.95 (the interval is recorded), enough to tell a faithful
# estimator from one under the 0.9 warning.
AUDIT_FLOOR = 32
AUDIT_TIME_SHARE = 0.2
AUDIT_WARN_BELOW = 0.9  # Spearman ρ under which the run warns that its ranking is not exact's
AUDIT_FRACTION = 0.2  # the top share whose overlap is reported
AUDIT_METHOD = "exact"


@dataclass(frozen=True)
class AuditBudget:
    """When a time-sized audit stops: after `floor` candidates, at `seconds`."""

    seconds: float
    floor: int = AUDIT_FLOOR

    def spent(self, audited: int, elapsed: float) -> bool:
        return audited >= self.floor and elapsed >= self.seconds

    @classmethod
    def share_of(cls, run_seconds: float) -> AuditBudget:
        return cls(seconds=AUDIT_TIME_SHARE * run_seconds)


def audit_size(requested: int | None, n_pool: int) -> int:
    """How many candidates to audit: `requested` (0 turns the audit off), by default the
    larger of AUDIT_MIN and AUDIT_SHARE of the pool; never more than the pool."""
    if requested is not None and requested < 0:
        raise ValueError(f"--audit must be >= 0, got {requested}")
    n = max(AUDIT_MIN, math.ceil(AUDIT_SHARE * n_pool)) if requested is None else requested
    return min(n, n_pool)


def audit_positions(n_pool: int, n: int, seed: int) -> np.ndarray:
    """`n` positions of the pool index drawn uniformly without replacement, in the random
    order they are audited in: an audit stopped by time keeps a random prefix."""
    rng = np.random.default_rng([seed, 0xA0D17])  # its own stream: not the warm-up's draw
    return rng.choice(n_pool, size=n, replace=False)


def spearman_interval(rho: float, n: int, z: float = 1.96) -> list[float]:
    """A 95% interval for Spearman's ρ from n pairs: Fisher's z with Bonett and Wright's
    (2000) standard error sqrt((1 + ρ²/2) / (n - 3)); [nan, nan] under 4 pairs."""
    if n < 4 or not math.isfinite(rho):
        return [float("nan"), float("nan")]
    centre = math.atanh(max(-0.999999, min(0.999999, rho)))
    half = z * math.sqrt((1 + rho * rho / 2) / (n - 3))
    return [round(math.tanh(centre - half), 4), round(math.tanh(centre + half), 4)]


def top_overlap(a: np.ndarray, b: np.ndarray, fraction: float = AUDIT_FRACTION) -> float:
    """|top-k of a ∩ top-k of b| / k, k = max(1, round(fraction * n))."""
    k = max(1, round(fraction * len(a)))
    top_a = set(np.argsort(-a, kind="stable")[:k].tolist())
    top_b = set(np.argsort(-b, kind="stable")[:k].tolist())
    return len(top_a & top_b) / k


def compare(ids: Sequence[str], exact: Sequence[float], scores: ScoreRows, **facts) -> dict:
    """The audit record: the run's scores of the audited ids against their exact ones."""
    by_id = dict(zip(scores.id, scores.utility, strict=True))
    ex = np.asarray(exact, dtype=float)
    est = np.asarray([by_id[i] for i in ids], dtype=float)
    rho = float(spearmanr(est, ex).statistic) if len(ex) > 2 else float("nan")
    return {
        "method": AUDIT_METHOD,
        "n": len(ex),
        "spearman": rho,
        "spearman_interval": spearman_interval(rho, len(ex)),
        f"top{round(AUDIT_FRACTION * 100)}_overlap": top_overlap(est, ex) if len(ex) else 0.0,
        **facts,
        "ids": list(ids),
        "exact_utility": [float(x) for x in ex],
    }


def merge_audits(audits: Sequence[dict], scores: ScoreRows) -> dict | None:
    """The audits of a run's shards as one (the shards' samples are disjoint parts of one
    sample), recomputed against the merged scores."""
    if not audits:
        return None
    ids = [i for a in audits for i in a["ids"]]
    exact = [x for a in audits for x in a["exact_utility"]]
    seconds = sum(a.get("seconds", 0.0) for a in audits)
    return compare(ids, exact, scores, seconds=seconds, sample=audits[0].get("sample"))


def score_audit(
    store: PartStore,
    todo: Sequence[np.ndarray],
    score_batch: Callable[[np.ndarray], ScoreRows],
    flush_seconds: float = 30.0,
    progress: Callable[[int], None] = lambda n: None,
    budget: AuditBudget | None = None,
) -> tuple[ScoreRows, float]:
    """Score the audit batches `todo` (pool positions not yet in `store`'s parts) with
    `score_batch`, keeping finished batches in parts as they come, until `budget` says
    stop (None: every batch); return every audited row (earlier runs' included) and the
    seconds this call spent."""
    start = time.perf_counter()
    pending, last_flush = ScoreRows(), time.monotonic()
    done = len(store.done())
    try:
        for batch in todo:
            if budget is not None and budget.spent(done, time.perf_counter() - start):
                break
            rows = score_batch(batch)
            done += len(rows)
            pending.add(vars(rows))
            progress(len(rows))
            if time.monotonic() - last_flush >= flush_seconds:
                store.write_part(pending)
                pending, last_flush = ScoreRows(), time.monotonic()
    finally:  # an interrupt keeps every finished batch
        store.write_part(pending)
    return store.done(), time.perf_counter() - start
