"""The bench's issue-7 pieces: a near-duplicate-heavy pool, anchors with groups, harmful-flag
precision/recall before and after calibration, and their lines in results.md."""

from __future__ import annotations

import json

import numpy as np
import pytest
from score_files import write_score_file

from stepsift.bench.metrics import flag_quality
from stepsift.bench.pools import make_pool
from stepsift.bench.report import diagnostics_lines
from stepsift.bench.runner import BenchConfig, anchor_diagnostics
from stepsift.cli.list_args import noise_mix


def test_noise_mix_makes_a_near_duplicate_heavy_pool() -> None:
    mix = noise_mix("near_duplicate=8,misread=1,arithmetic=1")
    assert mix == {"near_duplicate": 8.0, "misread": 1.0, "arithmetic": 1.0}
    pool = make_pool(400, 0.5, mix, seed=0)
    tags = [s.meta["noise"] for s in pool]
    assert tags.count("near_duplicate") > 0.6 * 200  # 8/10 of the noisy half, about 160
    assert set(tags) == {"clean", "near_duplicate", "misread", "arithmetic"}
    with pytest.raises(Exception, match="NAME=WEIGHT"):
        noise_mix("near_duplicate")


def test_plan_has_ost_auto_once_and_ost_diverse_at_the_fractions(tmp_path) -> None:
    cfg = BenchConfig(out=tmp_path, methods=("ost", "ost_auto", "ost_diverse"),
                      fractions=(0.2, 0.5))  # fmt: skip
    assert cfg.plan() == [("ost", 0.2), ("ost", 0.5), ("ost_auto", None),
                          ("ost_diverse", 0.2), ("ost_diverse", 0.5)]  # fmt: skip


def test_anchor_groups_are_written_for_anchors_only(tmp_path) -> None:
    from stepsift.bench.generate import write_benchmark

    paths = write_benchmark(tmp_path, 6, n_anchors=5, n_test=3)
    anchors = [json.loads(line) for line in paths.anchors.read_text().splitlines()]
    assert all(a["group"] == a["meta"]["task"] for a in anchors)
    assert all("group" not in json.loads(x) for x in paths.pool.read_text().splitlines())


def test_flag_quality_and_diagnostics_from_a_score_file(tmp_path) -> None:
    rng = np.random.default_rng(0)
    n = 400
    wrong = rng.random(n) < 0.3
    true = np.where(wrong, -0.2, 0.0)
    folds = true[:, None] + rng.normal(size=(n, 10)) * 0.3
    write_score_file(tmp_path / "s.parquet", folds.mean(axis=1), fold_utility=folds)
    noise = ["misread" if w else "clean" for w in wrong]
    det = anchor_diagnostics(tmp_path / "s.parquet", noise)
    before, after = det["harmful_negative"], det["harmful_calibrated"]
    assert before == flag_quality(folds.mean(axis=1) < 0, noise)
    assert after["precision"] > before["precision"] and after["flagged"] < before["flagged"]
    assert 0 < after["recall"] <= before["recall"] <= 1
    assert det["reliability"]["n_anchors"] == 100
    text = "\n".join(diagnostics_lines(det))
    assert "| utility < 0 (before calibration) |" in text and "Anchor reliability" in text
    assert f"{after['precision']:.1%}" in text


def test_tiny_bench_with_ost_auto_and_ost_diverse(tmp_path) -> None:
    """End to end at CI size: the new methods train, and results.md carries the harmful
    flags before/after calibration, the anchor reliability and the per-group utilities."""
    from test_bench_run import tiny_config

    from stepsift.bench.runner import run_bench

    # exact: the fold and group columns the calibrated flags need (curvature writes none)
    cfg = tiny_config(tmp_path / "run", methods=("ost", "ost_auto", "ost_diverse"),
                      fractions=(0.2,), protocols=("B",), seeds=(0,),
                      estimator="exact")  # fmt: skip
    rows = run_bench(cfg)
    assert sorted(r["method"] for r in rows) == ["ost", "ost_auto", "ost_diverse"]
    by = {r["method"]: r for r in rows}
    assert by["ost_diverse"]["train_samples"] == by["ost"]["train_samples"] == 8
    assert 0 < by["ost_auto"]["train_samples"] <= 40
    assert all(0 <= r["redundant_share"] <= 1 for r in rows)
    md = (cfg.out / "results.md").read_text()
    assert "| ost_auto (auto budget) |" in md and "| ost_diverse top-20% |" in md
    assert "| utility < 0 (before calibration) |" in md
    assert "| calibrated: below 0 beyond chance, one-sided 0.05 |" in md
    assert "Anchor reliability (6 anchors" in md
    assert "Mean utility towards each anchor group" in md and "| clean |" in md
