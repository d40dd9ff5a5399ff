"""`stepsift score --proxy HF_FOLDER` end to end: a LoRA warm-up on the pool, the warmed-up
proxy kept with the run, and an interrupted run resumed to the uninterrupted scores."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest

from stepsift.bench.generate import write_benchmark
from stepsift.cli import main
from stepsift.engine import scorer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_benchmark(tmp_path_factory.mktemp("data"), n_pool=12, n_anchors=4, n_test=1)


def argv(data, out, proxy):
    return [
        "score", str(data.pool), "--anchors", str(data.anchors), "--out", str(out),
        "--proxy", str(proxy), "--lora-rank", "4", "--params", "lora",
        "--warmup-fraction", "0.5", "--warmup-min-samples", "4", "--warmup-min-steps", "2",
        "--batch-size", "4", "--flush-seconds", "0", "--quiet", "--method", "exact",
    ]  # fmt: skip


def utilities(path):
    t = pq.read_table(path)
    return dict(zip(t.column("id").to_pylist(), t.column("utility").to_pylist(), strict=True))


def test_score_with_a_vlm_proxy_resumes_after_an_interrupt(data, hf_models, tmp_path, monkeypatch):
    proxy = hf_models["qwen2_vl"]
    whole = tmp_path / "whole.parquet"
    assert main(argv(data, whole, proxy)) == 0
    expected = utilities(whole)
    assert len(expected) == 12 and all(math.isfinite(u) for u in expected.values())
    assert len(set(expected.values())) > 1

    real = scorer.make_estimator

    def dies_on_third_batch(*args, **kwargs):
        estimator = real(*args, **kwargs)
        calls = []

        def call(batch):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return estimator(batch)

        call.base_anchor_loss = estimator.base_anchor_loss
        call.describe = estimator.describe
        return call

    resumed = tmp_path / "resumed.parquet"
    monkeypatch.setattr(scorer, "make_estimator", dies_on_third_batch)
    assert main(argv(data, resumed, proxy)) == 130  # as Ctrl-C exits
    monkeypatch.setattr(scorer, "make_estimator", real)
    assert not resumed.exists()
    assert main(argv(data, resumed, proxy)) == 0  # loads the warmed-up proxy it saved
    got = utilities(resumed)
    assert got.keys() == expected.keys()
    assert got == pytest.approx(expected, rel=1e-6)
