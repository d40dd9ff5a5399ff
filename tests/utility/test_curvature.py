"""The curvature-corrected estimate: its GGN sketch against the Gauss-Newton quadratic
form computed directly (logit JVPs and the softmax Hessian), in float64."""

from __future__ import annotations

import numpy as np
import torch
from torch.func import jvp
from utility_reference import warm_briefly

from stepsift.proxy.builtin import BuiltinProxy
from stepsift.utility.anchor_views import AnchorViews
from stepsift.utility.curvature import (
    DEFAULT_LABEL_DRAWS,
    DEFAULT_RANK,
    CurvatureUtility,
    GGNSketch,
)
from stepsift.utility.exact import ExactUtility
from stepsift.utility.first_order import FirstOrderUtility
from stepsift.utility.gradients import per_sample_grads
from stepsift.utility.steps import SGDStep, make_step_rule


def ggn_quadratic(proxy: BuiltinProxy, anchors, delta: dict) -> float:
    """δᵀ G_A δ = mean_a (1/T_a) Σ_t z_tᵀ (diag(p_t) - p_t p_tᵀ) z_t, z_t = J_t δ."""
    batch = proxy.collate(anchors)
    params = proxy.step_parameters()
    logits, z = jvp(lambda p: proxy.token_logits(p, batch.tensors), (params,), (delta,))
    p = logits.softmax(-1)
    per_token = (p * z * z).sum(-1) - (p * z).sum(-1) ** 2
    mask = batch.tensors["loss_mask"].double()
    return float(((per_token * mask).sum(1) / mask.sum(1)).mean())


def candidate_deltas(proxy, candidates, lr: float) -> dict:
    tensors = proxy.collate(candidates).tensors
    with torch.no_grad():
        grads, _ = per_sample_grads(proxy, proxy.step_parameters(), tensors)
    return SGDStep(lr)(grads)


def test_sketch_estimates_the_gauss_newton_quadratic(proxy, candidates, anchors) -> None:
    deltas = candidate_deltas(proxy, candidates, 1.0)
    expected = np.array(
        [ggn_quadratic(proxy, anchors, {n: d[i] for n, d in deltas.items()}) for i in range(5)]
    )
    params = proxy.step_parameters()
    sketch = GGNSketch(proxy, proxy.collate(anchors), params, label_draws=400, seed=0)
    assert not sketch.hashed and sketch.size == 400 * len(anchors)
    got = sketch.quadratic(deltas).numpy()
    assert np.all(expected > 0)
    np.testing.assert_allclose(got, expected, rtol=0.08)
    # hashed into far fewer buckets with random signs: still unbiased, a little noisier
    n_bytes = sum(p.numel() for p in params.values()) * 8 * 64
    hashed = GGNSketch(proxy, proxy.collate(anchors), params, 400, max_bytes=n_bytes, seed=1)
    assert hashed.hashed and hashed.size == 64
    np.testing.assert_allclose(hashed.quadratic(deltas).numpy(), expected, rtol=0.3)


def test_tiny_step_equals_the_exact_utility(proxy, candidates, anchors) -> None:
    rule = SGDStep(1e-6)
    exact = ExactUtility(proxy, proxy.collate(anchors), rule)(proxy.collate(candidates))
    est = CurvatureUtility(proxy, proxy.collate(anchors), rule)
    got = est(proxy.collate(candidates))
    np.testing.assert_allclose(got.utility.numpy(), exact.utility.numpy(), rtol=1e-3)
    np.testing.assert_allclose(got.loss.numpy(), exact.loss.numpy(), rtol=1e-10)
    expected_size = min(DEFAULT_RANK, DEFAULT_LABEL_DRAWS * len(anchors))
    assert est.describe()["ggn_sketch_size"] == expected_size


def test_second_order_term_is_the_sketched_quadratic(proxy, candidates, anchors) -> None:
    """U = -<g_A, δ> - ½ Σ_j (s_j·δ)²: the estimate minus its first-order part is exactly
    half the sketch's quadratic form, which is what carries the overshoot."""
    rule = SGDStep(0.5)
    est = CurvatureUtility(proxy, proxy.collate(anchors), rule)
    got = est(proxy.collate(candidates)).utility
    deltas = candidate_deltas(proxy, candidates, 0.5)
    linear = sum(d.reshape(5, -1) @ est.anchor_grad[n].reshape(-1) for n, d in deltas.items())
    torch.testing.assert_close(got, -linear - 0.5 * est.sketch.quadratic(deltas))
    assert torch.all(est.sketch.quadratic(deltas) > 0)


def test_warm_adam_tiny_step_equals_the_exact_utility(proxy, candidates, anchors) -> None:
    """With Adam from a warm state the expansion is taken around the shared momentum step
    (computed exactly); at a tiny lr the whole estimate matches the exact utility."""
    warm_briefly(proxy, candidates + anchors)
    rule = make_step_rule("adam", 1e-7, proxy, 0.0)
    exact = ExactUtility(proxy, proxy.collate(anchors), rule)(proxy.collate(candidates))
    est = CurvatureUtility(proxy, proxy.collate(anchors), rule)
    assert abs(est.offset) > 0  # the shared step is really there
    got = est(proxy.collate(candidates))
    np.testing.assert_allclose(got.utility.numpy(), exact.utility.numpy(), rtol=1e-3)


def test_rank_cut_keeps_the_top_curvature_directions(proxy, candidates, anchors) -> None:
    """The rank-r sketch gives δᵀ Sᵀ U_r U_rᵀ S δ, with U_r the top eigenvectors of S Sᵀ,
    computed here with numpy from the uncut sketch."""
    params = proxy.step_parameters()
    full = GGNSketch(proxy, proxy.collate(anchors), params, label_draws=8, seed=3)
    cut = GGNSketch(proxy, proxy.collate(anchors), params, label_draws=8, seed=3, rank=5)
    assert full.size == 24 and cut.size == 5 and 0 < cut.trace_kept < 1
    s = np.concatenate([v.reshape(full.size, -1).numpy() for v in full.vectors.values()], 1)
    _, eigvecs = np.linalg.eigh(s @ s.T)
    w = eigvecs[:, -5:].T @ s
    deltas = candidate_deltas(proxy, candidates, 1.0)
    flat = np.concatenate([d.reshape(5, -1).numpy() for d in deltas.values()], 1)
    expected = ((flat @ w.T) ** 2).sum(1)
    np.testing.assert_allclose(cut.quadratic(deltas).numpy(), expected, rtol=1e-8)
    assert np.all(expected <= full.quadratic(deltas).numpy() * (1 + 1e-12))


def _views() -> AnchorViews:
    # two folds and two groups over the three anchors
    return AnchorViews(3, 2, (0, 1, 0), (0, 1, 0), ("arith", "picture"))


def _exact_and_curvature_views(proxy, candidates, anchors, rule):
    views = _views()
    batch, cands = proxy.collate(anchors), proxy.collate(candidates)
    exact = ExactUtility(proxy, batch, rule, views=views)(cands)
    est = CurvatureUtility(proxy, batch, rule, views=views)
    return exact, est, est(cands)


def test_view_utilities_match_exact_at_a_tiny_step(proxy, candidates, anchors) -> None:
    """Each fold's and group's utility is its own expansion; at a tiny SGD step they all
    equal the exact per-view utilities (the mean loss drop over the view's anchors)."""
    exact, est, got = _exact_and_curvature_views(proxy, candidates, anchors, SGDStep(1e-6))
    assert est.columns == {"fold_utility", "group_utility"}
    assert got.group_utility.shape == (5, 2) and got.fold_utility.shape == (5, 2)
    np.testing.assert_allclose(got.group_utility.numpy(), exact.group_utility.numpy(), rtol=1e-3)
    np.testing.assert_allclose(got.fold_utility.numpy(), exact.fold_utility.numpy(), rtol=1e-3)
    # the views do not change the whole-anchor utility
    plain = CurvatureUtility(proxy, proxy.collate(anchors), SGDStep(1e-6))
    torch.testing.assert_close(got.utility, plain(proxy.collate(candidates)).utility)


def test_view_utilities_under_warm_adam(proxy, candidates, anchors) -> None:
    warm_briefly(proxy, candidates + anchors)
    rule = make_step_rule("adam", 1e-7, proxy, 0.0)
    exact, _, got = _exact_and_curvature_views(proxy, candidates, anchors, rule)
    np.testing.assert_allclose(got.group_utility.numpy(), exact.group_utility.numpy(), rtol=1e-3)


def test_view_utility_is_its_own_second_order_expansion(proxy, candidates, anchors) -> None:
    """At a large step each view's value is offset - <g_v, δ> - ½ δᵀ G_v δ with its own
    anchor gradient and sketch (the 'picture' group is anchor a1 alone)."""
    rule = SGDStep(0.5)
    _, est, got = _exact_and_curvature_views(proxy, candidates, anchors, rule)
    deltas = candidate_deltas(proxy, candidates, 0.5)
    alone = CurvatureUtility(proxy, proxy.collate(anchors).take([1]), rule)
    linear = sum(d.reshape(5, -1) @ alone.anchor_grad[n].reshape(-1) for n, d in deltas.items())
    quad = est.view_curvature.sketches[3].quadratic(deltas)  # folds 0, 1, then groups 0, 1
    torch.testing.assert_close(got.group_utility[:, 1], -linear - 0.5 * quad)
    assert torch.all(quad > 0)


def test_view_state_round_trip(proxy, candidates, anchors) -> None:
    """A worker that loads the exported state scores the views exactly as the builder."""
    _, est, got = _exact_and_curvature_views(proxy, candidates, anchors, SGDStep(0.1))
    loaded = CurvatureUtility(
        proxy, proxy.collate(anchors), SGDStep(0.1), views=_views(), state=est.export_state()
    )
    again = loaded(proxy.collate(candidates))
    torch.testing.assert_close(again.group_utility, got.group_utility)
    torch.testing.assert_close(again.fold_utility, got.fold_utility)


def test_views_that_would_not_fit_the_memory_cap_are_left_out(proxy, candidates, anchors) -> None:
    """On a model too large for per-view expansions the estimator still scores, without
    the view columns, and says why."""
    params = proxy.step_parameters()
    one_vector = sum(p.numel() * p.element_size() for p in params.values())
    est = CurvatureUtility(
        proxy, proxy.collate(anchors), SGDStep(0.1), views=_views(), max_bytes=3 * one_vector
    )
    assert est.columns == frozenset() and est.view_curvature is None
    assert "per-view curvature needs" in est.describe()["views_skipped"]
    got = est(proxy.collate(candidates))
    assert got.group_utility is None and got.fold_utility is None
    assert torch.all(torch.isfinite(got.utility))


def test_streamed_sketch_bounds_its_error_by_frequent_directions(
    proxy, candidates, anchors
) -> None:
    """The streamed (frequent-directions) rank-r sketch never overstates the full sketch's
    quadratic form, and understates it by at most ‖S‖_F² ‖δ‖² (1/(2r+1) + 1/(r+1)): the
    frequent-directions shrinks of the 2r-row buffer, then the cut to r directions. With
    chunk 1 the buffer really is shrunk as the rows arrive."""
    params = proxy.step_parameters()
    full = GGNSketch(proxy, proxy.collate(anchors), params, label_draws=8, seed=3)
    streamed = GGNSketch(
        proxy, proxy.collate(anchors), params, label_draws=8, seed=3, chunk=1, rank=3,
        streaming=True,
    )  # fmt: skip
    assert streamed.streamed and streamed.size == 3 and streamed.shrunk > 0
    deltas = candidate_deltas(proxy, candidates, 1.0)
    exact = full.quadratic(deltas).numpy()
    got = streamed.quadratic(deltas).numpy()
    frob = sum(float((v.double() ** 2).sum()) for v in full.vectors.values())
    norms = sum((d.reshape(5, -1).double() ** 2).sum(1) for d in deltas.values()).numpy()
    assert np.all(got <= exact * (1 + 1e-9))
    assert np.all(exact - got <= frob * norms * (1 / 7 + 1 / 4))
    assert 0 < streamed.trace_kept < 1


def test_a_sketch_that_fits_too_few_buckets_is_left_out(proxy, candidates, anchors) -> None:
    """Under MIN_BUCKETS hashed vectors the quadratic term would be noise: curvature then
    scores the first-order expansion around the shared step, and says why."""
    params = proxy.step_parameters()
    one_vector = sum(p.numel() * p.element_size() for p in params.values())
    rule = SGDStep(0.1)
    est = CurvatureUtility(proxy, proxy.collate(anchors), rule, max_bytes=3 * one_vector)
    assert est.sketch.size == 0 and "fits 3 vector(s)" in est.describe()["ggn_dropped"]
    got = est(proxy.collate(candidates)).utility.numpy()
    first = FirstOrderUtility(proxy, proxy.collate(anchors), rule)(proxy.collate(candidates))
    np.testing.assert_allclose(got, first.utility.numpy(), rtol=1e-9)
    again = CurvatureUtility(proxy, proxy.collate(anchors), rule, state=est.export_state())
    assert again.sketch.dropped == est.sketch.dropped
    enough = CurvatureUtility(proxy, proxy.collate(anchors), rule, max_bytes=8 * one_vector)
    assert enough.sketch.size == 8 and "ggn_dropped" not in enough.describe()


def test_one_pass_of_label_draws_sets_up_the_whole_set_and_every_view(
    proxy, candidates, anchors, monkeypatch
) -> None:
    """The views' sketches take their anchors' share of the whole set's label draws: the
    set-up draws as many sampled-label gradients with two folds and two groups as without
    any view, and a view whose anchors are the whole set gets the whole set's sketch."""
    import stepsift.utility.ggn_sketch as ggn_sketch

    calls = []
    real = ggn_sketch.per_sample_grads

    def counted(proxy, params, tensors, *rest):
        calls.append(len(tensors["labels"]))
        return real(proxy, params, tensors, *rest)

    monkeypatch.setattr(ggn_sketch, "per_sample_grads", counted)
    batch, rule = proxy.collate(anchors), SGDStep(0.5)
    CurvatureUtility(proxy, batch, rule, label_draws=4)
    alone = sum(calls)
    calls.clear()
    whole_as_view = AnchorViews(3, 0, (), (0, 0, 0), ("all",))
    est = CurvatureUtility(proxy, batch, rule, label_draws=4, views=_views())
    assert sum(calls) == alone == 4 * len(anchors)
    # one group holding every anchor: its utility is the whole set's, term for term
    est = CurvatureUtility(proxy, batch, rule, label_draws=4, views=whole_as_view, rank=None)
    got = est(proxy.collate(candidates))
    np.testing.assert_allclose(got.group_utility[:, 0].numpy(), got.utility.numpy(), rtol=1e-9)
