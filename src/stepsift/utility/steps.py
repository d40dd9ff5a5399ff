"""The first update an optimizer would make from one sample's gradient.

Each rule maps per-sample gradients (every tensor with a leading sample dim) to
per-sample parameter updates of the same shape, vectorised over samples. The
formulas are the ones `torch.optim.SGD` and `torch.optim.Adam` apply, so a
simulated step is the step training would take.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from stepsift.proxy.base import Params, Proxy

OPTIMIZERS = ("sgd", "adam")
DEFAULT_ADAM_LR = 1e-3


@dataclass(frozen=True)
class SGDStep:
    """Plain SGD: delta = -lr * g."""

    lr: float

    def __call__(self, grads: Params) -> Params:
        return {name: -self.lr * g for name, g in grads.items()}

    def describe(self) -> dict:
        return {"optimizer": "sgd", "lr": self.lr}


@dataclass(frozen=True)
class AdamStep:
    """One Adam update on top of an existing state (or a fresh one).

    With a fresh state the bias-corrected update is lr * g / (|g| + eps): nearly a
    sign step. With the warm-up's state, the update blends the warm-up's momentum
    with this sample's gradient, as the next real training step would.
    """

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    state: dict[str, dict[str, Tensor | int]] = field(default_factory=dict)

    def __call__(self, grads: Params) -> Params:
        deltas = {}
        for name, g in grads.items():
            st = self.state.get(name)
            if st is None:
                m0, v0, t0 = torch.zeros_like(g[0]), torch.zeros_like(g[0]), 0
            else:
                m0 = st["exp_avg"].to(g.device, g.dtype)
                v0 = st["exp_avg_sq"].to(g.device, g.dtype)
                t0 = int(st["step"])
            t = t0 + 1
            m = self.beta1 * m0 + (1 - self.beta1) * g
            v = self.beta2 * v0 + (1 - self.beta2) * g * g
            step_size = self.lr / (1 - self.beta1**t)
            denom = v.sqrt() / (1 - self.beta2**t) ** 0.5 + self.eps
            deltas[name] = -step_size * m / denom
        return deltas

    def describe(self) -> dict:
        return {
            "optimizer": "adam",
            "lr": self.lr,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "adam_state": "warm-up" if self.state else "fresh",
        }


StepRule = SGDStep | AdamStep


def shared_step(step_rule: StepRule, params: Params) -> Params:
    """The part of every candidate's update that does not depend on its gradient: the
    update for a zero gradient (0 for SGD; Adam's momentum from the warm-up state)."""
    zero = {n: torch.zeros_like(p).unsqueeze(0) for n, p in params.items()}
    return {n: d[0] for n, d in step_rule(zero).items()}


def make_step_rule(
    optimizer: str, lr: float | None, proxy: Proxy, sgd_default_lr: float
) -> StepRule:
    """The step rule for `optimizer`; Adam continues from the proxy's warm-up state."""
    if optimizer == "sgd":
        return SGDStep(lr=sgd_default_lr if lr is None else lr)
    if optimizer == "adam":
        hp = getattr(proxy, "adam_hparams", {}) or {}
        return AdamStep(
            lr=lr if lr is not None else hp.get("lr", DEFAULT_ADAM_LR),
            beta1=hp.get("beta1", 0.9),
            beta2=hp.get("beta2", 0.999),
            eps=hp.get("eps", 1e-8),
            state=dict(getattr(proxy, "adam_state", {}) or {}),
        )
    raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
