"""A scoring run killed part-way resumes to the same scores, with no id missing or doubled.

The runs are real `stepsift score` processes killed with SIGKILL (no chance to clean up),
on a generated pool, with scores flushed to disk after every batch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from stepsift.bench.generate import BenchmarkPaths, write_benchmark
from stepsift.cli import main

FAST = [
    "--warmup-min-samples", "8", "--warmup-min-steps", "3", "--batch-size", "4",
    "--method", "exact",  # the engine under test, not the default estimator
    "--flush-seconds", "0", "--quiet", "--seed", "0",
]  # fmt: skip
# the optional columns, all made by default (the bench's anchors carry a `group` field)
VECTORS = ("fold_utility", "group_utility", "sketch")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> BenchmarkPaths:
    # 40 anchors make a batch take ~0.5 s, so the polling below kills between parts reliably
    return write_benchmark(tmp_path_factory.mktemp("bench"), n_pool=48, n_anchors=40, n_test=1)


def score_argv(bench: BenchmarkPaths, out: Path, *extra: str) -> list[str]:
    return ["score", str(bench.pool), "--anchors", str(bench.anchors), "--out", str(out),
            *FAST, *extra]  # fmt: skip


def start_scoring(bench: BenchmarkPaths, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "stepsift.cli", *score_argv(bench, out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def parts(out: Path) -> list[Path]:
    return sorted(out.with_name(out.name + ".parts").glob("part-*.parquet"))


def kill_after_parts(proc: subprocess.Popen, out: Path, n_parts: int, timeout: float = 240) -> int:
    """SIGKILL the run once at least `n_parts` parts are on disk; return how many there were."""
    deadline = time.monotonic() + timeout
    while len(parts(out)) < n_parts:
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the run wrote no parts in time"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return len(parts(out))


def table(path: Path) -> dict[str, np.ndarray]:
    t = pq.read_table(path).to_pydict()
    order = np.argsort(t["id"])
    return {k: np.asarray(v)[order] for k, v in t.items()}


@pytest.fixture(scope="module")
def uninterrupted(bench: BenchmarkPaths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "scores.parquet"
    assert main(score_argv(bench, out)) == 0
    return out


def test_killed_twice_resumes_to_the_uninterrupted_result(bench, uninterrupted, tmp_path) -> None:
    """Two SIGKILLs at different points, then a rerun: identical scores, every id once."""
    out = tmp_path / "scores.parquet"
    first = kill_after_parts(start_scoring(bench, out), out, 2)
    second = kill_after_parts(start_scoring(bench, out), out, first + 3)
    assert first < second < 12, "both kills must land part-way through the 12 batches"
    assert not out.exists()
    assert main(score_argv(bench, out)) == 0
    resumed, whole = table(out), table(uninterrupted)
    assert len(set(resumed["id"])) == len(resumed["id"]) == 48
    assert list(resumed["id"]) == list(whole["id"])
    np.testing.assert_allclose(resumed["utility"], whole["utility"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(resumed["loss"], whole["loss"], rtol=1e-6, atol=1e-9)
    for column in VECTORS:  # the vector columns survive the kills and the parts
        assert whole[column].ndim == 2 and len(whole[column]) == 48, column
        np.testing.assert_allclose(resumed[column], whole[column], rtol=1e-6, atol=1e-9)
    assert not out.with_name(out.name + ".parts").exists()  # parts are merged and removed


def test_resume_skips_what_was_done(bench, tmp_path, capsys) -> None:
    """The rerun after a kill reports the already-scored candidates and does not redo them."""
    out = tmp_path / "scores.parquet"
    done = kill_after_parts(start_scoring(bench, out), out, 3)
    capsys.readouterr()
    assert main(score_argv(bench, out)) == 0
    printed = capsys.readouterr().out
    already = int(printed.split("resumed: ")[1].split()[0])
    assert already == done * 4  # whole batches of 4, from the parts on disk


def test_finished_run_is_not_recomputed(bench, uninterrupted, capsys) -> None:
    """Rerunning a finished command leaves the file as it is and says all were done."""
    before = uninterrupted.stat().st_mtime_ns
    capsys.readouterr()
    assert main(score_argv(bench, uninterrupted)) == 0
    assert "resumed: 48" in capsys.readouterr().out
    assert uninterrupted.stat().st_mtime_ns == before


def test_other_settings_into_the_same_output_are_refused(bench, uninterrupted, capsys) -> None:
    """A finished score file made with other settings is not silently replaced."""
    assert main(score_argv(bench, uninterrupted, "--lr", "0.5")) == 2
    assert "other inputs or settings" in capsys.readouterr().err
    assert main(score_argv(bench, uninterrupted, "--lr", "0.5", "--overwrite")) == 0
    assert pq.read_table(uninterrupted).num_rows == 48


def test_unfinished_run_with_other_settings_is_refused(bench, tmp_path, capsys) -> None:
    """An unfinished run's parts are never mixed with scores made under other settings."""
    out = tmp_path / "scores.parquet"
    kill_after_parts(start_scoring(bench, out), out, 1)
    assert main(score_argv(bench, out, "--optimizer", "sgd")) == 2
    assert "unfinished run with other inputs or settings" in capsys.readouterr().err
    assert main(score_argv(bench, out, "--optimizer", "sgd", "--overwrite")) == 0
    assert pq.read_table(out).num_rows == 48
