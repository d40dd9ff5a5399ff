"""Per-sample gradients of the candidates' own losses, vectorised over the batch where
the proxy allows it."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from stepsift.proxy.base import Params, Proxy


def single(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Give vmap's per-sample slices their batch dim back."""
    return {k: v.unsqueeze(0) for k, v in tensors.items()}


def per_sample_grads(
    proxy: Proxy, params: Params, tensors: Mapping[str, Tensor]
) -> tuple[Params, Tensor]:
    """Each sample's gradient (every tensor gains a leading sample dim) and its loss."""

    def loss_one(p: Params, one: Mapping[str, Tensor]) -> Tensor:
        return proxy.per_sample_loss(p, single(one))[0]

    if proxy.vmap_over_samples:
        return vmap(grad_and_value(loss_one), in_dims=(None, 0))(params, dict(tensors))
    n = next(iter(tensors.values())).shape[0]
    each = [
        autograd_grad_and_value(loss_one, params, {k: v[i] for k, v in tensors.items()})
        for i in range(n)
    ]
    grads = {name: torch.stack([g[name] for g, _ in each]) for name in params}
    return grads, torch.stack([value for _, value in each])


def autograd_grad_and_value(
    fn: Callable[..., Tensor], params: Params, *args: object
) -> tuple[Params, Tensor]:
    """`torch.func.grad_and_value(fn)(params, *args)` by plain autograd, which, unlike
    torch.func, works through activation checkpointing (saved-tensor hooks)."""
    leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    with torch.enable_grad():
        value = fn(leaves, *args)
        grads = torch.autograd.grad(value, list(leaves.values()))
    return dict(zip(leaves, grads, strict=True)), value.detach()
