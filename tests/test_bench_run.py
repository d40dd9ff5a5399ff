"""`stepsift bench` and `stepsift demo` end to end, at a size CI can afford: tiny target, tiny
pool, one training epoch. The figures are meaningless at this size; what is checked is that
every run happens once, lands in every output file with the fields the issue asks for, and
that an interrupted bench continues without redoing finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepsift.bench import runner, score_runs
from stepsift.bench.base_model import BaseConfig
from stepsift.bench.demo import demo_config, run_demo
from stepsift.bench.digits import compose, load_bank, save_png
from stepsift.bench.generate import to_llava
from stepsift.bench.judge import JudgeSettings, judge_examples
from stepsift.bench.pools import make_clean, make_pool
from stepsift.bench.proxy_base import ProxyBaseConfig
from stepsift.bench.report import RESULT_FIELDS
from stepsift.bench.runner import BenchConfig, run_bench
from stepsift.bench.target import TargetConfig, strip_of
from stepsift.cli import main
from stepsift.data import read_records
from stepsift.engine.store import read_settings
from stepsift.proxy.warmup import WarmupSettings

TINY_TARGET = TargetConfig(
    d_model=32, n_layers=2, n_heads=2, mlp_hidden=64, max_text_len=200, patch_hidden=32
)
TINY = {
    "pool_size": 40,
    "n_anchors": 6,
    "n_test": 12,
    "epochs": 1,
    "judge": JudgeSettings(n_train=24, epochs=1),
    "base": BaseConfig(target=TINY_TARGET, n_train=48, n_heldout=6, steps=4),
    "warmup": WarmupSettings(min_samples=16, min_steps=3),
    "proxy_base": ProxyBaseConfig(n_train=32, n_heldout=4, steps=3, batch_size=8),
    "audit": 8,
    "progress": False,
}


def tiny_config(out: Path, **kw) -> BenchConfig:
    return BenchConfig(out=out, **{**TINY, **kw})


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("bench") / "run"
    cfg = tiny_config(
        out, seeds=(0, 1), fractions=(0.2, 0.5), random_fractions=(0.2,), protocols=("A", "B")
    )
    rows = run_bench(cfg)
    return cfg, rows


def test_every_planned_run_is_in_results_json_with_the_required_fields(bench_run) -> None:
    cfg, rows = bench_run
    saved = json.loads((cfg.out / "results.json").read_text())
    assert len(saved) == len(rows)
    # 2 seeds x 2 protocols x (full, random 20%, stepsift, ost, loss_filter, less and
    # oracle_clean at 20/50%, oracle_clean_all, oracle_target, judge, deita, ifd, high_loss)
    assert len(saved) == 2 * 2 * 18
    for row in saved:
        assert set(RESULT_FIELDS) <= set(row)
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["protocol"] in ("A", "B")
    keys = {(r["method"], r["keep"], r["protocol"], r["seed"]) for r in saved}
    assert len(keys) == len(saved)  # no run twice


def test_protocols_train_as_defined(bench_run) -> None:
    cfg, rows = bench_run
    by = {(r["method"], r["keep"], r["protocol"], r["seed"]): r for r in rows}
    full_steps = cfg.full_steps()
    for r in rows:
        if r["train_samples"] == 0:
            continue  # an empty selection trains nothing (the base is the result)
        if r["protocol"] == "B":
            assert r["train_steps"] == full_steps
        else:  # A: `epochs` passes over the subset
            assert r["train_steps"] == cfg.epochs * -(-r["train_samples"] // cfg.batch_size)
    ost20 = by[("ost", 0.2, "A", 0)]
    assert ost20["train_samples"] == 8  # floor(0.2 * 40)


def test_selection_costs_are_charged(bench_run) -> None:
    cfg, rows = bench_run
    level = cfg.out / "noise-40"
    ost = json.loads((level / "scores.cost.json").read_text())
    less = json.loads((level / "less.cost.json").read_text())
    loss_pass = json.loads((level / "loss_pass.json").read_text())["seconds"]
    for r in rows:
        if r["method"] in ("ost", "ost_drop_harmful", "high_loss"):
            assert r["select_seconds"] >= ost["score_seconds"]
        if r["method"] == "less":
            assert r["select_seconds"] >= less["score_seconds"]
        if r["method"] == "loss_filter":  # the warm-up and one forward pass, not OST's run
            assert r["select_seconds"] >= ost["warmup_seconds"] + loss_pass
            assert r["select_seconds"] < ost["score_seconds"] + loss_pass
        if r["method"] in ("full", "oracle_clean", "oracle_clean_all", "oracle_target"):
            assert r["select_seconds"] < 0.1  # no model work


def test_reports_hold_the_table_plot_and_detection_figures(bench_run) -> None:
    cfg, _ = bench_run
    md = (cfg.out / "results.md").read_text()
    assert "Protocol A" in md and "Protocol B" in md
    assert "| ost top-20% |" in md and "| judge |" in md
    assert "Noise detection" in md and "harmful" in md
    png = (cfg.out / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((cfg.out / "summary.json").read_text())
    det = summary["levels"]["0.4"]["detection"]
    assert 0.0 <= det["auroc"]["ost (utility)"] <= 1.0
    assert "misread" in det["per_type"]["ost (utility)"]
    assert 0.0 <= summary["levels"]["0.4"]["base_accuracy"] <= 1.0


def test_rerun_continues_without_redoing_finished_runs(bench_run, monkeypatch) -> None:
    cfg, rows = bench_run
    runs_path = cfg.out / "runs.jsonl"
    lines = runs_path.read_text().splitlines()
    # a crash mid-write: the last run's line is torn, so that run (only) is redone
    runs_path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    trained = []
    real = runner.train_and_evaluate

    def counting(*args, **kw):
        trained.append(args[4:])
        return real(*args, **kw)

    monkeypatch.setattr(runner, "train_and_evaluate", counting)
    monkeypatch.setattr(score_runs, "score", _must_not_run("scoring"))
    monkeypatch.setattr(runner, "train_judge", _must_not_run("judge training"))
    again = run_bench(cfg)
    assert len(trained) == 1
    assert len(again) == len(rows)


def _must_not_run(what: str):
    def fail(*args, **kw):
        raise AssertionError(f"{what} ran again on a resumed bench")

    return fail


def test_judge_trains_on_its_own_problems_on_pool_split_images() -> None:
    """The judge's clean problems come from pool-split images (never dev/test) and from their
    own random stream, so they are not the pool's problems."""
    judge = make_clean(50, "pool", "judge", seed=0, stream="judge")
    pool = make_pool(50, seed=0)
    pool_split = set(load_bank().splits["pool"].tolist())
    assert all(set(s.meta["image_indices"]) <= pool_split for s in judge)
    problem = lambda s: (s.meta["task"], tuple(s.meta["image_indices"]))  # noqa: E731
    assert not {problem(s) for s in judge} & {problem(s) for s in pool}
    examples = judge_examples(5, seed=0)
    assert [e.answer for e in examples] == [s.meta["answer"] for s in judge[:5]]
    assert all(e.pixels is not None and e.turns[-1].supervised for e in examples)


def test_demo_runs_the_quick_bench_and_hands_over_a_subset(tmp_path: Path) -> None:
    cfg = demo_config(
        tmp_path / "demo", pool_size=40, **{k: v for k, v in TINY.items() if k != "pool_size"}
    )
    rows = run_demo(cfg)
    # protocol B, one seed: full, random 20%, the default and the loss filter at 20% and 50%,
    # judge
    assert sorted((r["method"], r["keep"] if r["method"] != "judge" else None) for r in rows) == [
        ("full", 1.0),
        ("judge", None),
        ("loss_filter", 0.2),
        ("loss_filter", 0.5),
        ("random", 0.2),
        ("stepsift", 0.2),
        ("stepsift", 0.5),
    ]
    assert {r["protocol"] for r in rows} == {"B"}
    subset = (tmp_path / "demo" / "noise-40" / "subset-20.jsonl").read_text().splitlines()
    assert len(subset) == 8
    assert all(json.loads(line)["conversations"] for line in subset)  # the pool's own format
    page = (tmp_path / "demo" / "noise-40" / "report" / "report.html").read_text()
    assert "Most harmful samples" in page and "data:image/png;base64," in page


def test_bench_command_rejects_unknown_methods(tmp_path: Path, capsys) -> None:
    code = main(["bench", "--out", str(tmp_path), "--methods", "ost,oracle"])
    assert code == 2
    assert "oracle" in capsys.readouterr().err


def test_fraction_lists_accept_percentages() -> None:
    from stepsift.cli.list_args import floats

    assert floats("10%, 0.2,50%") == (0.1, 0.2, 0.5)


def test_judge_examples_read_exactly_like_the_records_it_judges(tmp_path: Path) -> None:
    """The judge must train on prompts rendered as the pool's records are read from disk
    (a mismatch, e.g. a literal '<image>' in its prompts, makes it misjudge everything)."""
    sample = make_clean(1, "pool", "judge", seed=0, stream="judge")[0]
    images = tmp_path / "images"
    images.mkdir()
    save_png(compose(load_bank(), sample.meta["image_indices"]), images / f"{sample.id}.png")
    (tmp_path / "one.jsonl").write_text(json.dumps(to_llava(sample)) + "\n")
    record = read_records(tmp_path / "one.jsonl").records[0]
    example = judge_examples(1, seed=0)[0]
    assert example.turns == tuple(record.turns)
    assert (example.pixels == strip_of(record.images)).all()


def test_noise_sweep_reports_every_level_side_by_side(tmp_path: Path) -> None:
    """Two noise rates in one command: a folder per level, the base measured on each, and a
    sweep table with one column per rate; a clean level has no wrong sample."""
    cfg = tiny_config(
        tmp_path / "sweep",
        noise_rates=(0.0, 0.5),
        methods=("full", "ost"),
        fractions=(0.5,),
        protocols=("B",),
        seeds=(0,),
        estimator="curvature",
    )
    rows = run_bench(cfg)
    assert sorted((r["noise"], r["method"]) for r in rows) == [
        (0.0, "full"), (0.0, "ost"), (0.5, "full"), (0.5, "ost"),
    ]  # fmt: skip
    assert all(r["wrong_share"] == 0 for r in rows if r["noise"] == 0.0)
    assert (cfg.out / "noise-00" / "scores.parquet").is_file()
    assert read_settings(cfg.out / "noise-50" / "scores.parquet")["method"] == "curvature"
    md = (cfg.out / "results.md").read_text()
    assert "Noise sweep, protocol B" in md
    header = next(line for line in md.splitlines() if line.startswith("| method | 0%"))
    assert header == "| method | 0% | 50% |"
    assert "| wrong in pool | 0% |" in md
    assert "no wrong sample in the pool, so no AUROC" in md  # the clean level
    summary = json.loads((cfg.out / "summary.json").read_text())
    assert sorted(summary["levels"]) == ["0", "0.5"]


def test_report_holds_only_what_the_command_asked_for(bench_run) -> None:
    """A narrower command over the same folder reuses the finished runs and reports just
    its own plan, not every run runs.jsonl holds."""
    cfg, _ = bench_run
    narrow = tiny_config(
        cfg.out,
        methods=("full", "ost"),
        fractions=(0.5,),
        protocols=("B",),
        seeds=(1,),
    )
    rows = run_bench(narrow)
    assert sorted((r["method"], r["protocol"], r["seed"]) for r in rows) == [
        ("full", "B", 1), ("ost", "B", 1),
    ]  # fmt: skip
    saved = json.loads((cfg.out / "results.json").read_text())
    assert len(saved) == 2


def test_bench_command_reads_the_v2_options(tmp_path: Path) -> None:
    from stepsift.cli import build_parser

    args = build_parser().parse_args(
        ["bench", "--target", "chain", "--target-share", "0.5", "--families",
         "transcribe=2,count=1", "--proxy-start", "scratch", "--audit", "0"]
    )  # fmt: skip
    assert args.target == ("chain",) and args.target_share == 0.5
    assert args.families == {"transcribe": 2.0, "count": 1.0}
    assert args.proxy_start == "scratch" and args.audit == 0
    cfg = tiny_config(tmp_path, target_share=0.5, other_families=args.families)
    assert cfg.mix().counts(100) == {"chain": 50, "transcribe": 33, "count": 17}
    assert tiny_config(tmp_path, target_share=1.0).mix() is None  # the old pool
    with pytest.raises(ValueError, match="nosuch"):
        tiny_config(tmp_path, other_families={"nosuch": 1.0})
