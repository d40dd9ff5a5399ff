"""Shared by the utility tests: tiny records and images, a tiny float64 proxy, and the
slow, obviously-correct reference that takes real torch.optim steps one candidate at a
time (deep-copy the model, backpropagate the candidate alone, step, re-score anchors)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from stepsift.data.record import Record, Source, Turn
from stepsift.proxy.builtin import BuiltinProxy
from stepsift.proxy.warmup import WarmupSettings, warm_up

RTOL = 1e-6
SMALL = {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_len": 96}
MakeOptimizer = Callable[[dict[str, nn.Parameter], list[str]], torch.optim.Optimizer]


# -- records and images --------------------------------------------------------------
def make_record(rid: str, user: str, reply: str, images: Sequence[Path] = ()) -> Record:
    turns = (Turn("user", user), Turn("assistant", reply, supervised=True))
    return Record(
        id=rid,
        turns=turns,
        images=tuple(images),
        source=Source(Path("test.jsonl"), 1),
        format="test",
        raw="{}",
    )


def make_png(path: Path, width: int, height: int, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


# -- the reference ----------------------------------------------------------------------
def loss_alone(proxy: BuiltinProxy, model: nn.Module, rec: Record) -> Tensor:
    """Mean token loss of one record, collated alone (no padding), from `model` itself."""
    t = proxy.collate([rec]).tensors
    logits = model(t["input_ids"], t["images"], t["has_image"])[0]
    mask = t["loss_mask"][0]
    return F.cross_entropy(logits[mask], t["labels"][0][mask])


def anchor_mean(proxy: BuiltinProxy, model: nn.Module, anchors: Sequence[Record]) -> float:
    with torch.no_grad():
        return sum(loss_alone(proxy, model, a).item() for a in anchors) / len(anchors)


def reference(
    proxy: BuiltinProxy,
    candidates: Sequence[Record],
    anchors: Sequence[Record],
    make_optimizer: MakeOptimizer,
    names: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: copy the model, take a real optimizer step on it, re-score anchors."""
    base = anchor_mean(proxy, proxy.model, anchors)
    utilities, losses = [], []
    for cand in candidates:
        model = copy.deepcopy(proxy.model)
        named = dict(model.named_parameters())
        optimizer = make_optimizer(named, list(named) if names is None else names)
        loss = loss_alone(proxy, model, cand)
        loss.backward()
        optimizer.step()
        utilities.append(base - anchor_mean(proxy, model, anchors))
        losses.append(loss.item())
    return np.array(utilities), np.array(losses)


def sgd(lr: float) -> MakeOptimizer:
    return lambda named, names: torch.optim.SGD([named[n] for n in names], lr=lr)


def adam(lr: float, betas=(0.9, 0.999), eps=1e-8, state=None) -> MakeOptimizer:
    """A real torch Adam; with `state`, continuing from that (stepsift-format) state."""

    def make(named: dict[str, nn.Parameter], names: list[str]) -> torch.optim.Optimizer:
        optimizer = torch.optim.Adam([named[n] for n in names], lr=lr, betas=betas, eps=eps)
        for n in names if state else ():
            st = state[n]
            optimizer.state[named[n]] = {
                "step": torch.tensor(float(st["step"])),
                "exp_avg": st["exp_avg"].clone(),
                "exp_avg_sq": st["exp_avg_sq"].clone(),
            }
        return optimizer

    return make


def flat_grads(proxy: BuiltinProxy, records: Sequence[Record], names: list[str]) -> list[Tensor]:
    """Each record's gradient, from a plain backward of its loss computed alone."""
    named = dict(proxy.model.named_parameters())
    out = []
    for rec in records:
        grads = torch.autograd.grad(loss_alone(proxy, proxy.model, rec), [named[n] for n in names])
        out.append(torch.cat([g.reshape(-1) for g in grads]))
    return out


def warm_briefly(proxy: BuiltinProxy, records: Sequence[Record]) -> None:
    """A few warm-up steps: enough to give the proxy a real Adam state."""
    settings = WarmupSettings(min_samples=4, min_steps=3, batch_size=2, fraction=1.0)
    warm_up(proxy, records, settings, progress=False)
