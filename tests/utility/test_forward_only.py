"""The forward-only estimate against its expansion computed from flat gradients (float64):
its linear term is first-order's, its curvature term the sketched quadratic of the
linearised step, kept to the top K directions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from utility_reference import flat_grads, warm_briefly

from stepsift.utility.curvature import CurvatureUtility
from stepsift.utility.exact import ExactUtility
from stepsift.utility.first_order import FirstOrderUtility, preconditioner
from stepsift.utility.forward_only import ForwardUtility
from stepsift.utility.ggn_sketch import GGNSketch
from stepsift.utility.steps import SGDStep, make_step_rule


def sketch_matrix(proxy, anchors, names: list[str]) -> np.ndarray:
    """The GGN sketch the estimator draws (same seed and label draws), uncut, as rows."""
    params = proxy.step_parameters()
    sketch = GGNSketch(proxy, proxy.collate(anchors), params, 16, seed=0)
    return torch.cat([sketch.vectors[n].reshape(sketch.size, -1) for n in names], dim=1).numpy()


@pytest.mark.parametrize("k", [1, 3])
def test_sgd_forward_is_the_top_k_expansion(proxy, candidates, anchors, k) -> None:
    lr = 0.2
    names = list(proxy.step_parameters())
    grads = np.stack([g.numpy() for g in flat_grads(proxy, candidates, names)])
    g_a = np.stack([g.numpy() for g in flat_grads(proxy, anchors, names)]).mean(0)
    a = lr * sketch_matrix(proxy, anchors, names)  # A = W P, P = lr
    _, sigma, vt = np.linalg.svd(a, full_matrices=False)
    top = sigma[:k, None] * vt[:k]  # d_k = σ_k v_k
    expected = lr * grads @ g_a - 0.5 * ((grads @ top.T) ** 2).sum(1)
    est = ForwardUtility(proxy, proxy.collate(anchors), SGDStep(lr), directions=k)
    got = est(proxy.collate(candidates)).utility.numpy()
    assert np.all(np.abs(grads @ top.T) > 1e-8)  # every direction really contributes
    np.testing.assert_allclose(got, expected, rtol=1e-8)
    assert est.describe()["curvature_directions"] == k
    assert 0 < est.describe()["curvature_share_kept"] < 1


def test_all_directions_under_sgd_give_curvatures_expansion(proxy, candidates, anchors) -> None:
    """Under SGD the linearised step is the step, so with every sketch direction kept the
    forward-only estimate is curvature's (whose quadratic uses per-sample gradients)."""
    rule = SGDStep(0.5)
    batch, anchor_batch = proxy.collate(candidates), proxy.collate(anchors)
    curvature = CurvatureUtility(proxy, anchor_batch, rule, label_draws=16)(batch).utility
    forward = ForwardUtility(proxy, anchor_batch, rule, directions=10_000)(batch).utility
    np.testing.assert_allclose(forward.numpy(), curvature.numpy(), rtol=1e-8)


def test_warm_adam_uses_the_preconditioned_step(proxy, candidates, anchors) -> None:
    """K = 0 is first-order's Adam linearisation; every K adds -½ Σ_k <d_k, g>², the
    directions taken from the sketch scaled by Adam's frozen-v preconditioner."""
    warm_briefly(proxy, candidates + anchors)
    rule = make_step_rule("adam", 1e-3, proxy, 0.0)
    batch, anchor_batch = proxy.collate(candidates), proxy.collate(anchors)
    first = FirstOrderUtility(proxy, anchor_batch, rule)(batch).utility.numpy()
    zero = ForwardUtility(proxy, anchor_batch, rule, directions=0)
    np.testing.assert_allclose(zero(batch).utility.numpy(), first, rtol=1e-9)

    names = list(proxy.step_parameters())
    grads = np.stack([g.numpy() for g in flat_grads(proxy, candidates, names)])
    precond = preconditioner(rule, proxy.step_parameters())
    p = torch.cat([precond[n].reshape(-1) for n in names]).numpy()
    # the curvature directions (drawn at θ + c) from the estimator; the products by hand
    est = ForwardUtility(proxy, anchor_batch, rule, directions=2)
    own = grads @ torch.cat([est.tangents[n][1:].reshape(2, -1) for n in names], 1).numpy().T
    np.testing.assert_allclose(est(batch).utility.numpy(), first - 0.5 * (own**2).sum(1), rtol=1e-8)
    # and the directions are preconditioned: each lies in the row space of W P
    tangents = torch.cat([est.tangents[n][1:].reshape(2, -1) for n in names], 1).numpy()
    assert np.all(np.abs(tangents[:, p == 0]) == 0)


def test_jvp_ghost_products_and_finite_differences_agree(proxy, candidates, anchors) -> None:
    rule = SGDStep(0.3)
    batch, anchor_batch = proxy.collate(candidates), proxy.collate(anchors)
    jvp = ForwardUtility(proxy, anchor_batch, rule, directions=2, mode="jvp")
    ghost = ForwardUtility(proxy, anchor_batch, rule, directions=2, mode="ghost")
    fd = ForwardUtility(proxy, anchor_batch, rule, directions=2, mode="fd")
    want = jvp(batch).utility.numpy()
    np.testing.assert_allclose(ghost(batch).utility.numpy(), want, rtol=1e-9)
    # finite differences err by about h² in absolute terms: a value near 0 needs an atol
    np.testing.assert_allclose(fd(batch).utility.numpy(), want, rtol=1e-5, atol=1e-5)
    assert [e.describe()["directional"] for e in (jvp, ghost, fd)] == ["jvp", "ghost", "fd"]


def test_tiny_step_tracks_exact_and_state_round_trips(proxy, candidates, anchors) -> None:
    rule = SGDStep(1e-6)
    batch, anchor_batch = proxy.collate(candidates), proxy.collate(anchors)
    est = ForwardUtility(proxy, anchor_batch, rule)
    got = est(batch).utility.numpy()
    exact = ExactUtility(proxy, anchor_batch, rule)(batch).utility.numpy()
    np.testing.assert_allclose(got, exact, rtol=1e-3)
    loaded = ForwardUtility(proxy, anchor_batch, rule, state=est.export_state())
    np.testing.assert_array_equal(loaded(batch).utility.numpy(), got)
    assert loaded.directions == est.directions


def test_bad_settings_are_refused(proxy, anchors) -> None:
    with pytest.raises(ValueError, match="directions"):
        ForwardUtility(proxy, proxy.collate(anchors), SGDStep(0.1), directions=-1)
    with pytest.raises(ValueError, match="mode"):
        ForwardUtility(proxy, proxy.collate(anchors), SGDStep(0.1), mode="magic")


def test_a_sketch_over_the_memory_cap_is_streamed_and_never_overstates(
    proxy, candidates, anchors
) -> None:
    """Past max_bytes the W P sketch goes through a frequent-directions buffer of 2K rows:
    its quadratic understates ||W P g||² (never more), where hashing would add noise."""
    rule = SGDStep(0.5)
    batch, anchor_batch = proxy.collate(candidates), proxy.collate(anchors)
    n_bytes = sum(p.numel() * p.element_size() for p in proxy.step_parameters().values())
    small = ForwardUtility(proxy, anchor_batch, rule, directions=2, max_bytes=8 * n_bytes)
    assert small.describe()["curvature_sketch"] == "streamed"
    whole = ForwardUtility(proxy, anchor_batch, rule, directions=10_000)
    assert "curvature_sketch" not in whole.describe()
    linear = ForwardUtility(proxy, anchor_batch, rule, directions=0)(batch).utility
    streamed_term = (linear - small(batch).utility).numpy()
    full_term = (linear - whole(batch).utility).numpy()
    assert np.all(streamed_term > 0)
    assert np.all(streamed_term <= full_term * (1 + 1e-9))
