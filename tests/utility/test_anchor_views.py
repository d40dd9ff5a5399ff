"""Fold and group utilities: folds recombine to the utility, a group's utility is the
utility towards that group's anchors alone (checked against real torch.optim steps on a
deep-copied model), the fold assignment follows the contract, bad group fields are
reported by file:line, and `utility` itself is bit for bit what it is without views."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from utility_reference import RTOL, reference, sgd, warm_briefly

from stepsift.data.reader import DataValidationError
from stepsift.data.record import Source
from stepsift.utility.anchor_views import build_views, fold_assignment, group_labels
from stepsift.utility.exact import ExactUtility
from stepsift.utility.less import LessScore
from stepsift.utility.steps import SGDStep, make_step_rule


def grouped(anchors, labels):
    """The anchors with a `group` field, each on its own line of anchors.jsonl."""
    return [
        dataclasses.replace(a, metadata={"group": g}, source=Source(Path("anchors.jsonl"), i + 1))
        for i, (a, g) in enumerate(zip(anchors, labels, strict=True))
    ]


@pytest.fixture
def six_anchors(anchors, candidates):
    """Six anchors (the three anchors and three candidates), in two groups."""
    return grouped(anchors + candidates[:3], ["math", "vision", "math", "math", "vision", "text"])


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_folds_recombine_to_the_utility(proxy, candidates, six_anchors, strategy, optimizer):
    if optimizer == "adam":
        warm_briefly(proxy, candidates + six_anchors)
    rule = make_step_rule(optimizer, 0.5 if optimizer == "sgd" else None, proxy, 0.0)
    views = build_views(six_anchors, n_folds=4, seed=3)
    est = ExactUtility(proxy, proxy.collate(six_anchors), rule, strategy=strategy, views=views)
    result = est(proxy.collate(candidates))
    sizes = np.array(views.fold_sizes)
    assert sorted(sizes) == [1, 1, 2, 2] and result.fold_utility.shape == (5, 4)
    recombined = result.fold_utility.numpy() @ (sizes / sizes.sum())
    np.testing.assert_allclose(recombined, result.utility.numpy(), rtol=0, atol=1e-9)
    # the folds really differ from one another (they are not copies of the utility)
    assert np.ptp(result.fold_utility.numpy(), axis=1).min() > 1e-6


def test_utility_is_bit_for_bit_the_same_with_views(proxy, candidates, six_anchors):
    rule = SGDStep(lr=0.5)
    anchors = proxy.collate(six_anchors)
    batch = proxy.collate(candidates)
    for strategy in ("loop", "vmap"):
        plain = ExactUtility(proxy, anchors, rule, strategy=strategy)(batch)
        views = build_views(six_anchors, n_folds=3, seed=0)
        both = ExactUtility(proxy, anchors, rule, strategy=strategy, views=views, sketch_dim=8)
        rich = both(batch)
        assert torch.equal(plain.utility, rich.utility), strategy
        assert torch.equal(plain.loss, rich.loss), strategy
        assert plain.fold_utility is None and plain.sketch is None
        assert rich.group_utility.shape == (5, 3) and rich.sketch.shape == (5, 8)


def test_group_utility_equals_the_utility_towards_the_group_alone(proxy, candidates, six_anchors):
    """Each group's column equals a real SGD step on a deep-copied model, evaluated on
    that group's anchors only (utility_reference.reference)."""
    rule = SGDStep(lr=0.5)
    views = build_views(six_anchors, n_folds=0)
    assert views.groups == ("math", "text", "vision") and views.group_sizes == [3, 1, 2]
    est = ExactUtility(proxy, proxy.collate(six_anchors), rule, views=views)
    result = est(proxy.collate(candidates))
    assert result.fold_utility is None and result.group_utility.shape == (5, 3)
    for g, name in enumerate(views.groups):
        members = [a for a in six_anchors if a.metadata["group"] == name]
        expected, _ = reference(proxy, candidates, members, sgd(0.5))
        assert np.all(np.abs(expected) > 1e-8)
        np.testing.assert_allclose(result.group_utility[:, g].numpy(), expected, rtol=RTOL)


def test_less_folds_average_the_per_anchor_cosines(proxy, candidates, six_anchors):
    rule = SGDStep(lr=0.5)
    views = build_views(six_anchors, n_folds=2, seed=1)
    est = LessScore(proxy, proxy.collate(six_anchors), rule, dim=256, views=views)
    result = est(proxy.collate(candidates))
    sizes = np.array(views.fold_sizes)
    recombined = result.fold_utility.numpy() @ (sizes / sizes.sum())
    np.testing.assert_allclose(recombined, result.utility.numpy(), rtol=0, atol=1e-6)
    # a group of one anchor: its column is that anchor's own cosine with each candidate
    text = views.groups.index("text")
    alone = LessScore(proxy, proxy.collate(six_anchors[5:6]), rule, dim=256)
    np.testing.assert_allclose(
        result.group_utility[:, text].numpy(), alone(proxy.collate(candidates)).utility.numpy(),
        rtol=1e-5, atol=1e-6,
    )  # fmt: skip


def test_fold_assignment_follows_the_seeded_permutation():
    fold_of, k = fold_assignment(23, 5, seed=7)
    assert k == 5
    perm = torch.randperm(23, generator=torch.Generator().manual_seed(7)).tolist()
    assert [fold_of[a] for a in perm] == [p % 5 for p in range(23)]
    sizes = [fold_of.count(f) for f in range(5)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 23
    assert fold_assignment(23, 5, seed=8)[0] != fold_of  # the seed matters
    assert fold_assignment(3, 10, seed=0)[1] == 3  # K is capped at the number of anchors
    assert fold_assignment(3, 0, seed=0) == ((), 0)
    with pytest.raises(ValueError, match="anchor-folds"):
        fold_assignment(3, -1, seed=0)


def test_groups_come_only_from_anchors_that_carry_the_field(anchors):
    assert group_labels(anchors, "group") is None  # no anchor has it: no groups
    assert build_views(anchors, n_folds=2).group_of is None
    nested = [
        dataclasses.replace(a, metadata={"meta": {"task": t}})
        for a, t in zip(anchors, ["sum", 3, "sum"], strict=True)
    ]
    assert group_labels(nested, "meta.task") == ["sum", "3", "sum"]  # a dotted name reaches in


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (_MISSING := object(), "has no 'group' while other anchors do"),
        (None, "not null"),
        (["a", "b"], "not list"),
        ({"a": 1}, "not dict"),
        (True, "not bool"),
        (float("nan"), "finite"),
        ("  ", "empty string"),
    ],
)
def test_a_bad_group_is_reported_with_file_line_and_field(anchors, value, message):
    records = grouped(anchors, ["x", "y", "x"])
    meta = {} if value is _MISSING else {"group": value}
    records[1] = dataclasses.replace(records[1], metadata=meta)
    with pytest.raises(DataValidationError) as info:
        build_views(records)
    text = str(info.value)
    assert "anchors.jsonl:2" in text and "group" in text and message in text, text
    assert len(info.value.problems) == 1
