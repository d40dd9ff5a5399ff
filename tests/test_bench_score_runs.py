"""The bench's estimator audit (bench/score_runs.py) is the one its OST score run wrote into
the score file (engine/audit.py, tested in tests/test_audit.py), read back as results.md
prints it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepsift.bench.score_runs import ScoreRecipe, audit
from stepsift.proxy.warmup import WarmupSettings
from tests.score_files import write_score_file


def recipe(folder: Path) -> ScoreRecipe:
    return ScoreRecipe(
        pool=folder / "pool.jsonl", anchors=folder / "anchors.jsonl", folder=folder,
        warmup=WarmupSettings(), proxy_init=None, seed=0, progress=False,
    )  # fmt: skip


def test_the_bench_reports_the_score_files_own_audit(tmp_path: Path) -> None:
    recorded = {"method": "exact", "n": 128, "spearman": 0.912, "top20_overlap": 0.77,
                "seconds": 31.5, "ids": ["r00000"], "exact_utility": [0.1]}  # fmt: skip
    settings = {"method": "curvature", "audit": recorded}
    write_score_file(tmp_path / "scores.parquet", np.zeros(3), settings=settings)
    got = audit(recipe(tmp_path), "curvature")
    assert got == {"estimator": "curvature", "n": 128, "spearman": 0.912,
                   "top20_overlap": 0.77, "exact_seconds": 31.5}  # fmt: skip


def test_a_score_file_without_an_audit_reports_none(tmp_path: Path) -> None:
    write_score_file(tmp_path / "scores.parquet", np.zeros(3), settings={"method": "curvature"})
    assert audit(recipe(tmp_path), "curvature") is None
