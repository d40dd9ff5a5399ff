"""LESS: projected cosines approach the true cosines; the projection is seeded and blocked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from utility_reference import flat_grads

from stepsift.utility import less
from stepsift.utility.less import LessScore, RademacherProjection
from stepsift.utility.steps import AdamStep, SGDStep


def test_regenerated_blocks_equal_the_cached_matrix(monkeypatch) -> None:
    monkeypatch.setattr(less, "BLOCK_ROWS", 7)  # several blocks, the last one short
    x = torch.randn(3, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cached = RademacherProjection(40, 16, seed=5)
    signs = RademacherProjection(40, 16, seed=5, cache_bytes=40 * 16)
    streamed = RademacherProjection(40, 16, seed=5, cache_bytes=0)
    assert cached.cached[0].dtype == torch.float32 and signs.cached[0].dtype == torch.int8
    assert streamed.cached is None
    torch.testing.assert_close(cached(x), streamed(x), rtol=0, atol=0)
    torch.testing.assert_close(signs(x), streamed(x), rtol=0, atol=0)
    other = RademacherProjection(40, 16, seed=6)(x)
    assert not torch.allclose(other, cached(x))
    # inner products are preserved in expectation, E[R R^T] / dim = I; the error of one
    # draw is about |x|^2 sqrt(2 / dim) = 40 * 0.0045 here
    big = RademacherProjection(40, 100_000, seed=0)
    np.testing.assert_allclose(big(x) @ big(x).T, x @ x.T, atol=0.6)


def test_sgd_less_score_is_the_mean_cosine_with_the_anchors(proxy, candidates, anchors) -> None:
    """With a projection much wider than the model is deep in samples, the projected cosine
    matches the exact mean cosine of flat gradients closely."""
    names = list(proxy.step_parameters())
    cand = flat_grads(proxy, candidates, names)
    anch = flat_grads(proxy, anchors, names)
    exact = np.array(
        [np.mean([float(torch.cosine_similarity(c, a, dim=0)) for a in anch]) for c in cand]
    )
    est = LessScore(proxy, proxy.collate(anchors), SGDStep(0.1), dim=4096, seed=1)
    got = est(proxy.collate(candidates)).utility.numpy()
    np.testing.assert_allclose(got, exact, atol=0.05)
    assert est.describe()["less_dim"] == 4096


def test_less_refuses_adam_without_state(proxy, anchors) -> None:
    with pytest.raises(ValueError, match="warm-up"):
        LessScore(proxy, proxy.collate(anchors), AdamStep(lr=1e-3), dim=64)
