"""Warm up a proxy on a random part of the candidate pool.

An untrained proxy's gradients say nothing about the task, and a fully converged
one has nothing left to learn from any sample (the paper found a proxy warmed up on
5% of the pool scored best and a converged one worst). So: a short Adam run on a
random slice of the pool. The Adam state is kept: an Adam-step utility continues from it.

The floors depend on where the proxy starts. The built-in proxy is tiny and starts from
scratch (or from a small base checkpoint): it needs on the order of a hundred steps to
learn the data's format at all, and they cost seconds, so its slice is at least 256
records and its run at least 150 steps. A pretrained model (a Hugging Face proxy) already
speaks the format; a step of it costs seconds to tens of seconds on a CPU, and 150 steps
over a small pool would loop it many times (400 records: six passes, an hour on SmolLM2-
135M) and overfit it. It gets one pass over its slice of at least 64 records: the 5% the
method prescribes, with enough steps for Adam's state to be worth continuing.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from stepsift.data.record import Record
from stepsift.proxy.base import Proxy

# (records, steps) floors by where the proxy starts; see the docstring
SCRATCH_FLOORS = (256, 150)
PRETRAINED_FLOORS = (64, 0)


@dataclass
class WarmupSettings:
    fraction: float = 0.05
    # the slice is at least this many records (or the whole pool), the run at least this
    # many steps; None: by the proxy (SCRATCH_FLOORS or PRETRAINED_FLOORS)
    min_samples: int | None = None
    min_steps: int | None = None
    batch_size: int = 16
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    seed: int = 0


@dataclass
class WarmupReport:
    samples: int
    steps: int
    first_loss: float
    last_loss: float
    seconds: float


def warmup_size(
    pool_size: int, settings: WarmupSettings, pretrained: bool = False
) -> tuple[int, int]:
    """How many records the warm-up uses, and how many steps it takes."""
    floor_samples, floor_steps = PRETRAINED_FLOORS if pretrained else SCRATCH_FLOORS
    if settings.min_samples is not None:
        floor_samples = settings.min_samples
    if settings.min_steps is not None:
        floor_steps = settings.min_steps
    samples = min(pool_size, max(math.ceil(settings.fraction * pool_size), floor_samples))
    steps = max(floor_steps, math.ceil(samples / settings.batch_size))
    return samples, steps


def warmup_plan(pool_size: int, samples: int, steps: int, batch_size: int) -> str:
    """What the warm-up will do, said before it starts (its bar then shows the time left)."""
    passes = steps * batch_size / max(samples, 1)
    return (
        f"warm-up: {samples} of {pool_size} records, {steps} steps of {batch_size} "
        f"({passes:.1f} passes over them)"
    )


def warm_up(
    proxy: Proxy,
    pool: Sequence[Record],
    settings: WarmupSettings,
    progress: bool = True,
    pretrained: bool = False,
) -> WarmupReport:
    """Train `proxy` in place on a random slice of `pool`; store its Adam state on it.
    `pretrained`: the proxy is a pretrained model (PRETRAINED_FLOORS)."""
    if settings.fraction <= 0:
        return WarmupReport(0, 0, float("nan"), float("nan"), 0.0)
    start = time.perf_counter()
    rng = random.Random(settings.seed)
    n_samples, n_steps = warmup_size(len(pool), settings, pretrained)
    if progress:
        print(warmup_plan(len(pool), n_samples, n_steps, settings.batch_size), file=sys.stderr)
    chosen = [pool[i] for i in sorted(rng.sample(range(len(pool)), n_samples))]
    torch.manual_seed(settings.seed)
    names = proxy.step_parameter_names()
    named = dict(proxy.model.named_parameters())
    params = [named[n] for n in names]
    optimizer = torch.optim.Adam(params, lr=settings.lr, betas=settings.betas, eps=settings.eps)
    proxy.model.train()
    losses: list[float] = []
    order: list[int] = []
    bar = tqdm(range(n_steps), desc="warm-up", unit="step", disable=not progress, leave=False,
               file=sys.stderr, dynamic_ncols=True)  # fmt: skip
    for _ in bar:
        if len(order) < settings.batch_size:  # reshuffle once an epoch is used up
            order += rng.sample(range(len(chosen)), len(chosen))
        idx, order = order[: settings.batch_size], order[settings.batch_size :]
        batch = proxy.collate([chosen[i] for i in idx])
        loss = proxy.per_sample_loss({}, batch.tensors).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    proxy.model.eval()
    proxy.adam_state = {
        name: {
            "exp_avg": optimizer.state[p]["exp_avg"].detach().clone(),
            "exp_avg_sq": optimizer.state[p]["exp_avg_sq"].detach().clone(),
            "step": int(optimizer.state[p]["step"]),
        }
        for name, p in zip(names, params, strict=True)
    }
    proxy.adam_hparams = {
        "lr": settings.lr,
        "beta1": settings.betas[0],
        "beta2": settings.betas[1],
        "eps": settings.eps,
    }
    tail = losses[-min(len(losses), 10) :]
    return WarmupReport(
        samples=n_samples,
        steps=n_steps,
        first_loss=losses[0],
        last_loss=sum(tail) / len(tail),
        seconds=time.perf_counter() - start,
    )
