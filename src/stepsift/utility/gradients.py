"""Per-sample gradients of the candidates' own losses.

Vectorised over the batch (vmap) where the proxy allows it (the built-in proxy); else
read off the layers of one batched backward pass where its parameters allow it
(`layer_taps.py`: linear, embedding, convolution and layer-norm weights, e.g. LoRA
adapters on an HF proxy); else a loop of backward passes.

vmap comes first because it was as fast as the read-off where both work
(benchmarks/per_sample_grads.py) and its values do not depend on which samples share a
batch (the read-off's float32 sums do, at the 1e-7 level, through the padded length).
`proxy.per_sample_mode`: "auto" (that order), "read-off" (read off even where vmap
works), "loop" (never read off).

`autocast="bfloat16"` runs the forward and backward of the candidates' own losses in
bfloat16 where torch's autocast allows (matrix products; softmax and losses stay float32)
and returns gradients in the parameters' dtype. Only the fast estimators' candidate pass
uses it: the anchors' losses and state, and `exact` (so the audit), never do, because a
one-step utility is a difference of anchor losses ~1e-4 apart, below bfloat16's 3
significant digits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from stepsift.proxy.base import Params, Proxy
from stepsift.utility.layer_taps import (
    NotReadable,
    TapPlan,
    on_proxy_batch,
    proxy_plan,
    tapped_grads,
)

MODES = ("auto", "read-off", "loop")
AUTOCASTS = ("off", "bfloat16")


def single(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Give vmap's per-sample slices their batch dim back."""
    return {k: v.unsqueeze(0) for k, v in tensors.items()}


def per_sample_grads(
    proxy: Proxy, params: Params, tensors: Mapping[str, Tensor], autocast: str = "off"
) -> tuple[Params, Tensor]:
    """Each sample's gradient (every tensor gains a leading sample dim) and its loss."""
    if autocast not in AUTOCASTS:
        raise ValueError(f"unknown autocast {autocast!r}; choose one of {AUTOCASTS}")
    if autocast == "off":
        return grads_by_mode(proxy, params, tensors)
    with torch.autocast(proxy.device.type, dtype=torch.bfloat16):
        grads, losses = grads_by_mode(proxy, params, tensors)
    # the layer read-off returns its products' dtype; callers expect the parameters'
    return {n: g.to(params[n].dtype) for n, g in grads.items()}, losses.float()


def grads_by_mode(
    proxy: Proxy, params: Params, tensors: Mapping[str, Tensor]
) -> tuple[Params, Tensor]:
    """`per_sample_grads` the way the proxy's mode picks (read-off, vmap or loop), in whatever
    precision is in force (autocast or none)."""
    plan = tap_plan(proxy, params)
    if plan is not None and proxy.rows_are_samples(tensors):
        try:
            return on_proxy_batch(tapped_grads, proxy, params, tensors)
        except NotReadable:
            pass  # a first batch that failed its check has ruled the read-off out for good
    return looped_grads(proxy, params, tensors)


def tap_plan(proxy: Proxy, params: Params) -> TapPlan | None:
    """The proxy's read-off plan for these parameters, built once (None: not readable, or
    not wanted by `per_sample_mode`)."""
    mode = getattr(proxy, "per_sample_mode", "auto")
    if mode not in MODES:
        raise ValueError(f"unknown per_sample_mode {mode!r}; choose one of {MODES}")
    if mode == "loop" or (mode == "auto" and proxy.vmap_over_samples):
        return None
    try:
        return proxy_plan(proxy, params)
    except NotReadable:
        return None


def per_sample_method(proxy: Proxy, params: Params) -> str:
    """How `per_sample_grads` gets this proxy's gradients, for the score file's metadata."""
    plan = tap_plan(proxy, params)
    if plan is not None:
        return "layer read-off"
    return "vmap" if proxy.vmap_over_samples else "loop"


def looped_grads(
    proxy: Proxy, params: Params, tensors: Mapping[str, Tensor]
) -> tuple[Params, Tensor]:
    """Per-sample gradients by vmap over the batch, or a loop of backward passes."""

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
    torch.func, works through activation checkpointing (saved-tensor hooks).

    A parameter the loss does not use gets a zero gradient, as under torch.func: VLMs have
    such (a vision tower's final norm where the projector reads its layers' hidden states,
    as LLaVA's and LLaVA-OneVision's do; a SigLIP pooling head)."""
    leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    with torch.enable_grad():
        value = fn(leaves, *args)
        grads = torch.autograd.grad(
            value, list(leaves.values()), allow_unused=True, materialize_grads=True
        )
    return dict(zip(leaves, grads, strict=True)), value.detach()
