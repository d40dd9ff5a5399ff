"""The proxy's pre-trained checkpoint: the built-in proxy taught the world before any pool.

The paper's proxy (InternVL3-1B) is a pretrained model that already sees and reasons; only
then is it warmed up on 5% of the pool. A built-in proxy from random weights cannot read
(its misread-digit AUROC was at chance). So the bench gives the proxy what a pretrained
model brings: a generic clean corpus of the same world, the very task mix the target's base
learns from (`base_model.TASKS`: reading one digit, reading a strip, text arithmetic in the
chain's wording), drawn on POOL-split images from a stream of its own. It holds no pool
sample and no dev (anchor) or test image (the digit images come from the pool split, as the
base's and the judge's do), and none of the questions of the pool's task families.

The checkpoint is cached under a folder named by a hash of the config and the seed, like the
target's base; `stepsift score --proxy-init FOLDER` then starts the built-in proxy from it and
warms it up on the pool as usual. The corpus images are written once as PNG files beside
the checkpoint, because the proxy reads records through the same public collation as any
user's data.

    python -m stepsift.bench.proxy_base CACHE_DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from stepsift.bench.base_model import make_task_mix
from stepsift.bench.digits import save_png
from stepsift.bench.target import Example
from stepsift.data.record import Record, Source
from stepsift.proxy.builtin import BuiltinProxy

REPORT = "proxy_base.json"
CORPUS_STREAM = 7  # the digit-bank draws of this corpus: its own stream, not the pool's


@dataclass
class ProxyBaseConfig:
    mix: dict[str, float] = field(
        default_factory=lambda: {"read_one": 0.15, "read_strip": 0.45, "arithmetic": 0.4}
    )
    n_train: int = 8000  # distinct examples, written once as records with PNG files
    n_heldout: int = 400  # to report the checkpoint's loss on unseen examples
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-3
    version: int = 1  # bump when the corpus or the recipe change

    def to_dict(self) -> dict:
        return asdict(self)


def cache_folder(cache_dir: Path, seed: int, config: ProxyBaseConfig) -> Path:
    key = json.dumps({"seed": seed, **config.to_dict()}, sort_keys=True)
    return Path(cache_dir) / f"proxy-base-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def corpus_records(examples: list[Example], folder: Path, prefix: str) -> list[Record]:
    """The examples as records the built-in proxy collates; images saved under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i, ex in enumerate(examples):
        rid = f"{prefix}-{i:06d}"
        images: tuple[Path, ...] = ()
        if ex.pixels is not None:
            path = folder / f"{rid}.png"
            save_png(np.asarray(ex.pixels)[:, :, 0], path)  # the strips are gray in RGB
            images = (path,)
        records.append(Record(rid, ex.turns, images, Source(folder, i + 1), "corpus", ""))
    return records


def mean_loss(proxy: BuiltinProxy, records: list[Record], batch_size: int = 64) -> float:
    losses = []
    with torch.no_grad():
        for lo in range(0, len(records), batch_size):
            batch = proxy.collate(records[lo : lo + batch_size])
            losses.append(proxy.per_sample_loss({}, batch.tensors))
    return float(torch.cat(losses).mean())


def pretrain(folder: Path, seed: int, config: ProxyBaseConfig) -> dict:
    """Train a fresh built-in proxy on the corpus and save it (no optimizer state: the
    pool's warm-up starts its own Adam run from these weights)."""
    start = time.perf_counter()
    rng = np.random.default_rng([seed, CORPUS_STREAM])
    train = corpus_records(make_task_mix(config.n_train, config.mix, rng), folder / "corpus", "c")
    heldout = corpus_records(
        make_task_mix(config.n_heldout, config.mix, rng), folder / "heldout", "h"
    )
    proxy = BuiltinProxy(seed=seed)
    optimizer = torch.optim.AdamW(proxy.model.parameters(), lr=config.lr, weight_decay=0.01)
    order_rng = np.random.default_rng(seed)
    order: list[int] = []
    proxy.model.train()
    first = last = float("nan")
    for step in range(config.steps):
        if len(order) < config.batch_size:
            order += order_rng.permutation(len(train)).tolist()
        idx, order = order[: config.batch_size], order[config.batch_size :]
        # linear warm-up over the first 5%, then cosine to 10%: the recipe of the target's base
        frac = step / max(1, config.steps - 1)
        scale = min(1.0, (step + 1) / max(1, config.steps // 20))
        scale *= 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac))
        for group in optimizer.param_groups:
            group["lr"] = config.lr * scale
        loss = proxy.per_sample_loss({}, proxy.collate([train[i] for i in idx]).tensors).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(proxy.model.parameters(), 1.0)
        optimizer.step()
        first = loss.item() if step == 0 else first
        last = loss.item()
    proxy.model.eval()
    info = {
        "seed": seed,
        "config": config.to_dict(),
        "first_loss": first,
        "last_loss": last,
        "heldout_loss": mean_loss(proxy, heldout),
        "seconds": time.perf_counter() - start,
    }
    proxy.save(folder)
    for part in ("corpus", "heldout"):  # the checkpoint is what is kept, not its corpus
        shutil.rmtree(folder / part, ignore_errors=True)
    return info


def get_proxy_base(
    cache_dir: Path, seed: int = 0, config: ProxyBaseConfig | None = None, log=print
) -> Path:
    """The folder of the pre-trained proxy checkpoint: trained on first use, then loaded."""
    config = config or ProxyBaseConfig()
    folder = cache_folder(cache_dir, seed, config)
    if (folder / REPORT).is_file():
        return folder
    log(f"pre-training the proxy on its generic corpus ({config.steps} steps) -> {folder}")
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=cache_dir))
    try:
        info = pretrain(staging, seed, config)
        (staging / REPORT).write_text(json.dumps(info, indent=1) + "\n")
        if folder.exists():  # another process finished first: keep theirs
            shutil.rmtree(staging)
        else:
            staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(
        f"proxy pre-trained: loss {info['first_loss']:.3f} -> {info['last_loss']:.3f}, "
        f"held-out {info['heldout_loss']:.3f}, {info['seconds']:.0f}s"
    )
    return folder


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache_dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    folder = get_proxy_base(a.cache_dir, a.seed)
    print(json.loads((folder / REPORT).read_text()))


if __name__ == "__main__":
    main()
