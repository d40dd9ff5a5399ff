"""The first-order estimate against an explicit computation from flat gradients (float64)."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import pytest
import torch
from torch import Tensor
from utility_reference import anchor_mean, flat_grads, loss_alone, warm_briefly

from stepsift.proxy.builtin import BuiltinProxy
from stepsift.utility.exact import ExactUtility
from stepsift.utility.first_order import FirstOrderUtility
from stepsift.utility.steps import AdamStep, SGDStep, make_step_rule


def anchor_grad(proxy: BuiltinProxy, anchors, names: list[str]) -> Tensor:
    return torch.stack(flat_grads(proxy, anchors, names)).mean(0)


@pytest.mark.parametrize("mode", ["jvp", "ghost", "fd", "auto"])
def test_sgd_first_order_is_lr_times_gradient_inner_product(
    proxy, candidates, anchors, mode
) -> None:
    lr = 0.3
    names = list(proxy.step_parameters())
    g_a = anchor_grad(proxy, anchors, names)
    expected = np.array([lr * float(g_a @ g) for g in flat_grads(proxy, candidates, names)])
    est = FirstOrderUtility(proxy, proxy.collate(anchors), SGDStep(lr), mode=mode)
    result = est(proxy.collate(candidates))
    assert np.all(np.abs(expected) > 1e-8)
    rtol = 1e-5 if mode == "fd" else 1e-9  # finite differences carry truncation error
    np.testing.assert_allclose(result.utility.numpy(), expected, rtol=rtol)
    assert est.describe()["directional"] == ("jvp" if mode == "auto" else mode)
    with torch.no_grad():
        losses = [loss_alone(proxy, proxy.model, c).item() for c in candidates]
    np.testing.assert_allclose(result.loss.numpy(), losses, rtol=1e-10)


def test_first_order_agrees_with_exact_at_a_tiny_step(proxy, candidates, anchors) -> None:
    """As lr -> 0 the exact utility becomes its first-order term."""
    rule = SGDStep(1e-6)
    exact = ExactUtility(proxy, proxy.collate(anchors), rule)(proxy.collate(candidates))
    first = FirstOrderUtility(proxy, proxy.collate(anchors), rule)(proxy.collate(candidates))
    np.testing.assert_allclose(first.utility.numpy(), exact.utility.numpy(), rtol=1e-3)


def test_warm_adam_is_linearised_with_frozen_second_moment(proxy, candidates, anchors) -> None:
    """U ≈ [L_A(θ) - L_A(θ + c)] - <g_A(θ + c), J g_i>: c = Adam's update for a zero
    gradient (the warm momentum), J g = the rest of its update with v kept at β2 v0."""
    warm_briefly(proxy, candidates + anchors)
    rule = make_step_rule("adam", 1e-3, proxy, 0.0)
    assert isinstance(rule, AdamStep) and rule.state
    names = list(proxy.step_parameters())
    st = [rule.state[n] for n in names]
    t = int(st[0]["step"]) + 1
    m0 = torch.cat([s["exp_avg"].reshape(-1) for s in st])
    v0 = torch.cat([s["exp_avg_sq"].reshape(-1) for s in st])
    denom = (rule.beta2 * v0 / (1 - rule.beta2**t)).sqrt() + rule.eps
    step_size = rule.lr / (1 - rule.beta1**t)
    shared = -step_size * rule.beta1 * m0 / denom
    # the same model moved by the shared step, by hand
    moved = copy.deepcopy(proxy)
    with torch.no_grad():
        offset = 0
        for p in moved.model.parameters():
            p += shared[offset : offset + p.numel()].reshape(p.shape)
            offset += p.numel()
    constant = anchor_mean(proxy, proxy.model, anchors) - anchor_mean(moved, moved.model, anchors)
    g_a = anchor_grad(moved, anchors, names)
    expected = []
    for g in flat_grads(proxy, candidates, names):
        own = -step_size * (1 - rule.beta1) * g / denom
        expected.append(constant - float(g_a @ own))
    result = FirstOrderUtility(proxy, proxy.collate(anchors), rule)(proxy.collate(candidates))
    assert abs(constant) > 1e-6  # the shared step really moves the anchor loss
    np.testing.assert_allclose(result.utility.numpy(), expected, rtol=1e-8)


def test_fresh_adam_is_refused(proxy, anchors) -> None:
    with pytest.raises(ValueError, match="sign step"):
        FirstOrderUtility(proxy, proxy.collate(anchors), AdamStep(lr=1e-3))


class NoForwardAD(torch.autograd.Function):
    """An identity with a backward but no forward-mode rule, as fused kernels can be."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


class FusedKernelProxy(BuiltinProxy):
    def per_sample_loss(self, params: Mapping[str, Tensor], tensors: Mapping[str, Tensor]):
        return NoForwardAD.apply(super().per_sample_loss(params, tensors))


def test_auto_falls_back_to_ghost_products_then_finite_differences(
    proxy, candidates, anchors, monkeypatch
) -> None:
    """A model without forward-mode support is scored by ghost products read off its
    layers (exact), or, where its layers cannot be read, by finite differences."""
    fused = FusedKernelProxy(proxy.config)
    fused.model.load_state_dict(proxy.model.state_dict())
    fused.model.double()
    rule = SGDStep(0.3)
    with pytest.raises((RuntimeError, NotImplementedError)):
        FirstOrderUtility(fused, fused.collate(anchors), rule, mode="jvp")(
            fused.collate(candidates)
        )
    reference = FirstOrderUtility(proxy, proxy.collate(anchors), rule, mode="jvp")
    expected = reference(proxy.collate(candidates)).utility.numpy()
    auto = FirstOrderUtility(fused, fused.collate(anchors), rule, mode="auto")
    result = auto(fused.collate(candidates))
    assert auto.describe()["directional"] == "ghost"
    np.testing.assert_allclose(result.utility.numpy(), expected, rtol=1e-9)
    monkeypatch.setattr(fused, "rows_are_samples", lambda tensors: False)
    auto = FirstOrderUtility(fused, fused.collate(anchors), rule, mode="auto")
    result = auto(fused.collate(candidates))
    assert auto.describe()["directional"] == "fd"
    np.testing.assert_allclose(result.utility.numpy(), expected, rtol=1e-5)
