"""The `stepsift` command end to end: real files, real Parquet, the real tiny proxy.

Scoring is the slow part, so a few session fixtures score one generated pool once per
configuration and the tests share them; bad-input tests fail before any model work.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import Run, run_cli

from stepsift.bench.generate import BenchmarkPaths, write_benchmark
from stepsift.cli import main

N_POOL = 24
FAST = [
    "--warmup-min-samples",
    "8",
    "--warmup-min-steps",
    "3",
    "--batch-size",
    "8",
    "--quiet",
]


def scores_by_id(path: Path) -> dict[str, float]:
    t = pq.read_table(path)
    return dict(zip(t.column("id").to_pylist(), t.column("utility").to_pylist(), strict=True))


@dataclass
class Scored:
    bench: BenchmarkPaths
    scores: Path
    run: Run
    proxy_dir: Path


@pytest.fixture(scope="session")
def bench(tmp_path_factory: pytest.TempPathFactory) -> BenchmarkPaths:
    return write_benchmark(tmp_path_factory.mktemp("bench"), n_pool=N_POOL, n_anchors=6, n_test=2)


@pytest.fixture(scope="session")
def scored(bench: BenchmarkPaths, tmp_path_factory: pytest.TempPathFactory) -> Scored:
    """The pool scored once with the built-in proxy (seed 0), its proxy saved."""
    d = tmp_path_factory.mktemp("scored")
    out = d / "scores.parquet"
    proxy_dir = d / "proxy"
    run = run_cli(
        "score", bench.pool, "--anchors", bench.anchors, "--out", out,
        "--save-proxy", proxy_dir, "--seed", "0", *FAST,
    )  # fmt: skip
    assert run.rc == 0, run.err
    return Scored(bench, out, run, proxy_dir)


@pytest.fixture(scope="session")
def rescored(scored: Scored, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The same run again (same seed), with --harmful-below at the first run's median utility
    so that both harmful and unharmful candidates occur."""
    median = float(np.median(list(scores_by_id(scored.scores).values())))
    out = tmp_path_factory.mktemp("rescored") / "scores.parquet"
    b = scored.bench
    run = run_cli(
        "score", b.pool, "--anchors", b.anchors, "--out", out, "--seed", "0",
        "--harmful-below", repr(median), *FAST,
    )  # fmt: skip
    assert run.rc == 0, run.err
    return out, median


def write_lines(path: Path, lines: list[str | dict]) -> Path:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


def pool_lines(bench: BenchmarkPaths) -> list[str]:
    return bench.pool.read_text(encoding="utf-8").splitlines()


def no_assistant(rid: str) -> dict:
    return {
        "id": rid,
        "image": "images/pool-000000.png",
        "conversations": [{"from": "human", "value": "<image>\nWhat is shown?"}],
    }


def missing_image(bench: BenchmarkPaths, rid: str) -> dict:
    rec = json.loads(pool_lines(bench)[0])
    rec["id"] = rid
    rec["image"] = "images/does-not-exist.png"
    return rec


# --- score ------------------------------------------------------------------------------


def test_score_writes_one_typed_row_per_candidate(scored: Scored) -> None:
    """The score file has the documented column types and exactly one row per pool record."""
    t = pq.read_table(scored.scores)
    assert t.schema.field("id").type == pa.string()
    assert t.schema.field("utility").type == pa.float64()
    assert t.schema.field("loss").type == pa.float64()
    assert t.schema.field("harmful").type == pa.bool_()
    assert t.schema.field("tokens").type == pa.int64()
    ids = t.column("id").to_pylist()
    pool_ids = [json.loads(line)["id"] for line in pool_lines(scored.bench)]
    assert len(ids) == N_POOL and sorted(ids) == sorted(pool_ids)
    assert np.isfinite(t.column("utility").to_numpy()).all()
    assert np.isfinite(t.column("loss").to_numpy()).all()
    assert (t.column("loss").to_numpy() > 0).all()
    assert (t.column("tokens").to_numpy() > 0).all()
    assert f"scored {N_POOL} candidates" in scored.run.out
    assert scored.run.err == ""  # --quiet: no progress bars


def test_harmful_flags_exactly_the_utilities_below_the_threshold(rescored) -> None:
    """harmful == (utility < --harmful-below), row by row, with both kinds present."""
    path, threshold = rescored
    t = pq.read_table(path)
    utility = t.column("utility").to_numpy()
    harmful = t.column("harmful").to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(harmful, utility < threshold)
    assert 0 < harmful.sum() < len(harmful)


def test_same_seed_gives_the_same_scores(scored: Scored, rescored) -> None:
    """Scoring twice with the same seed gives the same utility for every id."""
    a, b = scores_by_id(scored.scores), scores_by_id(rescored[0])
    assert a.keys() == b.keys()
    ids = sorted(a)
    np.testing.assert_allclose([a[i] for i in ids], [b[i] for i in ids], rtol=0, atol=1e-6)
    assert len(set(a.values())) > 1  # not a constant that would trivially match


def test_saved_proxy_reproduces_the_scores_without_warm_up(scored: Scored, tmp_path) -> None:
    """--save-proxy DIR then --proxy DIR (no warm-up) scores exactly as the first run did."""
    assert (scored.proxy_dir / "proxy.json").is_file()
    out = tmp_path / "again.parquet"
    b = scored.bench
    run = run_cli(
        "score", b.pool, "--anchors", b.anchors, "--out", out, "--proxy", scored.proxy_dir,
        "--batch-size", "8", "--quiet",
    )  # fmt: skip
    assert run.rc == 0, run.err
    assert "warm-up" not in run.out and "warm-up" in scored.run.out
    a, c = scores_by_id(scored.scores), scores_by_id(out)
    assert a.keys() == c.keys()
    ids = sorted(a)
    np.testing.assert_allclose([a[i] for i in ids], [c[i] for i in ids], rtol=0, atol=1e-6)


# --- select -----------------------------------------------------------------------------


def test_select_keeps_the_top_20_percent_and_reports_it(scored: Scored, tmp_path) -> None:
    """`select --keep 20% --coverage off` (the plain top-k) prints kept/dropped counts and
    the utility range, and writes the top floor(20% of 24) = 4 pool lines unchanged, in
    input order."""
    out = tmp_path / "top.jsonl"
    run = run_cli("select", scored.bench.pool, "--scores", scored.scores, "--keep", "20%",
                  "--coverage", "off", "--out", out)  # fmt: skip
    assert run.rc == 0, run.err
    u = scores_by_id(scored.scores)
    top = sorted(u, key=lambda i: (-u[i], i))[:4]
    lines = pool_lines(scored.bench)
    expected = [line for line in lines if json.loads(line)["id"] in top]
    assert out.read_text(encoding="utf-8").splitlines() == expected
    assert f"kept 4 of {N_POOL} candidates (target 4)" in run.out
    lo, hi = min(u[i] for i in top), max(u[i] for i in top)
    assert f"utility range kept: {lo:.6g} .. {hi:.6g}" in run.out
    assert "dropped as harmful: 0" in run.out
    assert f"wrote {out}" in run.out


def test_select_with_scores_from_another_pool_exits_2(scored: Scored, tmp_path) -> None:
    """Selecting from a file the scores were not made from is refused with a message."""
    out = tmp_path / "sel.jsonl"
    run = run_cli(
        "select", scored.bench.anchors, "--scores", scored.scores, "--keep", "20%", "--out", out
    )
    assert run.rc == 2
    assert "stepsift select: error:" in run.err
    assert str(scored.scores) in run.err and "another file" in run.err
    assert not out.exists()


def test_select_with_a_bad_keep_exits_2(scored: Scored, tmp_path) -> None:
    """A malformed --keep is reported on stderr with exit code 2, writing nothing."""
    out = tmp_path / "sel.jsonl"
    b = scored.bench
    run = run_cli("select", b.pool, "--scores", scored.scores, "--keep", "lots", "--out", out)
    assert run.rc == 2 and "--keep 'lots'" in run.err
    assert not out.exists()


def test_console_script_runs_select(scored: Scored, tmp_path) -> None:
    """The installed `stepsift` entry point (or `python -m stepsift.cli`) works as a process."""
    script = Path(sys.executable).with_name("stepsift")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "stepsift.cli"]
    out = tmp_path / "top.jsonl"
    proc = subprocess.run(
        [*cmd, "select", str(scored.bench.pool), "--scores", str(scored.scores),
         "--keep", "0.5", "--coverage", "off", "--out", str(out), "--order", "utility"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"kept 12 of {N_POOL}" in proc.stdout
    u = scores_by_id(scored.scores)
    kept = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert kept == sorted(u, key=lambda i: (-u[i], i))[:12]
    bad = subprocess.run([*cmd, "select"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "required" in bad.stderr  # argparse usage error


def test_demo_help(capsys) -> None:
    """`stepsift demo --help` prints the demo's options and exits 0."""
    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "usage: stepsift demo" in text and "--pool" in text and "--noise" in text


# --- bad input --------------------------------------------------------------------------


def score_bad(bench: BenchmarkPaths, pool: Path, out: Path, *extra: str) -> Run:
    """Score `pool` with images resolved in the benchmark folder."""
    return run_cli(
        "score", pool, "--anchors", bench.anchors, "--out", out,
        "--image-root", bench.root, *FAST, *extra,
    )  # fmt: skip


def assert_nothing_written(out: Path) -> None:
    """No score file, no rejected file, no leftover temp file."""
    assert not out.exists()
    assert not out.with_suffix(".rejected.jsonl").exists()
    if out.parent.exists():
        assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_broken_json_line_exits_2_naming_file_and_line(bench, tmp_path) -> None:
    """A line that is not JSON stops `score` before any model work; stderr says where."""
    lines = pool_lines(bench)[:5]
    lines[2] = lines[2][:40]  # cut in the middle
    pool = write_lines(tmp_path / "pool.jsonl", lines)
    out = tmp_path / "out" / "scores.parquet"
    run = score_bad(bench, pool, out)
    assert run.rc == 2
    assert f"{pool}:3:" in run.err and "not valid JSON" in run.err
    assert "--skip-invalid" in run.err
    assert_nothing_written(out)


def test_missing_image_exits_2(bench, tmp_path) -> None:
    """A record whose image does not exist is named by file, line, id and path."""
    lines: list[str | dict] = [*pool_lines(bench)[:3], missing_image(bench, "lost")]
    pool = write_lines(tmp_path / "pool.jsonl", lines)
    out = tmp_path / "out" / "scores.parquet"
    run = score_bad(bench, pool, out)
    assert run.rc == 2
    assert f"{pool}:4 (id lost): image:" in run.err
    assert "image file not found" in run.err and "does-not-exist.png" in run.err
    assert_nothing_written(out)


def test_record_without_assistant_turn_exits_2(bench, tmp_path) -> None:
    """A conversation with nothing to train on is reported with its line and field."""
    lines: list[str | dict] = [no_assistant("q-only"), *pool_lines(bench)[:3]]
    pool = write_lines(tmp_path / "pool.jsonl", lines)
    out = tmp_path / "scores.parquet"
    run = score_bad(bench, pool, out)
    assert run.rc == 2
    assert f"{pool}:1 (id q-only): conversations: no assistant turn" in run.err
    assert_nothing_written(out)


def test_every_problem_in_a_file_is_listed(bench, tmp_path) -> None:
    """Several bad records are all reported at once, not just the first."""
    good = pool_lines(bench)[:4]
    lines: list[str | dict] = [
        good[0],
        "{not json",  # 2
        good[1],
        missing_image(bench, "lost"),  # 4
        no_assistant("q-only"),  # 5
        good[2],
        good[1],  # 7: duplicate id of line 3
    ]
    pool = write_lines(tmp_path / "pool.jsonl", lines)
    out = tmp_path / "out" / "scores.parquet"
    run = score_bad(bench, pool, out)
    assert run.rc == 2
    assert "4 problem(s)" in run.err
    for where in (":2:", ":4 (id lost)", ":5 (id q-only)", ":7 (id pool-000001)"):
        assert f"{pool}{where}" in run.err, where
    assert "duplicate id 'pool-000001': first used on line 3" in run.err
    assert_nothing_written(out)


def test_invalid_anchors_stop_the_run_even_with_skip_invalid(bench, tmp_path) -> None:
    """The anchors are the yardstick: any problem in them is fatal, --skip-invalid or not."""
    anchors = tmp_path / "anchors.jsonl"
    anchor_lines = bench.anchors.read_text(encoding="utf-8").splitlines()
    write_lines(anchors, [*anchor_lines[:3], no_assistant("bad-anchor"), *anchor_lines[3:]])
    out = tmp_path / "out" / "scores.parquet"
    run = run_cli(
        "score", bench.pool, "--anchors", anchors, "--out", out,
        "--image-root", bench.root, "--skip-invalid", *FAST,
    )  # fmt: skip
    assert run.rc == 2
    assert f"{anchors}:4 (id bad-anchor)" in run.err and "no assistant turn" in run.err
    assert_nothing_written(out)


def test_skip_invalid_scores_the_rest_and_writes_rejected(bench, tmp_path) -> None:
    """--skip-invalid exits 0, scores every valid record, and lists each bad one (with its
    reason and line) in OUT.rejected.jsonl beside the score file."""
    good = pool_lines(bench)[:6]
    lines: list[str | dict] = [
        good[0],
        '{"id": "cut", "conversations": [',  # 2
        good[1],
        good[2],
        missing_image(bench, "lost"),  # 5
        good[3],
        no_assistant("q-only"),  # 7
        good[4],
        good[5],
    ]
    pool = write_lines(tmp_path / "pool.jsonl", lines)
    out = tmp_path / "out" / "scores.parquet"
    run = score_bad(bench, pool, out, "--skip-invalid", "--warmup-fraction", "0")
    assert run.rc == 0, run.err
    rejected_path = tmp_path / "out" / "scores.rejected.jsonl"
    assert rejected_path.is_file()
    rejected = [json.loads(x) for x in rejected_path.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["line"] for r in rejected) == [2, 5, 7]
    reasons = {r["line"]: r["problem"] for r in rejected}
    assert "not valid JSON" in reasons[2]
    assert "image file not found" in reasons[5]
    assert "no assistant turn" in reasons[7]
    assert all(r["file"] == str(pool) for r in rejected)
    assert {r["id"] for r in rejected} == {None, "lost", "q-only"}
    scored_ids = pq.read_table(out).column("id").to_pylist()
    assert sorted(scored_ids) == sorted(json.loads(x)["id"] for x in good)
    assert len(scored_ids) + len(rejected) == len(lines)
    assert "rejected as invalid: 3" in run.out and str(rejected_path) in run.out

    # without --skip-invalid, select refuses the file's invalid records
    run = run_cli("select", pool, "--scores", out, "--keep", "50%", "--out", tmp_path / "x")
    assert run.rc == 2 and f"{pool}:2:" in run.err and not (tmp_path / "x").exists()


def test_select_skip_invalid_accepts_what_score_skip_invalid_wrote(bench, tmp_path) -> None:
    """`score --skip-invalid` then `select --skip-invalid` on the same file works, and writes
    only valid records, even when a record was rejected for its image."""
    good = pool_lines(bench)[:6]
    lines: list[str | dict] = [*good[:3], missing_image(bench, "lost"), *good[3:]]
    shutil.copytree(bench.images, tmp_path / "images")  # image paths resolve beside the file
    pool = write_lines(tmp_path / "pool.jsonl", lines)
    out = tmp_path / "scores.parquet"
    run = run_cli(
        "score", pool, "--anchors", bench.anchors, "--out", out, "--skip-invalid",
        "--warmup-fraction", "0", *FAST,
    )  # fmt: skip
    assert run.rc == 0, run.err
    assert pq.read_table(out).num_rows == 6
    sel = tmp_path / "sel.jsonl"
    run = run_cli("select", pool, "--scores", out, "--keep", "50%", "--out", sel, "--skip-invalid")
    assert run.rc == 0, run.err
    assert "kept 3 of 6 candidates" in run.out
    assert set(sel.read_text(encoding="utf-8").splitlines()) <= set(good)


def test_skip_invalid_writes_one_rejected_entry_per_bad_record(bench, tmp_path) -> None:
    """A record with two problems is still one rejected record, so scored + rejected
    == input count holds."""
    good = pool_lines(bench)[:3]
    twice_bad = no_assistant("double")
    twice_bad["image"] = "images/does-not-exist.png"  # missing image AND no assistant turn
    lines: list[str | dict] = [*good, twice_bad]
    pool = write_lines(tmp_path / "pool.jsonl", lines)
    out = tmp_path / "scores.parquet"
    run = score_bad(bench, pool, out, "--skip-invalid", "--warmup-fraction", "0")
    assert run.rc == 0, run.err
    rejected = out.with_suffix(".rejected.jsonl").read_text(encoding="utf-8").splitlines()
    scored_n = pq.read_table(out).num_rows
    assert scored_n == 3
    assert scored_n + len(rejected) == len(lines)


def test_all_invalid_with_skip_invalid_exits_2(bench, tmp_path) -> None:
    """With nothing valid left to score, --skip-invalid still fails rather than writing an
    empty score file."""
    pool = write_lines(tmp_path / "pool.jsonl", [no_assistant("a"), "[1, 2]"])
    out = tmp_path / "scores.parquet"
    run = score_bad(bench, pool, out, "--skip-invalid")
    assert run.rc == 2
    assert "no assistant turn" in run.err and "expected a JSON object" in run.err
    assert_nothing_written(out)


def test_missing_candidates_file_exits_2(bench, tmp_path) -> None:
    """A candidates path that does not exist is an error naming it, not a traceback."""
    out = tmp_path / "scores.parquet"
    run = score_bad(bench, tmp_path / "nope.jsonl", out)
    assert run.rc == 2 and "nope.jsonl" in run.err
    assert_nothing_written(out)


def test_adam_without_warm_up_state_warns(bench, tmp_path) -> None:
    """With no warm-up, the default Adam step starts from a fresh state; the user is told."""
    out = tmp_path / "scores.parquet"
    argv = ["score", bench.pool, "--anchors", bench.anchors, "--out", out]
    argv += ["--method", "exact"]  # no audit, whose agreement could warn on its own
    run = run_cli(*argv, "--warmup-fraction", "0", *FAST)
    assert run.rc == 0, run.err
    assert "warning: Adam stepped from a fresh state" in run.out
    run = run_cli(*argv, "--overwrite", *FAST)
    assert run.rc == 0 and "warning" not in run.out


def test_every_estimator_scores_through_the_cli(scored: Scored, tmp_path) -> None:
    """Every --method runs end to end from the saved proxy and records its settings; the
    default (the `scored` fixture) is curvature, audited against exact on a sample."""
    b = scored.bench
    default = json.loads(pq.read_schema(scored.scores).metadata[b"stepsift"])
    assert default["method"] == "curvature"
    assert default["audit"]["method"] == "exact" and default["audit"]["n"] > 0
    exact = None
    for method in ("exact", "first-order", "curvature", "less"):
        out = tmp_path / f"{method}.parquet"
        run = run_cli(
            "score", b.pool, "--anchors", b.anchors, "--out", out,
            "--proxy", scored.proxy_dir, "--method", method, "--less-dim", "256", *FAST,
        )  # fmt: skip
        assert run.rc == 0, run.err
        got = scores_by_id(out)
        if method == "exact":
            exact = got
            continue
        assert sorted(got) == sorted(exact)
        settings = json.loads(pq.read_schema(out).metadata[b"stepsift"])
        assert settings["method"] == method
        assert got != exact  # really another estimate, not a copy of the exact scores
        if method == "first-order":
            assert settings["directional"] == "jvp"
        if method == "curvature":
            assert settings["ggn_sketch_size"] <= 64
        if method == "less":
            assert settings["less_dim"] == 256


def test_params_restricts_the_step_and_rejects_a_regex_matching_nothing(
    scored: Scored, tmp_path
) -> None:
    b = scored.bench
    argv = ["score", b.pool, "--anchors", b.anchors, "--proxy", scored.proxy_dir, *FAST]
    head = tmp_path / "head.parquet"
    run = run_cli(*argv, "--out", head, "--params", r"^head\.")
    assert run.rc == 0, run.err
    settings = json.loads(pq.read_schema(head).metadata[b"stepsift"])
    assert settings["params"] == r"^head\."
    assert scores_by_id(head) != scores_by_id(scored.scores)  # a different step, other values
    run = run_cli(*argv, "--out", tmp_path / "none.parquet", "--params", "nothing_is_called_this")
    assert run.rc == 2 and "matches no trainable parameter" in run.err
    run = run_cli(*argv, "--out", tmp_path / "lora.parquet", "--params", "lora")
    assert run.rc == 2 and "no LoRA adapter" in run.err
