"""Warm up a proxy on a random part of the candidate pool.

An untrained proxy's gradients say nothing about the task, and a fully converged
one has nothing left to learn from any sample (the paper found a proxy warmed up on
5% of the pool scored best and a converged one worst). So: a short Adam run on a
random slice of the pool, with a floor on both the slice and the number of steps
so that a small pool still yields a proxy that has learned the format.
The Adam state is kept: an Adam-step utility continues from it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from stepsift.data.record import Record
from stepsift.proxy.base import Proxy


@dataclass
class WarmupSettings:
    fraction: float = 0.05
    min_samples: int = 256  # the slice is at least this many records (or the whole pool)
    min_steps: int = 150
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


def warmup_size(pool_size: int, settings: WarmupSettings) -> tuple[int, int]:
    """How many records the warm-up uses, and how many steps it takes."""
    samples = min(pool_size, max(math.ceil(settings.fraction * pool_size), settings.min_samples))
    steps = max(settings.min_steps, math.ceil(samples / settings.batch_size))
    return samples, steps


def warm_up(
    proxy: Proxy,
    pool: Sequence[Record],
    settings: WarmupSettings,
    progress: bool = True,
) -> WarmupReport:
    """Train `proxy` in place on a random slice of `pool`; store its Adam state on it."""
    if settings.fraction <= 0:
        return WarmupReport(0, 0, float("nan"), float("nan"), 0.0)
    start = time.perf_counter()
    rng = random.Random(settings.seed)
    n_samples, n_steps = warmup_size(len(pool), settings)
    chosen = [pool[i] for i in sorted(rng.sample(range(len(pool)), n_samples))]
    torch.manual_seed(settings.seed)
    names = proxy.step_parameter_names()
    named = dict(proxy.model.named_parameters())
    params = [named[n] for n in names]
    optimizer = torch.optim.Adam(params, lr=settings.lr, betas=settings.betas, eps=settings.eps)
    proxy.model.train()
    losses: list[float] = []
    order: list[int] = []
    bar = tqdm(range(n_steps), desc="warm-up", unit="step", disable=not progress, leave=False)
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
