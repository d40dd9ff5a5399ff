"""bf16 autocast for the candidates' per-sample gradients: the gradients come back in the
parameters' dtype, close to (but not equal to) full precision, whichever way they are
taken; the fast estimators use it for the candidate pass only, so their anchor state is
unchanged; exact refuses it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from utility_reference import SMALL, make_record

from stepsift.proxy.builtin import BuiltinProxy
from stepsift.proxy.tiny_vlm import TinyVLMConfig
from stepsift.utility.curvature import CurvatureUtility
from stepsift.utility.gradients import per_sample_grads
from stepsift.utility.less import LessScore
from stepsift.utility.registry import check_grad_autocast, make_estimator
from stepsift.utility.steps import SGDStep


@pytest.fixture
def proxy32() -> BuiltinProxy:
    """autocast leaves float64 alone: these tests need the float32 proxy users run."""
    return BuiltinProxy(TinyVLMConfig(**SMALL), seed=0)


@pytest.fixture
def texts() -> list:
    return [
        make_record(f"t{i}", f"What is {i} plus {3 * i}?", f"It is {4 * i}. " * (i % 3 + 1))
        for i in range(12)
    ]


def relative_error(a: dict, b: dict) -> float:
    num = sum(((a[n].double() - b[n].double()) ** 2).sum() for n in b)
    return float((num / sum((b[n].double() ** 2).sum() for n in b)).sqrt())


@pytest.mark.parametrize("mode", ["auto", "read-off"])
def test_bf16_gradients_are_close_in_the_parameters_dtype(proxy32, texts, mode) -> None:
    proxy32.per_sample_mode = mode
    params = proxy32.step_parameters()
    tensors = proxy32.collate(texts).tensors
    full, full_loss = per_sample_grads(proxy32, params, tensors)
    half, half_loss = per_sample_grads(proxy32, params, tensors, "bfloat16")
    assert all(half[n].dtype == torch.float32 for n in params) and half_loss.dtype == torch.float32
    err = relative_error(half, full)
    assert 1e-5 < err < 2e-2  # really bf16 (not a no-op), still 2 good digits
    np.testing.assert_allclose(half_loss.numpy(), full_loss.numpy(), rtol=2e-2)
    if mode == "read-off":  # the read-off's first-batch check passed under bf16
        assert proxy32._tap_plans[tuple(params)] is not None


def test_curvature_under_bf16_ranks_like_full_precision(proxy32, texts) -> None:
    anchors = proxy32.collate(texts[:4])
    batch = proxy32.collate(texts[4:])
    rule = SGDStep(0.05)
    full = CurvatureUtility(proxy32, anchors, rule)
    half = CurvatureUtility(proxy32, anchors, rule, grad_autocast="bfloat16")
    for name in ("shared", "anchor_grad"):  # the anchor state is not autocast
        for n, v in full.export_state()[name].items():
            assert torch.equal(v, half.export_state()[name][n])
    u_full, u_half = full(batch).utility.numpy(), half(batch).utility.numpy()
    assert not np.array_equal(u_full, u_half)
    assert spearmanr(u_full, u_half).statistic > 0.95
    assert half.describe()["grad_autocast"] == "bfloat16"
    assert "grad_autocast" not in full.describe()


def test_less_under_bf16_keeps_its_cosines(proxy32, texts) -> None:
    anchors, batch = proxy32.collate(texts[:4]), proxy32.collate(texts[4:])
    rule = SGDStep(0.05)
    full = LessScore(proxy32, anchors, rule, dim=64)(batch).utility.numpy()
    half = LessScore(proxy32, anchors, rule, dim=64, grad_autocast="bfloat16")
    half = half(batch).utility.numpy()
    np.testing.assert_allclose(half, full, atol=2e-2)
    assert not np.array_equal(full, half)


def test_methods_without_candidate_gradients_refuse_autocast(proxy32, texts) -> None:
    anchors = proxy32.collate(texts[:2])
    for method in ("exact", "first-order", "forward", "anchor-subsample"):
        with pytest.raises(ValueError, match=f"not to --method {method}"):
            make_estimator(method, proxy32, anchors, SGDStep(0.01), grad_autocast="bfloat16")
    with pytest.raises(ValueError, match="unknown grad autocast 'float16'"):
        check_grad_autocast("curvature", "float16")
