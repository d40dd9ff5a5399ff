"""The estimators' anchor state (g_A at the shared step, the GGN sketch, LESS's projected
anchor gradients), computed once per run and saved in the run's proxy folder, so every
worker (Ray actors, shards, a resumed run) loads it instead of recomputing it.

The file records a fingerprint of everything the state depends on: the method and its
settings, the step rule (Adam's state included), the collated anchors' tensors, and a
checksum of the step parameters' values. A file with another fingerprint is recomputed
and replaced. Workers that start together take a lock on the file, so one computes and
the rest load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from stepsift.data.atomic import atomic_write
from stepsift.proxy.base import Batch, Proxy
from stepsift.utility.steps import AdamStep, StepRule

try:  # POSIX; elsewhere concurrent workers may each compute the state (still correct)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


def state_path(folder: Path, method: str) -> Path:
    return Path(folder) / f"anchor-state-{method}.pt"


def _hash_tensor(h: Any, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def _checksum(h: Any, t: torch.Tensor) -> None:
    """A cheap summary of a (possibly huge, possibly GPU) tensor's values: dtype, shape, sum,
    sum of squares and a strided sample, computed where the tensor lives."""
    flat = t.detach().reshape(-1)
    stride = max(1, flat.numel() // 1024)
    summary = torch.cat(
        [flat.double().sum().reshape(1), (flat.double() ** 2).sum().reshape(1),
         flat[::stride].double()]
    )  # fmt: skip
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    _hash_tensor(h, summary)


def state_fingerprint(
    method: str, settings: dict, proxy: Proxy, anchors: Batch, step_rule: StepRule
) -> str:
    """What the anchor state depends on, hashed."""
    h = hashlib.sha256()
    h.update(json.dumps({"method": method, **settings}, sort_keys=True, default=str).encode())
    h.update(json.dumps(step_rule.describe(), sort_keys=True).encode())
    h.update(json.dumps(anchors.ids).encode())
    for name in sorted(anchors.tensors):
        h.update(name.encode())
        _hash_tensor(h, anchors.tensors[name])
    for name, p in proxy.step_parameters().items():
        h.update(name.encode())
        _checksum(h, p)
    if isinstance(step_rule, AdamStep):
        for name in sorted(step_rule.state):
            st = step_rule.state[name]
            h.update(f"{name}:{int(st['step'])}".encode())
            _checksum(h, st["exp_avg"])
            _checksum(h, st["exp_avg_sq"])
    return h.hexdigest()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path`.lock while the block runs (waits for other holders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def load_or_build(
    path: Path,
    fingerprint: str,
    build: Callable[[dict | None], Any],
    device: torch.device,
) -> tuple[Any, bool]:
    """`build(state)` with the state saved at `path` when its fingerprint matches, else
    `build(None)` (which computes it) and save the new estimator's `export_state()`.
    Returns (estimator, whether the state was loaded)."""
    path = Path(path)
    with locked(path):
        if path.is_file():
            try:
                saved = torch.load(path, map_location=device, weights_only=True)
            except Exception:  # unreadable (e.g. from another torch): recompute it
                saved = {}
            if saved.get("fingerprint") == fingerprint:
                return build(saved["state"]), True
        estimator = build(None)
        payload = {"fingerprint": fingerprint, "state": estimator.export_state()}
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
        return estimator, False
