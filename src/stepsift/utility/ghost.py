"""Per-sample gradient inner products read off one batched backward, without forming the
per-sample gradients ("ghost" products, as in GREATS and LoGra).

For a linear layer y_t = W a_t, sample i's weight gradient is Σ_t b_t a_tᵀ (layer_taps.py),
so its inner product with a fixed direction V is

    <∂ℓ_i/∂W, V> = Σ_t b_t · (V a_t)

(or Σ_t (Vᵀ b_t) · a_t, whichever side is narrower): a matrix product the size of the
layer's own forward per direction, and memory of the layer's activations rather than of a
per-sample gradient the size of the layer. An embedding's product gathers V's rows at the
sample's ids; norms and convolutions have small per-sample gradients, so those are read
off and then multiplied. `first-order` and `forward` use these as their directional
derivatives (mode "ghost") where forward-mode AD is not available, instead of finite
differences: exact, one forward and one backward of the batch plus one layer-sized
product per direction.

`ghost_sq_norms` gives ||∂ℓ_i/∂W||² of a linear layer the same way, from the token Gram
matrices: Σ_{t,s} (a_t · a_s)(b_t · b_s).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from stepsift.proxy.base import Params, Proxy
from stepsift.utility.layer_taps import (
    CHECK_RTOL,
    NO_TOKEN_ROWS,
    NotReadable,
    TapPlan,
    on_proxy_batch,
    read_off,
    tapped_calls,
)


class BatchNotReadable(NotReadable):
    """This batch cannot be read off (its layers see images, not samples); others may."""


def proxy_dots(
    proxy: Proxy, params: Params, tensors: dict[str, Tensor], directions: Params
) -> tuple[Tensor, Tensor]:
    """`tapped_dots` on a proxy's batch: (losses (n,), <g_i, d_m> (M, n)). Raises
    NotReadable where the layers cannot be read (see layer_taps.py), BatchNotReadable
    where only this batch cannot be."""
    if not proxy.rows_are_samples(tensors):
        raise BatchNotReadable("this batch's layers do not see one row per sample (images)")
    return on_proxy_batch(tapped_dots, proxy, params, tensors, directions)


def tapped_dots(
    model: nn.Module,
    plan: TapPlan,
    loss_fn: Callable[[Params], Tensor],
    params: Params,
    n_samples: int,
    directions: Params,
    token_rows: tuple[tuple[nn.Module, ...], Tensor] = NO_TOKEN_ROWS,
) -> tuple[Tensor, Tensor]:
    """(per-sample losses (n,), <g_i, d_m> for each stacked direction (M, n)) from one
    forward and one backward of the batch; `directions` holds every parameter with a
    leading direction dim M. On the plan's first batch, Σ_i <g_i, d_m> is checked against
    the batch gradient's product, parameter by parameter."""
    calls, losses, batch = tapped_calls(model, plan, loss_fn, params, n_samples, token_rows)
    m = next(iter(directions.values())).shape[0]
    per_param = {
        name: sum(ghost_dots(module, attr, x, g, directions[name]) for module, attr, x, g in each)
        if each
        else losses.new_zeros((m, n_samples))
        for name, each in calls.items()
    }
    if batch is not None:
        check_dot_sums(per_param, batch, directions)
        plan.checked = True
    return losses, sum(per_param.values())


def ghost_dots(module: nn.Module, attr: str, x: Tensor, g: Tensor, v: Tensor) -> Tensor:
    """<per-sample gradient of module.attr from this call, v_m> for each of v's M leading
    rows: shape (M, n). x, g: the call's input and output gradient, samples leading."""
    n = x.shape[0]
    v = v.to(g.dtype)
    if isinstance(module, nn.Linear):
        g2 = g.reshape(n, -1, g.shape[-1])
        if attr == "bias":
            return v @ g2.sum(1).T
        x2 = x.reshape(n, -1, x.shape[-1])
        if g2.shape[-1] > x2.shape[-1]:  # contract the wider side first (a vocab-wide head)
            return torch.einsum("nto,moi,nti->mn", g2, v, x2)
        return torch.einsum("nti,moi,nto->mn", x2, v, g2)
    if isinstance(module, nn.Embedding):
        ids = x.reshape(n, -1)
        g2 = g.reshape(n, ids.shape[1], -1)
        if module.padding_idx is not None:  # that row never receives a gradient
            g2 = g2 * (ids != module.padding_idx).unsqueeze(-1).to(g2.dtype)
        return torch.einsum("mntd,ntd->mn", v[:, ids], g2)
    # norms and convolutions: their per-sample gradients are small; form and multiply
    per_sample = read_off(module, attr, x, g).reshape(n, -1)
    return v.reshape(v.shape[0], -1) @ per_sample.T


def check_dot_sums(per_param: dict[str, Tensor], batch: dict, directions: Params) -> None:
    """Σ_i <g_i, d_m> must be <batch gradient, d_m> for every parameter and direction."""
    for name, dots in per_param.items():
        want_grad = batch[name]
        if want_grad is None:
            want_grad = torch.zeros_like(directions[name][0])
        v = directions[name].to(want_grad.dtype)
        terms = want_grad.unsqueeze(0) * v
        want = terms.reshape(v.shape[0], -1).sum(1)
        scale = terms.reshape(v.shape[0], -1).abs().sum(1).clamp(min=1e-30)
        rtol = CHECK_RTOL.get(dots.dtype, 2e-3)
        if ((dots.sum(1) - want).abs() > rtol * scale + 1e-12).any():
            raise NotReadable(f"parameter {name} is used outside its module's calls")


def ghost_sq_norms(x: Tensor, g: Tensor) -> Tensor:
    """||Σ_t g_t x_tᵀ||² per sample for a linear layer's input x (n, T, i) and output
    grad g (n, T, o), without forming the (o, i) gradients: Σ_{t,s} (x_t·x_s)(g_t·g_s).
    Cheaper than the gradient when T² < i·o (short sequences through wide layers)."""
    return ((x @ x.transpose(1, 2)) * (g @ g.transpose(1, 2))).sum((1, 2))
