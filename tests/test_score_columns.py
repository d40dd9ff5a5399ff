"""The score file's optional columns (fold_utility, group_utility, sketch) end to end, and
the anchor state saved once per run and reused by every worker.

Resume, 4 merged shards and Ray with 2 workers carry the columns: tests/test_resume.py,
tests/test_shards.py and tests/test_ray_engine.py compare them with one process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from cli_helpers import run_cli

from stepsift.bench.generate import write_benchmark
from stepsift.data import read_records
from stepsift.engine.anchor_state import state_path
from stepsift.engine.scorer import Scorer
from stepsift.engine.scoring import ScoreSettings
from stepsift.engine.shards import shared_proxy_dir
from stepsift.engine.store import read_settings
from stepsift.proxy.builtin import BuiltinProxy
from stepsift.proxy.loading import load_saved_proxy
from stepsift.proxy.tiny_vlm import TinyVLMConfig
from stepsift.proxy.warmup import WarmupSettings, warm_up
from stepsift.utility import curvature, less
from stepsift.utility.anchors import AnchorLoss

FAST = [
    "--warmup-min-samples", "8", "--warmup-min-steps", "3", "--batch-size", "4",
    "--quiet", "--seed", "0",
]  # fmt: skip
SMALL = TinyVLMConfig(d_model=32, n_layers=2, n_heads=2, max_len=96)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return write_benchmark(tmp_path_factory.mktemp("bench"), n_pool=16, n_anchors=12, n_test=1)


def score(bench, out, *extra):
    return run_cli("score", bench.pool, "--anchors", bench.anchors, "--out", out, *FAST, *extra)


def test_exact_writes_every_column_and_its_facts(bench, tmp_path):
    out = tmp_path / "scores.parquet"
    run = score(bench, out, "--method", "exact", "--anchor-folds", "5",
                "--anchor-group-field", "meta.task", "--sketch-dim", "16")  # fmt: skip
    assert run.rc == 0, run.err
    table = pq.read_table(out)
    facts = read_settings(out)
    assert str(table.schema.field("fold_utility").type) == "fixed_size_list<element: double>[5]"
    assert str(table.schema.field("sketch").type) == "fixed_size_list<element: float>[16]"
    assert facts["anchor_fold_sizes"] == [3, 3, 2, 2, 2] and facts["sketch_dim"] == 16
    assert facts["sketch_of"] == "gradient"
    groups, sizes = facts["anchor_groups"], facts["anchor_group_sizes"]
    tasks = [json.loads(line)["meta"]["task"] for line in Path(bench.anchors).open()]
    assert groups == sorted(set(tasks)) and sizes == [tasks.count(g) for g in groups]
    t = table.to_pydict()
    folds = np.array(t["fold_utility"])
    weights = np.array(facts["anchor_fold_sizes"]) / 12
    np.testing.assert_allclose(folds @ weights, t["utility"], rtol=1e-5, atol=1e-7)
    by_group = np.array(t["group_utility"])
    np.testing.assert_allclose(
        by_group @ (np.array(sizes) / 12), t["utility"], rtol=1e-5, atol=1e-7
    )


def test_columns_off_leave_a_plain_file(bench, tmp_path):
    out = tmp_path / "scores.parquet"
    # (--anchor-group-field '' alone now means "find the groups": --anchor-groups off)
    run = score(bench, out, "--anchor-folds", "0", "--anchor-groups", "off", "--sketch-dim", "0")
    assert run.rc == 0, run.err
    names = pq.read_schema(out).names
    assert names == ["id", "utility", "loss", "harmful", "tokens", "truncated"]
    facts = read_settings(out)
    assert not {"anchor_fold_sizes", "anchor_groups", "fold_utility", "sketch",
                "anchor_groups_found"} & set(facts)  # fmt: skip
    # and selection works on it as on any old score file
    picked = tmp_path / "picked.jsonl"
    run = run_cli("select", bench.pool, "--scores", out, "--keep", "50%", "--out", picked)
    assert run.rc == 0, run.err and len(picked.read_text().splitlines()) == 8


def test_an_estimator_without_the_columns_says_so(bench, tmp_path):
    out = tmp_path / "scores.parquet"
    run = score(bench, out, "--method", "first-order", "--anchor-group-field", "meta.task")
    assert run.rc == 0, run.err
    assert "fold_utility" not in pq.read_schema(out).names
    facts = read_settings(out)
    assert facts["fold_utility"] == "not computed by method first-order"
    assert facts["group_utility"] == "not computed by method first-order"
    assert facts["sketch"] == "not computed by method first-order" and facts["sketch_dim"] == 0
    assert "anchor_fold_sizes" not in facts


def test_anchors_with_a_bad_group_field_are_refused_by_line(bench, tmp_path):
    lines = Path(bench.anchors).read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    for i, row in enumerate(rows):
        row["group"] = ["a", "list"] if i == 4 else f"g{i % 2}"
    del rows[7]["group"]
    anchors = Path(bench.anchors).with_name("bad-group-anchors.jsonl")  # beside its images
    anchors.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "s.parquet"
    run = run_cli("score", bench.pool, "--anchors", anchors, "--out", out, *FAST)
    assert run.rc == 2
    assert "warm-up" not in run.out and not out.with_name(out.name + ".parts").exists()
    assert f"{anchors}:5" in run.err and "not list" in run.err
    assert f"{anchors}:8" in run.err and "has no 'group'" in run.err


# -- the anchor state, saved once ------------------------------------------------------
class Calls:
    """Counts calls of a real function and runs it."""

    def __init__(self, fn):
        self.fn, self.n = fn, 0

    def __call__(self, *args, **kwargs):
        self.n += 1
        return self.fn(*args, **kwargs)


@pytest.fixture(scope="module")
def saved_proxy(bench, tmp_path_factory):
    """A warmed-up tiny proxy saved to a folder, as a run's proxy folder is."""
    proxy = BuiltinProxy(SMALL, seed=0)
    pool = read_records(bench.pool).records
    warm_up(proxy, pool, WarmupSettings(min_samples=8, min_steps=3, batch_size=4), progress=False)
    folder = tmp_path_factory.mktemp("run") / "proxy"
    proxy.save(folder)
    return folder


def scores(scorer, records):
    rows = scorer(records)
    return rows.utility, rows.loss, rows.matrix("sketch")


@pytest.mark.parametrize("method", ["first-order", "curvature", "less"])
def test_saved_anchor_state_is_loaded_and_scores_identically(
    bench, saved_proxy, tmp_path, monkeypatch, method
):
    gradient = Calls(AnchorLoss.gradient)  # first-order and curvature: g_A at the shared step
    monkeypatch.setattr(AnchorLoss, "gradient", lambda self, p: gradient(self, p))
    ggn = Calls(curvature.GGNSketch.__init__)
    monkeypatch.setattr(curvature.GGNSketch, "__init__", lambda self, *a, **k: ggn(self, *a, **k))
    grads = Calls(less.per_sample_grads)  # LESS: the anchors' projected gradients
    monkeypatch.setattr(less, "per_sample_grads", grads)
    anchors = read_records(bench.anchors).records
    candidates = read_records(bench.pool).records[:6]
    settings = ScoreSettings(method=method, sketch_dim=8, less_dim=64)
    folder = tmp_path / "proxy"
    import shutil

    shutil.copytree(saved_proxy, folder)

    fresh = Scorer.build(load_saved_proxy(saved_proxy), anchors, settings)  # no state_dir
    first = Scorer.build(load_saved_proxy(folder), anchors, settings, state_dir=folder)
    assert not first.state_loaded and state_path(folder, method).is_file()
    before = (gradient.n, ggn.n, grads.n)
    second = Scorer.build(load_saved_proxy(folder), anchors, settings, state_dir=folder)
    assert second.state_loaded
    assert (gradient.n, ggn.n, grads.n) == before, "the anchor state was recomputed"
    expected = scores(fresh, candidates)
    for scorer in (first, second):
        got = scores(scorer, candidates)
        assert got[0] == expected[0] and got[1] == expected[1]  # identical, not just close
        if expected[2] is not None:
            assert np.array_equal(got[2], expected[2])
    assert second.facts() == fresh.facts()
    # other anchors are another state: recomputed, not loaded
    third = Scorer.build(load_saved_proxy(folder), anchors[:-1], settings, state_dir=folder)
    assert not third.state_loaded


def test_other_weights_are_another_state(bench, saved_proxy, tmp_path):
    anchors = read_records(bench.anchors).records
    settings = ScoreSettings(method="first-order")
    assert not Scorer.build(load_saved_proxy(saved_proxy), anchors, settings, tmp_path).state_loaded
    moved = load_saved_proxy(saved_proxy)
    with torch.no_grad():
        next(moved.model.parameters()).add_(1e-3)
    assert not Scorer.build(moved, anchors, settings, state_dir=tmp_path).state_loaded
    assert Scorer.build(moved, anchors, settings, state_dir=tmp_path).state_loaded


def test_workers_starting_together_compute_the_state_once(bench, saved_proxy, tmp_path):
    """Two processes build the same scorer at once on one folder: the lock lets one
    compute the state and the other load it."""
    code = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from stepsift.data import read_records
        from stepsift.engine.scorer import Scorer
        from stepsift.engine.scoring import ScoreSettings
        from stepsift.proxy.loading import load_saved_proxy
        proxy_dir, anchors = Path(sys.argv[1]), read_records(sys.argv[2]).records
        settings = ScoreSettings(method="curvature", sketch_dim=0)
        scorer = Scorer.build(load_saved_proxy(proxy_dir), anchors, settings, proxy_dir)
        print("loaded" if scorer.state_loaded else "computed")
        """
    )
    import shutil

    folder = tmp_path / "proxy"
    shutil.copytree(saved_proxy, folder)
    env_cmd = [sys.executable, "-c", code, str(folder), str(bench.anchors)]
    procs = [
        subprocess.Popen(env_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outcomes.append(out.strip())
    assert sorted(outcomes) == ["computed", "loaded"]


def test_shards_share_the_anchor_state(bench, tmp_path, monkeypatch):
    """The second shard loads the first one's anchor direction from the shared proxy
    folder, and the merged scores equal one process's."""
    gradient = Calls(AnchorLoss.gradient)
    monkeypatch.setattr(AnchorLoss, "gradient", lambda self, p: gradient(self, p))
    one = tmp_path / "one.parquet"
    assert score(bench, one, "--method", "first-order").rc == 0
    assert gradient.n == 1
    out = tmp_path / "scores.parquet"
    assert score(bench, out, "--method", "first-order", "--shard", "0/2").rc == 0
    assert gradient.n == 2 and state_path(shared_proxy_dir(out), "first-order").is_file()
    assert score(bench, out, "--method", "first-order", "--shard", "1/2").rc == 0
    assert gradient.n == 2, "shard 1 recomputed the anchor gradient"
    assert run_cli("merge", out).rc == 0
    a, b = pq.read_table(one).to_pydict(), pq.read_table(out).to_pydict()
    ua, ub = (
        dict(zip(a["id"], a["utility"], strict=True)),
        dict(zip(b["id"], b["utility"], strict=True)),
    )
    assert ua.keys() == ub.keys() and all(ua[k] == pytest.approx(ub[k], rel=1e-9) for k in ua)


def test_score_rows_carry_vector_columns_through_parquet(tmp_path):
    from stepsift.engine.store import ScoreRows, columns_of, write_scores

    rows = ScoreRows()
    folds, sketch = np.array([[0.4, 0.6], [-0.2, 0.0]]), [[1], [2]]
    rows.extend(["a", "b"], [0.5, -0.1], [1, 2], [3, 4], [0, 1], fold_utility=folds, sketch=sketch)
    rows.add(vars(rows))  # blocks, as the engines pass rows on
    assert len(rows) == 4 and rows.matrix("fold_utility").shape == (4, 2)
    with pytest.raises(ValueError, match="with and without a 'sketch' column"):
        rows.extend(["c"], [0.0], [0.0], [1], [False], fold_utility=[[0.0, 0.0]])
    assert len(rows) == 4 and len(rows.utility) == 4  # the refused call changed nothing
    out = tmp_path / "s.parquet"
    write_scores(rows, out, 0.0, {"anchor_fold_sizes": [1, 1]})
    table = pq.read_table(out)
    assert table.column("harmful").to_pylist() == [False, True, False, True]
    back = ScoreRows()
    back.add(columns_of(table))
    np.testing.assert_array_equal(back.matrix("fold_utility"), rows.matrix("fold_utility"))
    assert back.matrix("sketch").dtype == np.float32 and back.matrix("group_utility") is None
    with pytest.raises(ValueError, match="width 3"):
        back.extend(["z"], [0.0], [0.0], [1], [False], fold_utility=[[0.0] * 3], sketch=[[0.0]])
