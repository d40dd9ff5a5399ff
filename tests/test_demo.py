"""`stepsift demo` end to end on a small pool: the figures it prints are computed for real."""

import json
from pathlib import Path

import pyarrow.parquet as pq

from stepsift.bench.demo import run_demo


def test_small_demo_runs_end_to_end(tmp_path: Path, capsys) -> None:
    """Generate, score, select 20%, measure: every candidate scored once, 20% kept, AUROCs
    in [0, 1] for both scorers, results written beside the table it prints."""
    result = run_demo(out=tmp_path, pool_size=40, noise_rate=0.4, seed=0, progress=False)
    printed = capsys.readouterr().out
    scores = pq.read_table(tmp_path / "scores.parquet").to_pydict()
    assert len(scores["id"]) == len(set(scores["id"])) == 40
    subset = (tmp_path / "subset.jsonl").read_text().splitlines()
    assert len(subset) == 8
    assert set(result.auroc) == {"OST one-step utility", "proxy loss (low = keep)"}
    assert all(0.0 <= v <= 1.0 for v in result.auroc.values())
    assert 0.0 < result.wrong_share_pool < 1.0
    assert "| OST one-step utility |" in printed and "kept 8 of 40" in printed
    saved = json.loads((tmp_path / "demo_result.json").read_text())
    assert saved["auroc"] == result.auroc
