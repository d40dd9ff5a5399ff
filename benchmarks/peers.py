"""Peer libraries' data-valuation scores, shaped like stepsift's estimators.

Each peer is a constructor `(proxy, anchors, step_rule)` returning an object that scores a
`Batch` and returns a `UtilityResult`, so `scoring_speed.py` times and ranks it like its own
`VARIANTS`. Peers are optional (`pip install stepsift[peers]`): `available_peers()` lists
only those whose library imports.

captum's TracInCP at a single checkpoint (the proxy as it is) scores a candidate i against
the anchors A as lr * sum_a <g_a, g_i>, the gradients being of the per-sample loss with
respect to the step's parameters. Divided by the number of anchors, that is exactly
stepsift's first-order estimate at SGD (η <g_A, g_i>, g_A the mean anchor loss's
gradient). TracIn has no notion of Adam's preconditioning; under Adam it is given the
rule's lr, and any positive factor leaves its ranking unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from stepsift.proxy.base import Batch, Proxy
from stepsift.utility.base import UtilityResult
from stepsift.utility.steps import AdamStep, SGDStep, StepRule

ANCHOR_CHUNK = 16  # anchors per chunk when captum sums their per-sample gradients


def have_captum() -> bool:
    try:
        import captum  # noqa: F401
    except ImportError:
        return False
    return True


class LossModule(nn.Module):
    """The proxy as a module whose output is its per-sample loss, shape (B,).

    `forward(*tensors)` takes the batch's tensors in the order of `keys`. The proxy's model
    is a submodule, so this module's parameters are the proxy's own (live) parameters and
    captum differentiates them. The last output is kept (detached) as the candidates' loss.
    """

    def __init__(self, proxy: Proxy, keys: list[str]):
        super().__init__()
        self.proxy_model = proxy.model  # registers the parameters under "proxy_model."
        self.proxy = proxy
        self.keys = keys
        self.step_names = set(proxy.step_parameter_names())
        self.last_loss: Tensor | None = None

    def forward(self, *tensors: Tensor) -> Tensor:
        params = {n: p for n, p in self.proxy_model.named_parameters() if n in self.step_names}
        loss = self.proxy.per_sample_loss(params, dict(zip(self.keys, tensors, strict=True)))
        self.last_loss = loss.detach()
        return loss


def step_layers(proxy: Proxy, prefix: str = "proxy_model") -> list[str] | None:
    """captum's `layers` (module names) covering exactly the step's parameters; None when
    the step moves every parameter. captum picks whole modules, so a step that moves only
    some of a module's parameters cannot be expressed: that raises ValueError."""
    model = proxy.model
    step = set(proxy.step_parameter_names())
    if step == {n for n, _ in model.named_parameters()}:
        return None
    chosen: list[str] = []
    covered: set[str] = set()
    for name, module in model.named_modules():  # parents come before their children
        if name == "" or any(name.startswith(c + ".") for c in chosen):
            continue
        names = {f"{name}.{n}" for n, _ in module.named_parameters()}
        if names and names <= step:
            chosen.append(name)
            covered |= names
    if covered != step:
        part = ", ".join(sorted(step - covered)[:4])
        raise ValueError(
            f"captum's `layers` select whole modules, but the step moves only part of one "
            f"({part}); restrict the step to whole modules"
        )
    return [f"{prefix}.{name}" for name in chosen]


def step_lr(step_rule: StepRule) -> float:
    """TracIn's per-checkpoint learning rate: SGD's η; Adam's lr (TracIn ignores the
    preconditioning, and a positive scale does not change a ranking)."""
    if isinstance(step_rule, SGDStep | AdamStep):
        return float(step_rule.lr)
    return 1.0


class CaptumTracInCP:
    """captum.influence.TracInCP at the current parameters, anchor side computed once.

    Uses two private methods of `TracInCP` (captum 0.9.0): `_get_checkpoint_jacobians`
    (the anchors' per-sample gradients, summed) at construction and
    `_influence_batch_tracincp` (the candidates' per-sample gradients dotted with that sum,
    times the lr) per batch, so a candidate pays only its own gradients, as in
    `influence()` with the anchors as its test batch. With `sample_wise_grads_per_batch=False`
    captum takes one backward pass per sample.
    """

    name = "captum TracInCP"

    def __init__(self, proxy: Proxy, anchors: Batch, step_rule: StepRule):
        from captum.influence import TracInCP
        from torch.utils.data import DataLoader

        self.keys = list(anchors.tensors)
        self.module = LossModule(proxy, self.keys)
        self.lr = step_lr(step_rule)
        self.n_anchors = len(anchors)
        lr = self.lr

        def load_nothing(model: nn.Module, checkpoint: str) -> float:
            return lr  # "current": the parameters are already in place

        self.tracin = TracInCP(
            self.module,
            train_dataset=DataLoader([], batch_size=None),  # candidates come per batch
            checkpoints=["current"],
            checkpoints_load_func=load_nothing,
            layers=step_layers(proxy),
            loss_fn=None,  # the module's output already is the per-sample loss
            sample_wise_grads_per_batch=False,
        )
        chunks = [
            self.as_tuple(anchors.select(slice(s, s + ANCHOR_CHUNK)))
            for s in range(0, len(anchors), ANCHOR_CHUNK)
        ]
        self.anchor_jacobians = self.tracin._get_checkpoint_jacobians(
            DataLoader(chunks, batch_size=None), True, self.tracin.test_loss_fn
        )  # [one per checkpoint: (1, *shape) per parameter, the anchors' gradient sum]
        self.base_anchor_loss = float("nan")  # TracIn does not need the anchors' loss

    def as_tuple(self, batch: Batch) -> tuple[Tensor, ...]:
        """The batch's tensors, then a dummy label (captum treats the last as labels)."""
        dummy = torch.zeros(len(batch), device=batch.tensors[self.keys[0]].device)
        return (*(batch.tensors[k] for k in self.keys), dummy)

    def __call__(self, batch: Batch) -> UtilityResult:
        scores = self.tracin._influence_batch_tracincp(
            self.anchor_jacobians, self.as_tuple(batch)
        )  # (1, B): lr * <sum_a g_a, g_i>
        utility = scores[0].detach().double() / self.n_anchors
        return UtilityResult(utility=utility, loss=self.module.last_loss.double())

    def describe(self) -> dict:
        return {"peer": "captum TracInCP", "lr": self.lr, "checkpoints": 1}


def captum_tracincp(proxy: Proxy, anchors: Batch, step_rule: StepRule) -> CaptumTracInCP:
    """captum's TracInCP as an estimator: see `CaptumTracInCP`."""
    return CaptumTracInCP(proxy, anchors, step_rule)


PEER_NAMES = ("captum TracInCP",)


def available_peers() -> dict[str, Callable[[Proxy, Batch, StepRule], CaptumTracInCP]]:
    """The peers whose library is installed, by the name the benchmark prints."""
    return {"captum TracInCP": captum_tracincp} if have_captum() else {}
