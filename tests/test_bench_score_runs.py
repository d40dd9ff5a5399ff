"""The bench's estimator audit (bench/score_runs.py): the sample it scores exactly and the
figures it prints must be what they say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stepsift.bench.score_runs import audit_ids, top_overlap, write_audit_pool


def test_top_overlap_counts_shared_top_fifth() -> None:
    a = np.arange(10, dtype=float)  # top 2: indices 9, 8
    assert top_overlap(a, a) == 1.0
    assert top_overlap(a, -a) == 0.0
    b = a.copy()
    b[8], b[0] = -1.0, 100.0  # top 2 of b: 0, 9
    assert top_overlap(a, b) == 0.5
    assert top_overlap(np.array([1.0, 2.0]), np.array([2.0, 1.0])) == 0.0  # k floors at 1


def test_audit_sample_is_seeded_distinct_and_verbatim(tmp_path: Path) -> None:
    pool = tmp_path / "pool.jsonl"
    lines = [json.dumps({"id": f"r{i}", "x": "é" * (i % 3)}, ensure_ascii=False) for i in range(50)]
    pool.write_text("\n".join(lines) + "\n", encoding="utf-8")
    picks = audit_ids(pool, 12, seed=0)
    assert picks == audit_ids(pool, 12, seed=0)
    assert picks != audit_ids(pool, 12, seed=1)
    assert len(set(picks)) == 12 and picks == sorted(picks) and max(picks) < 50
    assert len(audit_ids(pool, 500, seed=0)) == 50  # never more than the pool
    out = tmp_path / "audit-pool.jsonl"
    write_audit_pool(pool, out, picks)
    assert out.read_text(encoding="utf-8").splitlines() == [lines[i] for i in picks]
