"""The Python API the README shows does what the command line does: `stepsift.score`,
`stepsift.select` and `stepsift.report` are the functions the CLI calls, and the same
inputs and settings give the same files either way."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import stepsift
from stepsift.bench.generate import write_benchmark
from stepsift.cli import build_parser, main
from stepsift.cli.score import settings_from

FAST = ["--warmup-min-samples", "8", "--warmup-min-steps", "3", "--batch-size", "4",
        "--quiet", "--seed", "0", "--audit", "4"]  # fmt: skip


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    return write_benchmark(tmp_path_factory.mktemp("api"), n_pool=16, n_anchors=6, n_test=1)


def utilities(path: Path) -> dict[str, float]:
    t = pq.read_table(path).to_pydict()
    return dict(zip(t["id"], t["utility"], strict=True))


def test_the_api_and_the_cli_make_the_same_scores_subset_and_report(bench, tmp_path) -> None:
    argv = ["score", str(bench.pool), "--anchors", str(bench.anchors)]
    cli_scores = tmp_path / "cli.parquet"
    assert main([*argv, "--out", str(cli_scores), *FAST]) == 0
    # the README's example, with the settings the CLI made from the same flags
    settings = settings_from(build_parser().parse_args([*argv, "--out", "x", *FAST]))
    assert settings.method == "curvature" and settings.audit == 4  # the default, audited
    api_scores = tmp_path / "api.parquet"
    summary = stepsift.score(bench.pool, bench.anchors, api_scores, settings)
    assert summary.scored == 16 and summary.audit["n"] == 4
    assert utilities(api_scores) == utilities(cli_scores)

    api_subset, cli_subset = tmp_path / "api.jsonl", tmp_path / "cli.jsonl"
    selection = stepsift.select(bench.pool, api_scores, "25%", api_subset)
    keep = ["select", str(bench.pool), "--scores", str(cli_scores), "--keep", "25%"]
    assert main([*keep, "--out", str(cli_subset)]) == 0
    assert api_subset.read_bytes() == cli_subset.read_bytes()
    pool_order = [json.loads(line)["id"] for line in bench.pool.read_text().splitlines()]
    written = [json.loads(line)["id"] for line in api_subset.read_text().splitlines()]
    assert written == sorted(selection.kept_ids, key=pool_order.index)  # in the input's order

    files = stepsift.report(api_scores, bench.pool, tmp_path / "report")
    assert (tmp_path / "report" / "report.html").is_file()
    assert any("report.html" in line for line in files.lines())
