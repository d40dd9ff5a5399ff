"""Per-sample gradients of the candidates' own losses, vectorised over the batch."""

from __future__ import annotations

from collections.abc import Mapping

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

    return vmap(grad_and_value(loss_one), in_dims=(None, 0))(params, dict(tensors))
