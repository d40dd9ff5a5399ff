"""anchor-subsample: exact's step, evaluated on a seeded random k of the anchors."""

from __future__ import annotations

import pytest
import torch

from stepsift.utility.exact import ExactUtility
from stepsift.utility.gradients import per_sample_grads
from stepsift.utility.registry import make_estimator
from stepsift.utility.steps import SGDStep
from stepsift.utility.subsample import AnchorSubsampleUtility, anchor_subset


def test_the_subset_is_seeded_sorted_and_bounded():
    assert anchor_subset(100, 16, 3) == anchor_subset(100, 16, 3)
    assert anchor_subset(100, 16, 3) != anchor_subset(100, 16, 4)
    rows = anchor_subset(100, 16, 3)
    assert rows == sorted(set(rows)) and len(rows) == 16 and max(rows) < 100
    assert anchor_subset(5, 16, 0) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="--exact-anchors must be at least 1, got 0"):
        anchor_subset(5, 0, 0)


def test_it_is_the_mean_of_exacts_per_anchor_drops_over_its_rows(proxy, candidates, anchors):
    more = anchors * 2  # six anchors, so two of them are a real subset
    batch, anchor_batch = proxy.collate(candidates), proxy.collate(more)
    rule = SGDStep(lr=0.05)
    sub = AnchorSubsampleUtility(proxy, anchor_batch, rule, exact_anchors=2, seed=1)
    rows = anchor_subset(6, 2, 1)
    # exact's own per-anchor losses before and after each candidate's step
    reference = ExactUtility(proxy, anchor_batch, rule)
    params = proxy.step_parameters()
    _, before = reference.anchor_loss.per_anchor(params)
    grads, _ = per_sample_grads(proxy, params, batch.tensors)
    deltas = rule(grads)
    want = []
    for i in range(len(candidates)):
        stepped = {n: params[n] + deltas[n][i] for n in params}
        _, after = reference.anchor_loss.per_anchor(stepped)
        want.append(float((before - after)[rows].mean()))
    got = sub(batch).utility
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-10, atol=0)
    assert sub.describe() == {"exact_anchors": 2, "of_anchors": 6}


def test_all_anchors_is_exact_and_the_registry_passes_k_and_seed(proxy, candidates, anchors):
    batch, anchor_batch = proxy.collate(candidates), proxy.collate(anchors)
    rule = SGDStep(lr=0.05)
    whole = make_estimator("anchor-subsample", proxy, anchor_batch, rule, exact_anchors=99)
    torch.testing.assert_close(
        whole(batch).utility, ExactUtility(proxy, anchor_batch, rule)(batch).utility
    )
    two = make_estimator("anchor-subsample", proxy, anchor_batch, rule, exact_anchors=2, seed=5)
    assert two.rows == anchor_subset(3, 2, 5)
