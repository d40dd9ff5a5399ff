"""The first-order estimate of the one-step utility, at about one forward pass.

To first order in the step, U_i = L_A(θ) - L_A(θ + δ_i) ≈ -<g_A, δ_i>. When δ_i is
linear in the candidate's gradient g_i (SGD: δ_i = -η g_i), the inner product
<g_A, g_i> is the derivative of the candidate's own loss along the fixed direction g_A,
so a whole batch needs no per-sample gradient at all: one forward-mode (JVP) pass; where
forward-mode AD is not supported, ghost products read off one batched backward
(`ghost.py`, exact), or, where the layers cannot be read either, two forward passes by
central finite differences.

Adam from the warm-up state splits into a part every candidate shares and a part
linear in g_i, with the second moment frozen at β2·v0 (one sample moves it by a factor
(1 - β2) of its square, which we neglect):
    δ_i ≈ c + J g_i,   c = -s β1 m0 / D,   J = -s (1 - β1) / D,
    s = lr / (1 - β1^t),   D = sqrt(β2 v0 / c2) + eps.
The shared step c (the warm momentum, often most of the update) is taken exactly, once:
    U_i ≈ [L_A(θ) - L_A(θ + c)] + s (1 - β1) <g_A(θ + c) / D, g_i>,
a constant plus a derivative along the preconditioned anchor direction. From a fresh
state Adam's first step is a sign step, not linear in g_i, so this estimator refuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.func import jvp

from stepsift.proxy.base import Batch, Params, Proxy
from stepsift.utility.anchors import expand_at_shared_step
from stepsift.utility.base import UtilityResult
from stepsift.utility.ghost import BatchNotReadable, proxy_dots
from stepsift.utility.layer_taps import NotReadable
from stepsift.utility.steps import AdamStep, SGDStep, StepRule

MODES = ("auto", "jvp", "ghost", "fd")
# Central differences: the truncation error falls as ε² and the rounding error grows as
# machine-eps / ε, so the best relative step is about eps^(1/3) (6e-6 in float64,
# 5e-3 in float32). The step is taken relative to the parameters' own scale.
FD_RELATIVE_STEP = {torch.float64: 1e-5, torch.float32: 5e-3}


def linearise(step_rule: StepRule, anchor_grad: Params) -> tuple[Params, float]:
    """(direction, scale) with -<g_A, J g> = scale * <direction, g>, J the step rule's
    gradient-dependent part (`anchor_grad` taken where the shared step lands)."""
    if isinstance(step_rule, SGDStep):
        return anchor_grad, step_rule.lr
    if isinstance(step_rule, AdamStep):
        if not step_rule.state:
            raise ValueError(
                "the first-order estimate cannot follow Adam from a fresh state: its first "
                "step is a sign step, not linear in the gradient. Use a proxy with a warm-up "
                "state, --optimizer sgd, or --method exact"
            )
        direction, t = {}, None
        for name, g_a in anchor_grad.items():
            t, denom = adam_denominator(step_rule, name, g_a)
            direction[name] = g_a / denom
        s = step_rule.lr / (1 - step_rule.beta1**t)  # every parameter shares one step count
        return direction, s * (1 - step_rule.beta1)
    raise TypeError(f"no linearisation for step rule {type(step_rule).__name__}")


def adam_denominator(step_rule: AdamStep, name: str, like: Tensor) -> tuple[int, Tensor]:
    """(t, D) for one parameter: the step count of the next update and Adam's denominator
    with the second moment frozen at its warm value, D = sqrt(β2 v0 / (1 - β2^t)) + eps."""
    st = step_rule.state.get(name)
    if st is None:
        raise ValueError(f"the Adam state has no entry for parameter {name!r}")
    t = int(st["step"]) + 1
    v0 = st["exp_avg_sq"].to(like.device, like.dtype)
    return t, (step_rule.beta2 * v0 / (1 - step_rule.beta2**t)).sqrt() + step_rule.eps


def preconditioner(step_rule: StepRule, like: Params) -> Params:
    """P with the linearised own update b_i = -P ⊙ g_i (P = lr for SGD; for Adam from the
    warm-up state, (lr / (1 - β1^t)) (1 - β1) / D, the derivative `linearise` uses)."""
    if isinstance(step_rule, SGDStep):
        return {n: torch.full_like(p, step_rule.lr) for n, p in like.items()}
    direction, scale = linearise(step_rule, {n: torch.ones_like(p) for n, p in like.items()})
    return {n: scale * d for n, d in direction.items()}


def directional_jvp(
    proxy: Proxy, params: Params, tensors: Mapping[str, Tensor], direction: Params
) -> tuple[Tensor, Tensor]:
    """Per-sample losses and their derivatives along `direction`, by forward-mode AD."""
    return jvp(lambda p: proxy.per_sample_loss(p, tensors), (params,), (direction,))


def directional_fd(
    proxy: Proxy, params: Params, tensors: Mapping[str, Tensor], direction: Params
) -> tuple[Tensor, Tensor]:
    """The same by central finite differences: three forward passes (minus, plus, plain)."""
    norm_p = torch.sqrt(sum((p.double() ** 2).sum() for p in params.values()))
    norm_d = torch.sqrt(sum((d.double() ** 2).sum() for d in direction.values()))
    dtype = next(iter(params.values())).dtype
    eps = float(FD_RELATIVE_STEP.get(dtype, 5e-3) * norm_p / norm_d.clamp(min=1e-30))
    plus = {n: p + eps * direction[n] for n, p in params.items()}
    minus = {n: p - eps * direction[n] for n, p in params.items()}
    loss = proxy.per_sample_loss(params, tensors)
    diff = (
        proxy.per_sample_loss(plus, tensors).double()
        - proxy.per_sample_loss(minus, tensors).double()
    )
    return loss, diff / (2 * eps)


def directional_ghost(
    proxy: Proxy, params: Params, tensors: Mapping[str, Tensor], direction: Params
) -> tuple[Tensor, Tensor]:
    """The same from ghost products of one batched backward (`ghost.py`)."""
    loss, dots = proxy_dots(
        proxy, params, dict(tensors), {n: d.unsqueeze(0) for n, d in direction.items()}
    )
    return loss, dots[0]


class Directional:
    """How an estimator takes its directional derivatives, batch by batch.

    "auto" tries, in order: on proxies that vmap over samples (the built-in one), forward-
    mode AD, then ghost products; on the others (Hugging Face), ghost products first, which
    cost half of forward mode's on SmolLM2 with LoRA and a little less at full parameters
    (benchmarks/RESULTS.md); finite differences last. A way the model cannot take (no
    forward-mode rule for a kernel, a layer the read-off does not know) is not tried again;
    a batch the read-off cannot see (images) goes to the next way for that batch only."""

    def __init__(self, mode: str, ways: Mapping[str, Callable]):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        self.mode, self.ways = mode, ways
        self.broken: set[str] = set()  # ways the model cannot take
        self.used: list[str] = []  # ways taken so far, in order of first use

    def order(self, proxy: Proxy) -> tuple[str, ...]:
        if self.mode != "auto":
            return (self.mode,)
        exact = ("jvp", "ghost") if proxy.vmap_over_samples else ("ghost", "jvp")
        return (*exact, "fd")

    def __call__(self, proxy: Proxy, *args: Any) -> Any:
        for way in self.order(proxy):
            if way in self.broken:
                continue
            try:
                out = self.ways[way](proxy, *args)
            except BatchNotReadable:
                if self.mode != "auto":
                    raise
                continue
            except (NotImplementedError, RuntimeError, NotReadable):
                # e.g. fused attention kernels without a forward-mode derivative or batching
                # rule; layers the read-off does not know
                if self.mode != "auto":
                    raise
                self.broken.add(way)
                continue
            if way not in self.used:
                self.used.append(way)
            return out
        raise RuntimeError("no way to take the directional derivatives")  # fd always works

    def describe(self) -> str:
        """The ways taken ("ghost", "jvp", "fd", or e.g. "ghost+jvp" for a pool of text
        and image batches); the mode asked for before any batch."""
        return "+".join(self.used) or self.mode


DIRECTIONAL = {"jvp": directional_jvp, "ghost": directional_ghost, "fd": directional_fd}


class FirstOrderUtility:
    """η <g_A, g_i> (or its Adam analogue) from one batched directional derivative."""

    name = "first-order"

    # no per-anchor values (one direction for all anchors) and no per-sample gradients
    columns: frozenset[str] = frozenset()

    def __init__(
        self,
        proxy: Proxy,
        anchors: Batch,
        step_rule: StepRule,
        mode: str = "auto",
        state: dict | None = None,
    ):
        self.directional_ways = Directional(mode, DIRECTIONAL)  # refuses an unknown mode
        self.proxy = proxy
        self.params = proxy.step_parameters()
        if state is not None:  # the anchor direction another worker computed
            self.base_anchor_loss = float(state["base_anchor_loss"])
            self.offset = float(state["offset"])
            self.scale = float(state["scale"])
            self.direction = {n: state["direction"][n].to(proxy.device) for n in self.params}
            return
        expansion = expand_at_shared_step(proxy, anchors, self.params, step_rule)
        self.base_anchor_loss = expansion.base_loss
        self.offset = expansion.offset  # exact: 0 for SGD
        self.direction, self.scale = linearise(step_rule, expansion.anchor_grad)

    def export_state(self) -> dict:
        """The anchor direction and constants, for a worker to load instead of recomputing."""
        return {
            "base_anchor_loss": self.base_anchor_loss,
            "offset": self.offset,
            "scale": self.scale,
            "direction": self.direction,
        }

    def directional(self, tensors: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        return self.directional_ways(self.proxy, self.params, tensors, self.direction)

    def __call__(self, batch: Batch) -> UtilityResult:
        with torch.no_grad():
            loss, derivative = self.directional(batch.tensors)
        utility = self.offset + self.scale * derivative.double()
        return UtilityResult(utility=utility, loss=loss.double())

    def describe(self) -> dict:
        return {"directional": self.directional_ways.describe()}
