"""Per-sample gradients from one batched backward pass, read off the layers themselves.

A layer's weight gradient for one sample is built from two things the batch pass already
has: the layer's input at that sample's positions, a_t, and the gradient of the sample's
loss with respect to the layer's output there, b_t ("ghost" terms, as in GREATS, LoGra
and Opacus). For y_t = W a_t + c:

    ∂ℓ_i/∂W = Σ_t b_t a_tᵀ        ∂ℓ_i/∂c = Σ_t b_t

an embedding scatters b_t into the rows of its ids, a convolution is the linear case on
its unfolded patches, and a layer norm's or RMS norm's weight collects Σ_t b_t ⊙ x̂_t. A
weight two modules share (an output head tied to the embedding) gets the sum of both
modules' read-offs, as autograd sums the two uses. Samples in a
padded batch do not interact, so the gradient of Σ_i ℓ_i with respect to a layer's output
at sample i's rows is exactly ∂ℓ_i/∂y: one forward and one backward of the whole batch
give every sample's gradient, where the loop (or vmap) of `gradients.py` runs a backward
per sample. `ghost.py` takes inner products ⟨∂ℓ_i/∂W, V⟩ and norms from the same
calls without forming the per-sample gradients at all.

The read-off is only right when every use of a parameter goes through a call of its
module with the sample as the leading dimension. `TapPlan` refuses modules it cannot
read (and parameters it cannot find a module for); the first batch is also checked: the
per-sample gradients must sum to the batch gradient, which fails when a parameter is
also used outside its module (a tied output head applied with F.linear, a positional
table sliced by hand) or when a norm computes other than the formula read here, and
then the caller falls back to the per-sample loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stepsift.proxy.base import Params, Proxy

# modules whose per-sample weight gradients are read off here, and the attributes read
READABLE: dict[type, tuple[str, ...]] = {
    nn.Linear: ("weight", "bias"),
    nn.Embedding: ("weight",),
    nn.Conv2d: ("weight", "bias"),
    nn.LayerNorm: ("weight", "bias"),
}
# relative tolerance of the first batch's check (float32 sums of a few thousand terms)
# bfloat16 (under autocast) rounds each per-sample product to 3 digits; the check is for
# O(1) misses (a parameter used outside its module), so a loose bound still catches those
CHECK_RTOL = {torch.float64: 1e-8, torch.float32: 2e-3, torch.bfloat16: 3e-2}


class NotReadable(ValueError):
    """The batch's per-sample gradients cannot be read off its layers; use the loop."""


def is_rms_norm(module: nn.Module) -> bool:
    """A Hugging Face RMS norm (LlamaRMSNorm, Qwen2RMSNorm, Gemma3RMSNorm, ...): no class
    to test against, so recognised by name, a 1-D weight and an epsilon. Variants whose
    formula differs from `rms_normalised` fail the first batch's check, not silently."""
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__.endswith("RMSNorm")
        and isinstance(weight, nn.Parameter)
        and weight.dim() == 1
        and rms_epsilon(module) is not None
        and getattr(module, "bias", None) is None
    )


def rms_epsilon(module: nn.Module) -> float | None:
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    return float(eps) if isinstance(eps, (int, float)) else None


def readable(module: nn.Module) -> str | None:
    """Why `module` cannot be read off (None when it can)."""
    kind = type(module)
    if is_rms_norm(module):
        return None
    if kind not in READABLE:
        names = [k.__name__ for k in READABLE] + ["an RMS norm"]
        return f"{kind.__name__} is not one of {', '.join(names)}"
    if isinstance(module, nn.Embedding) and (module.max_norm is not None or module.sparse):
        return "an embedding with max_norm or sparse gradients"
    if isinstance(module, nn.Conv2d) and (
        module.groups != 1 or isinstance(module.padding, str) or module.padding_mode != "zeros"
    ):
        return "a grouped, string-padded or non-zero-padded convolution"
    return None


@dataclass
class TapPlan:
    """Which modules (and attributes) hold each step parameter: one, or several for a
    tied weight."""

    owners: dict[str, list[tuple[nn.Module, str]]]
    checked: bool = False

    @classmethod
    def build(cls, model: nn.Module, names: list[str]) -> TapPlan:
        holders: dict[int, list[tuple[nn.Module, str]]] = {}
        for module in model.modules():
            for attr, p in module.named_parameters(recurse=False):
                holders.setdefault(id(p), []).append((module, attr))
        named = dict(model.named_parameters())
        owners = {}
        for name in names:
            found = holders.get(id(named[name])) if name in named else None
            if not found:
                raise NotReadable(f"parameter {name} has no module")
            for module, _ in found:
                why = readable(module)
                if why:
                    raise NotReadable(f"parameter {name}: {why}")
            owners[name] = found
        return cls(owners)


@dataclass
class _Calls:
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)


NO_TOKEN_ROWS: tuple[tuple[nn.Module, ...], Tensor] = ((), torch.zeros(0, dtype=torch.long))
# one call of a module holding a step parameter: (module, attribute, input, output grad),
# input and output grad with the samples as leading dim
LayerCall = tuple[nn.Module, str, Tensor, Tensor]


def tapped_calls(
    model: nn.Module,
    plan: TapPlan,
    loss_fn: Callable[[Params], Tensor],
    params: Params,
    n_samples: int,
    token_rows: tuple[tuple[nn.Module, ...], Tensor] = NO_TOKEN_ROWS,
) -> tuple[dict[str, list[LayerCall]], Tensor, dict[str, Tensor | None] | None]:
    """One forward and one backward of the batch, recording every call of the modules
    holding the step parameters: (each parameter's calls, the per-sample losses (n,), the
    batch gradients for the first batch's check, None once the plan is checked). Raises
    NotReadable when a module's calls do not have the samples as leading dim.

    `token_rows` = (modules, rows): those modules are called on tokens flattened into
    rows instead, row k belonging to sample rows[k] (`Proxy.token_rows`); their calls are
    regrouped by sample, zero-padded."""
    modules = {id(m): m for found in plan.owners.values() for m, _ in found}
    calls = {key: _Calls() for key in modules}
    flat_modules, rows = {id(m) for m in token_rows[0]}, token_rows[1]

    def record(module: nn.Module, args: tuple, output: Tensor) -> None:
        x = args[0]
        expect = len(rows) if id(module) in flat_modules else n_samples
        if x.shape[0] != expect or output.shape[0] != expect:
            raise NotReadable(f"{type(module).__name__} called on {x.shape[0]} rows")
        calls[id(module)].inputs.append(x.detach())
        calls[id(module)].outputs.append(output)

    leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    handles = [m.register_forward_hook(record) for m in modules.values()]
    try:
        with torch.enable_grad():
            losses = loss_fn(leaves)
            outputs = [o for c in calls.values() for o in c.outputs]
            targets = outputs + (list(leaves.values()) if not plan.checked else [])
            grads = torch.autograd.grad(losses.sum(), targets, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    out_grads = iter(grads[: len(outputs)])
    for c in calls.values():  # an output the loss never reached has gradient zero
        c.outputs = [
            g if (g := next(out_grads)) is not None else torch.zeros_like(o) for o in c.outputs
        ]
    for key in flat_modules & set(calls):
        c = calls[key]
        c.inputs = [by_sample(x, rows, n_samples) for x in c.inputs]
        c.outputs = [by_sample(g, rows, n_samples) for g in c.outputs]
    per_param: dict[str, list[LayerCall]] = {}
    for name, found in plan.owners.items():
        # a module this batch never called (a vision tower's adapters on a text batch) gives
        # an empty list: a zero gradient, as autograd's; the first batch's check covers a
        # parameter used some other way
        per_param[name] = [
            (module, attr, x, g)
            for module, attr in found
            for x, g in zip(calls[id(module)].inputs, calls[id(module)].outputs, strict=True)
        ]
    batch = None if plan.checked else dict(zip(leaves, grads[len(outputs) :], strict=True))
    return per_param, losses.detach(), batch


def tapped_grads(
    model: nn.Module,
    plan: TapPlan,
    loss_fn: Callable[[Params], Tensor],
    params: Params,
    n_samples: int,
    token_rows: tuple[tuple[nn.Module, ...], Tensor] = NO_TOKEN_ROWS,
) -> tuple[Params, Tensor]:
    """Every sample's gradient of `loss_fn(params)` (shape (n,)) from one backward pass
    (`tapped_calls`), checked against the batch gradient on the plan's first batch."""
    calls, losses, batch = tapped_calls(model, plan, loss_fn, params, n_samples, token_rows)
    per_sample: Params = {
        name: sum(read_off(module, attr, x, g) for module, attr, x, g in each)
        if each
        else params[name].new_zeros((n_samples, *params[name].shape))
        for name, each in calls.items()
    }
    if batch is not None:
        check_sums(per_sample, batch)
        plan.checked = True
    return per_sample, losses


def proxy_plan(proxy: Proxy, params: Params) -> TapPlan:
    """The proxy's read-off plan for these step parameters, built once and shared by the
    per-sample read-off (`gradients.py`) and the ghost products (`ghost.py`). Raises
    NotReadable once the model's layers are known not to be readable (the reason is kept
    in `proxy.per_sample_fallback`)."""
    plans = proxy.__dict__.setdefault("_tap_plans", {})
    key = tuple(params)
    if key not in plans:
        try:
            plans[key] = TapPlan.build(proxy.model, list(params))
        except NotReadable as e:
            rule_out(proxy, params, e)
    if plans[key] is None:
        raise NotReadable(proxy.per_sample_fallback)
    return plans[key]


def rule_out(proxy: Proxy, params: Params, why: NotReadable) -> None:
    """Remember that these parameters' layers cannot be read off, and why."""
    proxy.__dict__.setdefault("_tap_plans", {})[tuple(params)] = None
    proxy.per_sample_fallback = str(why)


def on_proxy_batch(
    tapped: Callable[..., tuple],
    proxy: Proxy,
    params: Params,
    tensors: Mapping[str, Tensor],
    *args: object,
) -> tuple:
    """`tapped_grads` or `tapped_dots` (with its further `args`) on a proxy's batch, with
    the proxy's shared plan; a failure of the plan's first-batch check rules it out for
    good (the model, not the batch), and every NotReadable is raised on."""
    plan = proxy_plan(proxy, params)
    n = next(iter(tensors.values())).shape[0]
    try:
        return tapped(
            proxy.model,
            plan,
            lambda p: proxy.per_sample_loss(p, tensors),
            params,
            n,
            *args,
            token_rows=proxy.token_rows(tensors),
        )
    except NotReadable as e:
        if not plan.checked:
            rule_out(proxy, params, e)
        raise


def by_sample(flat: Tensor, rows: Tensor, n_samples: int) -> Tensor:
    """Rows of `flat` regrouped as (n_samples, longest, ...), row k at sample rows[k]; the
    padding is zero, so it adds nothing to any read-off (its output gradient is zero)."""
    rows = rows.to(flat.device)
    counts = torch.bincount(rows, minlength=n_samples)
    starts = torch.cumsum(counts, 0) - counts
    order = torch.argsort(rows, stable=True)
    position = torch.empty_like(rows)
    position[order] = torch.arange(len(rows), device=rows.device) - starts[rows[order]]
    out = flat.new_zeros(n_samples, int(counts.max()) if len(rows) else 0, *flat.shape[1:])
    out[rows, position] = flat
    return out


def check_sums(per_sample: Params, batch: Mapping[str, Tensor | None]) -> None:
    """Σ_i per-sample gradient must be the batch gradient for every parameter."""
    for name, g in per_sample.items():
        want = batch[name]
        want = torch.zeros_like(g[0]) if want is None else want
        rtol = CHECK_RTOL.get(g.dtype, 2e-3)
        got = g.sum(0, dtype=torch.promote_types(g.dtype, torch.float32))
        scale = want.abs().max().clamp(min=1e-30)
        if (got - want).abs().max() > rtol * scale + 1e-12:
            raise NotReadable(f"parameter {name} is used outside its module's calls")


def read_off(module: nn.Module, attr: str, x: Tensor, g: Tensor) -> Tensor:
    """One call's per-sample gradient of `module.attr` from its input x and output grad g."""
    n = x.shape[0]
    if isinstance(module, nn.Linear):
        g2 = g.reshape(n, -1, g.shape[-1])
        if attr == "bias":
            return g2.sum(1)
        return torch.einsum("bto,bti->boi", g2, x.reshape(n, -1, x.shape[-1]))
    if isinstance(module, nn.Embedding):
        ids = x.reshape(n, -1)
        g2 = g.reshape(n, ids.shape[1], -1)
        if module.padding_idx is not None:  # that row never receives a gradient
            g2 = g2 * (ids != module.padding_idx).unsqueeze(-1).to(g2.dtype)
        out = torch.zeros(n, module.num_embeddings, g2.shape[-1], dtype=g2.dtype, device=g.device)
        return out.scatter_add_(1, ids.unsqueeze(-1).expand(-1, -1, g2.shape[-1]), g2)
    if isinstance(module, nn.Conv2d):
        g2 = g.reshape(n, g.shape[1], -1)
        if attr == "bias":
            return g2.sum(2)
        patches = F.unfold(
            x, module.kernel_size, module.dilation, module.padding, module.stride
        )  # (n, C·kh·kw, L)
        return torch.einsum("bol,bkl->bok", g2, patches).reshape(n, *module.weight.shape)
    if isinstance(module, nn.LayerNorm):
        g2 = g.reshape(n, -1, *module.normalized_shape)
        if attr == "bias":
            return g2.sum(1)
        x_hat = F.layer_norm(x, module.normalized_shape, None, None, module.eps)
        return (g2 * x_hat.reshape(g2.shape)).sum(1)
    if is_rms_norm(module):  # y = w ⊙ x̂ (Gemma: (1 + w) ⊙ x̂): ∂y/∂w = x̂ either way
        d = module.weight.shape[0]
        g2 = g.reshape(n, -1, d)
        return (g2 * rms_normalised(module, x).reshape(g2.shape)).sum(1)
    raise NotReadable(f"{type(module).__name__}")


def rms_normalised(module: nn.Module, x: Tensor) -> Tensor:
    """x̂ as Hugging Face's RMS norms compute it: in float32 (whatever x's dtype), cast back."""
    x32 = x.to(torch.float32)
    eps = rms_epsilon(module)
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
