"""Harmful flags from two witnesses (select/harmful.py `evidence`, select/misfit.py): the
step hurts the anchors beyond their noise, and the loss misfits the candidate's kind."""

from __future__ import annotations

import numpy as np
from cli_helpers import run_cli
from score_files import write_pool, write_score_file

from stepsift.select.harmful import Policy, harmful_flags
from stepsift.select.misfit import candidate_kinds, loss_z_within_kind
from stepsift.select.score_data import read_score_data


def test_loss_is_judged_within_its_kind_only() -> None:
    # kind 0: losses near 0.2, one at 0.9; kind 1: losses near 2.0 (a harder format)
    loss = np.r_[0.2 + 0.01 * np.arange(20), 0.9, 2.0 + 0.01 * np.arange(20)]
    kinds = np.r_[np.zeros(21, int), np.ones(20, int)]
    z = loss_z_within_kind(loss, kinds)
    assert z[20] > 5  # the outlier of the easy kind (8.1: 0.9 against 0.3 ± 0.07)
    assert np.all(np.abs(z[21:]) < 2)  # the hard kind's own spread: no outlier there
    assert loss_z_within_kind(loss, np.zeros(41, int))[20] < 2  # pooled, the outlier hides
    assert np.all(loss_z_within_kind(np.ones(5), np.zeros(5, int)) == 0)  # no spread


def test_kinds_come_from_the_sketch_directions() -> None:
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(3, 16))
    truth = np.arange(1200) % 3
    sketch = directions[truth] * rng.uniform(0.1, 5, size=(1200, 1)) + 0.1 * rng.normal(
        size=(1200, 16)
    )
    kinds = candidate_kinds(sketch, 1200)
    assert len(np.unique(kinds)) == 6  # min(10, 1200 // 200)
    # each found kind holds one true kind (k-means may split a true kind, never mix them)
    for k in np.unique(kinds):
        assert len(np.unique(truth[kinds == k])) == 1
    assert np.all(candidate_kinds(None, 1200) == 0)
    assert np.all(candidate_kinds(sketch[:300], 300) == 0)  # too few for two kinds


def planted_pool(seed: int = 1):
    """600 candidates of two formats (a hard one, loss ~2; an easy one, loss ~0.3), 10 anchor
    folds. Planted: 40 wrong ones (loss high for their format, utility clearly < 0), 60 hard
    clean ones with utility clearly < 0 (unhelpful, not wrong), 40 with a high loss and a
    positive utility."""
    rng = np.random.default_rng(seed)
    n = 600
    hard = np.arange(n) < 300
    directions = rng.normal(size=(2, 8))
    sketch = directions[hard.astype(int)] + 0.05 * rng.normal(size=(n, 8))
    loss = np.where(hard, 2.0, 0.3) * (1 + 0.05 * rng.normal(size=n))
    true_u = rng.normal(0.5, 0.2, size=n)
    wrong = np.zeros(n, bool)
    wrong[rng.choice(n, 40, replace=False)] = True
    true_u[wrong] = -1.0
    loss[wrong] *= 1.6
    unhelpful = hard & ~wrong & (np.arange(n) % 5 == 0)
    true_u[unhelpful] = -1.0
    odd_but_good = ~wrong & ~hard & (np.arange(n) % 7 == 0)
    loss[odd_but_good] *= 1.6
    folds = true_u[:, None] + 0.1 * rng.normal(size=(n, 10))
    return folds, loss, sketch, wrong


def test_evidence_flags_the_wrong_not_the_unhelpful_nor_the_odd_but_good(tmp_path) -> None:
    folds, loss, sketch, wrong = planted_pool()
    path = tmp_path / "s.parquet"
    write_score_file(path, folds.mean(axis=1), fold_utility=folds, sketch=sketch)
    # the helper writes loss 1.0 everywhere: put the planted losses in
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    table = table.set_column(table.column_names.index("loss"), "loss", pa.array(loss))
    pq.write_table(table, path)
    data = read_score_data(path)
    flags, line = harmful_flags(data, Policy())  # auto: evidence, the file has folds
    assert "misfit their kind" in line and "3 kinds" in line  # min(10, 600 // 200)
    assert flags[wrong].mean() > 0.9  # the wrong ones are found
    assert wrong[flags].mean() > 0.9  # and the flags are believable
    calibrated, _ = harmful_flags(data, Policy(harmful="calibrated"))
    assert calibrated.sum() > 2 * flags.sum()  # negative utility alone flags the unhelpful too
    assert wrong[calibrated].mean() < 0.5
    ids = data.ids
    write_pool(tmp_path / "pool.jsonl", ids)
    run = run_cli("select", tmp_path / "pool.jsonl", "--scores", path, "--keep", "100%",
                  "--drop-harmful", "--out", tmp_path / "o.jsonl")  # fmt: skip
    assert run.rc == 0, run.err
    assert f"dropped as harmful: {int(flags.sum())}" in run.out


def test_evidence_without_folds_uses_the_sign_and_needs_a_loss(tmp_path) -> None:
    utility = np.r_[-np.ones(300), np.ones(300)]
    path = tmp_path / "s.parquet"
    write_score_file(path, utility)  # loss 1.0 everywhere: nothing misfits
    flags, line = harmful_flags(read_score_data(path), Policy(harmful="evidence"))
    assert flags.sum() == 0 and "utility < 0" in line and "300 hurt the anchors" in line
