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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import spearmanr

from stepsift.engine.store import PartStore, ScoreRows

AUDIT_MIN = 128  # candidates, or AUDIT_SHARE of the pool when that is more
AUDIT_SHARE = 0.01
AUDIT_WARN_BELOW = 0.9  # Spearman ρ under which the run warns that its ranking is not exact's
AUDIT_FRACTION = 0.2  # the top share whose overlap is reported
AUDIT_METHOD = "exact"


def audit_size(requested: int | None, n_pool: int) -> int:
    """How many candidates to audit: `requested` (0 turns the audit off), by default the
    larger of AUDIT_MIN and AUDIT_SHARE of the pool; never more than the pool."""
    if requested is not None and requested < 0:
        raise ValueError(f"--audit must be >= 0, got {requested}")
    n = max(AUDIT_MIN, math.ceil(AUDIT_SHARE * n_pool)) if requested is None else requested
    return min(n, n_pool)


def audit_positions(n_pool: int, n: int, seed: int) -> np.ndarray:
    """`n` positions of the pool index drawn uniformly without replacement, sorted."""
    rng = np.random.default_rng([seed, 0xA0D17])  # its own stream: not the warm-up's draw
    return np.sort(rng.choice(n_pool, size=n, replace=False))


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
) -> tuple[ScoreRows, float]:
    """Score the audit batches `todo` (pool positions not yet in `store`'s parts) with
    `score_batch`, keeping finished batches in parts as they come; return every audited
    row (earlier runs' included) and the seconds this call spent."""
    start = time.perf_counter()
    pending, last_flush = ScoreRows(), time.monotonic()
    try:
        for batch in todo:
            rows = score_batch(batch)
            pending.add(vars(rows))
            progress(len(rows))
            if time.monotonic() - last_flush >= flush_seconds:
                store.write_part(pending)
                pending, last_flush = ScoreRows(), time.monotonic()
    finally:  # an interrupt keeps every finished batch
        store.write_part(pending)
    return store.done(), time.perf_counter() - start
