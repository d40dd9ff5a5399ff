"""The self-audit: a fast method's run also scores a random sample with exact, records how
well the two rankings agree in the score file, resumes when interrupted, and pools the
shards' audits on merge."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

import stepsift.engine.scoring as scoring
from stepsift.bench.generate import BenchmarkPaths, write_benchmark
from stepsift.cli import main
from stepsift.engine.audit import audit_positions, audit_size, compare, top_overlap
from stepsift.engine.store import ScoreRows, read_scores, read_settings
from tests.cli_helpers import FAST_SCORE as FAST
from tests.cli_helpers import run_cli, score_bench


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> BenchmarkPaths:
    return write_benchmark(tmp_path_factory.mktemp("bench"), n_pool=30, n_anchors=12, n_test=1)


score = score_bench


def utilities(path) -> dict[str, float]:
    t = read_scores(path).to_pydict()
    return dict(zip(t["id"], t["utility"], strict=True))


def test_audit_size_default_is_128_or_one_percent_within_the_pool():
    assert audit_size(None, 1_000) == 128
    assert audit_size(None, 100_000) == 1_000
    assert audit_size(None, 50) == 50
    assert audit_size(7, 1_000) == 7
    assert audit_size(0, 1_000) == 0
    with pytest.raises(ValueError, match="--audit must be >= 0"):
        audit_size(-1, 10)


def test_audit_positions_are_distinct_seeded_and_cover_the_pool_uniformly():
    a = audit_positions(10_000, 500, seed=3)
    assert len(set(a.tolist())) == 500 and a.min() >= 0 and a.max() < 10_000
    assert np.array_equal(a, audit_positions(10_000, 500, seed=3))
    assert not np.array_equal(a, audit_positions(10_000, 500, seed=4))
    assert 3_500 < np.median(a) < 6_500  # not the first rows of the file
    # audited in random order, so an audit cut short by time is a uniform sample too
    assert not np.all(np.diff(a) > 0) and 2_500 < np.median(a[:100]) < 7_500


def test_compare_reads_the_runs_scores_by_id():
    rows = ScoreRows(id=["a", "b", "c", "d", "e"], utility=[5.0, 4.0, 3.0, 2.0, 1.0])
    same = compare(["e", "a", "c"], [1.0, 5.0, 3.0], rows)
    assert same["spearman"] == pytest.approx(1.0) and same["n"] == 3
    flipped = compare(["a", "b", "c", "d", "e"], [1.0, 2.0, 3.0, 4.0, 5.0], rows)
    assert flipped["spearman"] == pytest.approx(-1.0) and flipped["top20_overlap"] == 0.0
    assert top_overlap(np.arange(10.0), np.arange(10.0)) == 1.0


@pytest.fixture(scope="module")
def exact_run(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("exact") / "scores.parquet"
    run = score(bench, out, "--method", "exact")
    assert run.rc == 0, run.err
    assert "audit" not in read_settings(out)  # exact needs no audit of itself
    return out


def test_a_curvature_run_records_exacts_scores_of_its_sample(bench, exact_run, tmp_path):
    out = tmp_path / "scores.parquet"
    run = score(bench, out, "--method", "curvature", "--audit", "12")
    assert run.rc == 0, run.err
    audit = read_settings(out)["audit"]
    assert audit["n"] == 12 and len(set(audit["ids"])) == 12
    # the audit's exact utilities are the exact run's (same seed, so the same warmed proxy);
    # the audit batches its sample in random order, so padding differs from the exact run's
    # length-ordered batches and float32 rounds differently, at about 1e-7
    exact = utilities(exact_run)
    assert audit["exact_utility"] == pytest.approx([exact[i] for i in audit["ids"]], rel=1e-5)
    est = [utilities(out)[i] for i in audit["ids"]]
    assert audit["spearman"] == pytest.approx(spearmanr(est, audit["exact_utility"]).statistic)
    rho = audit["spearman"]
    said = f"audit: 12 random candidates scored again with exact: Spearman ρ {rho:.3f}"
    assert said in run.out


def test_audit_zero_turns_it_off_and_a_low_rho_warns(bench, tmp_path):
    out = tmp_path / "off.parquet"
    assert score(bench, out, "--method", "curvature", "--audit", "0").rc == 0
    assert "audit" not in read_settings(out)
    # first-order at a large SGD step ranks against exact (RESULTS.md): the run must say so
    loud = score(bench, tmp_path / "loud.parquet", "--method", "first-order",
                 "--optimizer", "sgd", "--lr", "1.0", "--audit", "30")  # fmt: skip
    audit = read_settings(tmp_path / "loud.parquet")["audit"]
    assert audit["n"] == 30
    assert ("warning: the estimator's ranking agrees with exact" in loud.out) == (
        audit["spearman"] < 0.9
    )


def test_an_interrupted_audit_resumes_without_rescoring(bench, tmp_path, monkeypatch):
    out = tmp_path / "scores.parquet"
    real_compare = scoring.compare

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # after every audit batch is in the parts

    monkeypatch.setattr(scoring, "compare", interrupted)
    assert run_in_process(bench, out) == 130  # what `stepsift score` exits with on Ctrl-C
    assert not out.exists()
    audit_parts = list((tmp_path / "scores.parquet.parts" / "audit.parquet.parts").glob("part-*"))
    assert len(audit_parts) == 2  # 8 audited candidates in batches of 4
    monkeypatch.setattr(scoring, "compare", real_compare)
    built = []
    real_build = scoring.Scorer.build

    def counting(proxy, records, settings, **kwargs):
        built.append(settings.method)
        return real_build(proxy, records, settings, **kwargs)

    monkeypatch.setattr(scoring.Scorer, "build", staticmethod(counting))
    assert run_in_process(bench, out) == 0
    assert "exact" not in built  # the audit's scores came from its parts
    assert read_settings(out)["audit"]["n"] == 8


def run_in_process(bench: BenchmarkPaths, out) -> int:
    """The CLI in this process (a monkeypatched piece is the one that runs), uncaptured."""
    argv = ["score", str(bench.pool), "--anchors", str(bench.anchors), "--out", str(out),
            *FAST, "--method", "curvature", "--audit", "8"]  # fmt: skip
    return main(argv)


def test_merged_shards_pool_their_audits(bench, tmp_path):
    out = tmp_path / "scores.parquet"
    for i in range(3):
        run = score(bench, out, "--method", "curvature", "--audit", "15", "--shard", f"{i}/3")
        assert run.rc == 0, run.err
    shard_ns = [read_settings(tmp_path / f"scores.shard-{i}-of-3.parquet")["audit"]["n"]
                for i in range(3)]  # fmt: skip
    assert sum(shard_ns) == 15
    assert run_cli("merge", str(out)).rc == 0
    merged = read_settings(out)["audit"]
    assert merged["n"] == 15 and len(set(merged["ids"])) == 15


def test_an_anchor_subsample_run_is_audited_and_its_k_is_decisive(bench, exact_run, tmp_path):
    out = tmp_path / "sub.parquet"
    run = score(bench, out, "--method", "anchor-subsample", "--exact-anchors", "4",
                "--audit", "12")  # fmt: skip
    assert run.rc == 0, run.err
    settings = read_settings(out)
    assert settings["exact_anchors"] == 4 and settings["of_anchors"] == 12
    assert settings["audit"]["n"] == 12  # audited against exact on all 12 anchors
    exact = utilities(exact_run)
    assert settings["audit"]["exact_utility"] == pytest.approx(
        [exact[i] for i in settings["audit"]["ids"]], rel=1e-5  # batches differ, as above
    )
    # the same file with another k would mix two estimators' scores: refused
    again = score(bench, out, "--method", "anchor-subsample", "--exact-anchors", "5")
    assert again.rc != 0 and "made from other inputs or settings" in again.err


def test_a_forward_run_is_audited_and_its_directions_are_decisive(bench, exact_run, tmp_path):
    out = tmp_path / "forward.parquet"
    run = score(bench, out, "--method", "forward", "--forward-directions", "2",
                "--audit", "12")  # fmt: skip
    assert run.rc == 0, run.err
    settings = read_settings(out)
    assert settings["forward_directions"] == 2 and settings["curvature_directions"] == 2
    assert settings["directional"] == "jvp"
    assert settings["audit"]["n"] == 12 and -1 <= settings["audit"]["spearman"] <= 1
    exact = utilities(exact_run)
    assert settings["audit"]["exact_utility"] == pytest.approx(
        [exact[i] for i in settings["audit"]["ids"]], rel=1e-5  # batches differ, as above
    )
    assert len(utilities(out)) == 30
    again = score(bench, out, "--method", "forward", "--forward-directions", "3")
    assert again.rc != 0 and "made from other inputs or settings" in again.err


def test_a_streamed_curvature_sketch_is_recorded_and_decisive(bench, tmp_path):
    out = tmp_path / "streamed.parquet"
    # 12 anchors x 16 draws are more vectors than the buffer holds: so it really streams
    run = score(bench, out, "--method", "curvature", "--streamed-sketch", "--audit", "6",
                "--label-draws", "16")  # fmt: skip
    assert run.rc == 0, run.err
    settings = read_settings(out)
    assert settings["streamed_sketch"] is True and settings["ggn_streamed"] is True
    assert settings["audit"]["n"] == 6 and len(utilities(out)) == 30
    plain = tmp_path / "plain.parquet"
    assert score(bench, plain, "--method", "curvature", "--audit", "0").rc == 0
    assert "ggn_streamed" not in read_settings(plain)
    again = score(bench, out, "--method", "curvature", "--audit", "6", "--label-draws", "16")
    assert again.rc != 0 and "made from other inputs or settings" in again.err


def test_bf16_candidate_gradients_are_recorded_decisive_and_audited_in_full(bench, tmp_path):
    out = tmp_path / "bf16.parquet"
    run = score(bench, out, "--method", "curvature", "--grad-autocast", "bfloat16", "--audit", "6")
    assert run.rc == 0, run.err
    settings = read_settings(out)
    assert settings["grad_autocast"] == "bfloat16" and settings["audit"]["n"] == 6
    assert len(utilities(out)) == 30
    again = score(bench, out, "--method", "curvature", "--audit", "6")
    assert again.rc != 0 and "made from other inputs or settings" in again.err
    refused = score(
        bench, tmp_path / "x.parquet", "--method", "exact", "--grad-autocast", "bfloat16"
    )
    assert refused.rc != 0 and "--grad-autocast applies to curvature and less" in refused.err


def test_a_time_sized_audit_stops_after_its_floor_once_its_share_is_spent(tmp_path):
    """With its time share spent from the start, the audit still scores its floor, then
    stops at the first batch boundary past it; without a budget it scores every batch."""
    from stepsift.engine.audit import AuditBudget, score_audit
    from stepsift.engine.store import PartStore

    def score_batch(batch):
        rows = ScoreRows()
        n = len(batch)
        rows.extend([f"c{i}" for i in batch], [0.1] * n, [1.0] * n, [5] * n, [False] * n)
        return rows

    todo = [np.arange(s, s + 4) for s in range(0, 40, 4)]
    capped = PartStore(tmp_path / "capped.parquet")
    capped.open("audit:40", overwrite=True)
    rows, _ = score_audit(capped, todo, score_batch, 0.0, budget=AuditBudget(0.0, floor=10))
    assert len(rows) == 12  # three batches of 4: the floor of 10 reached, then stopped
    whole = PartStore(tmp_path / "whole.parquet")
    whole.open("audit:40", overwrite=True)
    assert len(score_audit(whole, todo, score_batch, 0.0)[0]) == 40
    # a long budget lets every batch through too
    roomy = PartStore(tmp_path / "roomy.parquet")
    roomy.open("audit:40", overwrite=True)
    budget = AuditBudget(3600.0, floor=10)
    assert len(score_audit(roomy, todo, score_batch, 0.0, budget=budget)[0]) == 40


def test_the_rho_interval_holds_rho_and_narrows_with_the_sample():
    from stepsift.engine.audit import spearman_interval

    lo32, hi32 = spearman_interval(0.95, 32)
    lo128, hi128 = spearman_interval(0.95, 128)
    assert lo32 < lo128 < 0.95 < hi128 < hi32 < 1.0
    # Fisher's z with Bonett-Wright's standard error, by hand
    half = 1.96 * np.sqrt((1 + 0.95**2 / 2) / 29)
    assert lo32 == pytest.approx(np.tanh(np.arctanh(0.95) - half), abs=1e-4)
    assert all(np.isnan(spearman_interval(0.9, 3)))
