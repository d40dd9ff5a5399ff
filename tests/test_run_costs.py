"""What a run costs and says of it (issue 31): stage times in the summary and the score
file, the warm-up's floors by proxy, the audit sized by time, torch threads per process,
and the proxy's origin recorded even when it was loaded from a saved folder."""

from __future__ import annotations

import pytest

from stepsift.bench.generate import BenchmarkPaths, write_benchmark
from stepsift.engine.stages import STAGES
from stepsift.engine.store import read_settings
from stepsift.engine.threads import threads_for
from stepsift.proxy.warmup import WarmupSettings, warmup_size
from tests.cli_helpers import score_bench


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> BenchmarkPaths:
    return write_benchmark(tmp_path_factory.mktemp("bench"), n_pool=30, n_anchors=12, n_test=1)


score = score_bench


def test_a_run_says_where_its_time_went_and_where_its_proxy_came_from(bench, tmp_path):
    out, saved = tmp_path / "scores.parquet", tmp_path / "proxy"
    run = score(bench, out, "--save-proxy", str(saved), "--threads", "1")
    assert run.rc == 0, run.err
    recorded = read_settings(out)
    stages = recorded["stage_seconds"]
    # every stage this run had, each measured (the bench's anchors carry a group field, so
    # none are found); the file's own writing comes after its metadata
    assert set(stages) == {"load", "warm-up", "anchor set-up", "scoring", "audit"}
    assert all(s >= 0 for s in stages.values()) and stages["warm-up"] > 0
    assert recorded["threads"] == 1
    # the summary names them in the order they ran, "write" last
    line = next(x for x in run.out.splitlines() if x.startswith("stages: "))
    named = [part.split(" ")[0] for part in line.removeprefix("stages: ").split(", ")]
    assert named == [s.split(" ")[0] for s in STAGES if s in stages or s == "write"]
    # the default audit is sized by time as well as count, and says so
    sample = recorded["audit"]["sample"]
    assert sample["sized_by"] == "time" and sample["floor"] == 32
    assert recorded["audit"]["n"] == 30  # the floor is over the pool: all of it
    lo, hi = recorded["audit"]["spearman_interval"]
    assert lo <= recorded["audit"]["spearman"] <= hi
    warmup = recorded["proxy_origin"]["history"]["warmup"]
    assert warmup["steps"] >= 3 and recorded["proxy_origin"]["kind"] == "BuiltinProxy"

    # scored from the saved folder: no warm-up now, but the origin still names the one done
    again = tmp_path / "again.parquet"
    run = score(bench, again, "--proxy", str(saved), "--audit", "0", "--anchor-folds", "0")
    assert run.rc == 0, run.err
    recorded = read_settings(again)
    assert recorded["warmup"] is None and "warm-up" not in recorded["stage_seconds"]
    assert recorded["proxy_origin"]["history"]["warmup"] == warmup


def test_a_pretrained_proxy_warms_up_one_pass_and_the_builtin_keeps_its_floors():
    settings = WarmupSettings()
    # a 400-record pool: SmolLM2 used to loop 256 of them six times (150 steps of 16)
    assert warmup_size(400, settings) == (256, 150)
    assert warmup_size(400, settings, pretrained=True) == (64, 4)
    assert warmup_size(100_000, settings, pretrained=True) == (5_000, 313)  # 5%, one pass
    assert warmup_size(30, settings, pretrained=True) == (30, 2)  # a tiny pool, once
    explicit = WarmupSettings(min_samples=8, min_steps=3)  # given floors win either way
    assert warmup_size(400, explicit) == warmup_size(400, explicit, pretrained=True) == (20, 3)


def test_threads_come_from_the_request_the_actor_or_the_cpus_given(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert threads_for(current=16) == 3  # torch's all-cores default, cut to the CPU set
    assert threads_for(current=1) == 1  # a lower setting of the caller's (or OMP) stands
    assert threads_for(cpus=2.5) == 2 and threads_for(cpus=0.5) == 1  # a Ray actor's share
    assert threads_for(requested=5) == 5
    with pytest.raises(ValueError, match="--threads must be at least 1"):
        threads_for(requested=0)


def test_a_run_gives_the_callers_threads_back(bench, tmp_path):
    import torch

    before = torch.get_num_threads()
    run = score(bench, tmp_path / "s.parquet", "--threads", "3", "--audit", "0",
                "--anchor-folds", "0", "--anchor-groups", "off")  # fmt: skip
    assert run.rc == 0, run.err
    assert read_settings(tmp_path / "s.parquet")["threads"] == 3
    assert torch.get_num_threads() == before


def test_a_busy_machine_gets_a_note_unless_the_run_takes_one_thread(monkeypatch):
    from stepsift.engine.threads import busy_note

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr("os.getloadavg", lambda: (2.1, 0.0, 0.0))
    assert "load is 2.1 on 2 CPUs" in busy_note(2)
    assert busy_note(1) is None  # already its share
    monkeypatch.setattr("os.getloadavg", lambda: (0.3, 0.0, 0.0))
    assert busy_note(2) is None
