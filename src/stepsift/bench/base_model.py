"""The target's base checkpoint: pre-trained once on a clean, simpler task mix, then cached.

As in the paper, selected subsets fine-tune a base model rather than a random network. The
base learns the skills the benchmark's problems compose, but not the problems themselves:

    read_one    "What digit is this?"  on one digit     -> "The digit is 7."
    read_strip  "Read the digits."     on 2-3 digits    -> "The digits are 3 and 7."
    arithmetic  "What is 3 + 4?"       text only        -> "3 + 4 = 7.\\nAnswer: 7"

Pre-training runs in three stages, each far cheaper per skill learnt than one long run:

    1. classifier  the image cell encoder alone, through a throw-away linear head, learns each
                   cell's digit (or blank) and its column, on single pool digits in strips
    2. shallow     the task mix on the bottom block only: a step costs a quarter of a full one,
                   and a shallow stack learns to copy digits into the reply in far fewer steps
    3. deep        the task mix on all blocks, the added ones starting as the identity, at a
                   lower learning rate so they join in without undoing stage 2

Images come from the digit bank's POOL split only, never dev or test, so no test image is seen
in pre-training. The checkpoint is cached under a folder named by a hash of the config and the
seed: the first `get_base_model` call trains (about two minutes on a 2-core CPU), later ones
load.

    python -m stepsift.bench.base_model CACHE_DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stepsift.bench.digits import GAP, SCALE, compose, load_bank
from stepsift.bench.problems import reading_line
from stepsift.bench.target import Example, TargetConfig, TargetModel, image_tensor, reply_text
from stepsift.bench.trainer import batch_plan, lr_at, train_steps
from stepsift.data.record import Turn

TASKS = ("read_one", "read_strip", "arithmetic")
REPORT = "base.json"


@dataclass
class BaseConfig:
    target: TargetConfig = field(default_factory=TargetConfig)
    mix: dict[str, float] = field(
        default_factory=lambda: {"read_one": 0.15, "read_strip": 0.45, "arithmetic": 0.4}
    )
    # stage 1: the cell encoder as a digit classifier (a step costs ~5% of a full LM step)
    classifier_steps: int = 800
    classifier_batch: int = 64  # strips of 1-3 digits: up to 3 labelled cells each
    classifier_lr: float = 3e-3
    classifier_shift: int = 1  # random shifts by up to this many source px: fewer misreads
    classifier_holdout: float = 0.15  # of the pool's digits, held out to measure the encoder
    # stages 2 and 3: `steps` AdamW steps on the task mix, the last `deep_steps` of them on
    # all blocks, the ones before on the bottom `shallow_layers` blocks only
    steps: int = 1950
    deep_steps: int = 150
    shallow_layers: int = 1
    n_train: int = 31200  # distinct examples; at least what the steps see, so none repeats
    n_heldout: int = 300
    batch_size: int = 16  # more, smaller steps learn more per second than fewer big ones
    lr: float = 5e-3  # shallow stage; 8e-3 already makes reading strips unreliable
    deep_lr: float = 1e-3  # lower, so the grown blocks join in without undoing stage 2
    version: int = 4  # bump when the tasks or the recipe change, so old caches are not reused

    def to_dict(self) -> dict:
        return asdict(self)


def _turns(question: str, answer: str) -> tuple[Turn, ...]:
    return (Turn("user", question), Turn("assistant", answer, supervised=True))


def _strip(rng: np.random.Generator, digits: list[int]) -> np.ndarray:
    bank = load_bank()
    indices = bank.pick(rng, "pool", digits)  # pool split only: dev/test stay unseen
    gray = compose(bank, indices)
    return np.repeat(gray[:, :, None], 3, axis=2)


def make_example(task: str, rng: np.random.Generator) -> Example:
    """One example of `task`; its `answer` is unused (these are scored by exact reply)."""
    if task == "read_one":
        d = int(rng.integers(10))
        return Example(_turns("What digit is this?", f"The digit is {d}."), _strip(rng, [d]))
    if task == "read_strip":
        digits = [int(x) for x in rng.integers(0, 10, size=int(rng.integers(2, 4)))]
        return Example(_turns("Read the digits.", reading_line(digits)), _strip(rng, digits))
    if task == "arithmetic":
        return _arithmetic(rng)
    raise ValueError(f"unknown base task {task!r}; known: {TASKS}")


_OPS = ("+", "+3", "-", "*", "larger", "even", "max_min")


def _arithmetic(rng: np.random.Generator) -> Example:
    """A text-only computation on digits given as text, in the chain's own wording."""
    op = str(rng.choice(_OPS))
    n = 3 if op in ("+3", "even", "max_min") else 2
    d = [
        int(x)
        for x in (rng.choice(10, 2, replace=False) if op == "larger" else rng.integers(0, 10, n))
    ]
    listed = ", ".join(map(str, d[:-1])) + f" and {d[-1]}"
    if op == "larger":
        r = max(d)
        q, lines = (
            f"Which is larger, {d[0]} or {d[1]}?",
            [f"Of {d[0]} and {d[1]}, the larger is {r}."],
        )
    elif op == "even":
        evens = [str(x) for x in d if x % 2 == 0]
        r = len(evens)
        q, lines = (
            f"How many of {listed} are even?",
            [f"Even digits: {', '.join(evens) or 'none'}. Count = {r}."],
        )
    elif op == "max_min":
        r = max(d) + min(d)
        q = f"What is the largest plus the smallest of {listed}?"
        lines = [f"Largest {max(d)}, smallest {min(d)}.", f"{max(d)} + {min(d)} = {r}."]
    else:
        expr = f" {op[0]} ".join(map(str, d))
        r = {"+": sum(d), "-": d[0] - d[-1], "*": d[0] * d[-1]}[op[0]]
        q, lines = f"What is {expr}?", [f"{expr} = {r}."]
    return Example(_turns(q, "\n".join([*lines, f"Answer: {r}"])), None, r)


def make_task_mix(n: int, mix: dict[str, float], rng: np.random.Generator) -> list[Example]:
    names = list(mix)
    weights = np.array([mix[t] for t in names], dtype=float)
    tasks = rng.choice(names, size=n, p=weights / weights.sum())
    return [make_example(str(t), rng) for t in tasks]


def heldout_accuracy(model: TargetModel, examples: list[Example]) -> dict[str, float]:
    """Exact-reply accuracy per task (and overall) on examples the base did not train on."""
    replies = model.generate(examples, max_new_tokens=64)  # the longest reply is 45 bytes
    hits: dict[str, list[bool]] = {}
    for ex, ids in zip(examples, replies, strict=True):
        task = _task_of(ex)
        hits.setdefault(task, []).append(reply_text(ids) == ex.turns[-1].text)
    acc = {t: float(np.mean(h)) for t, h in sorted(hits.items())}
    acc["all"] = float(np.mean([x for h in hits.values() for x in h]))
    return acc


def _task_of(ex: Example) -> str:
    q = ex.turns[0].text
    return "read_one" if q.startswith("What digit") else "read_strip" if q[0] == "R" else "arith"


# --- stage 1: the cell encoder as a digit classifier -------------------------------------------

BLANK = 10  # the class of an empty cell (strips of 1-2 digits), so the encoder also counts
CELL_PX = (8 + GAP) * SCALE  # a digit and its gap in a strip: one target cell


def classifier_split(holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool digit indices to train the classifier on, and pool digits held out to measure it."""
    pool = np.random.default_rng([seed, 2]).permutation(load_bank().splits["pool"])
    n_out = round(holdout * len(pool))
    return np.sort(pool[n_out:]), np.sort(pool[:n_out])


def digit_images(indices: np.ndarray, cfg: TargetConfig) -> Tensor:
    """Each digit alone as the target sees it (compose, fit_image, image_tensor): (N, C, H, W)."""
    bank = load_bank()
    images, _ = image_tensor([Example((), compose(bank, [int(i)])) for i in indices], cfg)
    return images


def strip_images(singles: Tensor, rows: Tensor) -> Tensor:
    """Strips of `singles` (rows of -1: blank cells), exactly as `compose` would lay them out:
    a single digit fills its image's first cell on black (-1), and cell j starts j cells in."""
    out = torch.full((len(rows), *singles.shape[1:]), -1.0)
    width = out.shape[-1]
    for j in range(rows.shape[1]):
        lo, hi = j * CELL_PX, min((j + 1) * CELL_PX, width)
        used = rows[:, j] >= 0
        out[used, ..., lo:hi] = singles[rows[used, j], ..., : hi - lo]
    return out


def _shifted(images: Tensor, dy: int, dx: int) -> Tensor:
    """`images` moved by (dy, dx) pixels, filling with black."""
    out = images.roll((dy, dx), dims=(-2, -1))
    out[..., : max(dy, 0), :] = out[..., out.shape[-2] + min(dy, 0) :, :] = -1.0
    out[..., : max(dx, 0)] = out[..., out.shape[-1] + min(dx, 0) :] = -1.0
    return out


def _cell_logits(model: TargetModel, head: nn.Linear, images: Tensor) -> Tensor:
    # the target's own image path (pooling, cells, col_emb), RMS-normed as each block sees it
    tokens = model.embed_images(images, torch.ones(len(images)))
    return head(F.rms_norm(tokens, tokens.shape[-1:]))


def train_classifier(model: TargetModel, cfg: BaseConfig, seed: int) -> float:
    """Train `model`'s cell encoder (patch_conv, patch_out, col_emb) in place on pool digits.

    A throw-away linear head reads each cell's token of strips of 1-3 digits: its digit or
    blank, and its column. Without the column, the digit features drown the column embedding
    and the LM stages barely learn which digit comes first. Returns the digit accuracy on
    held-out pool digits.
    """
    tc = cfg.target
    if (tc.image_height, tc.cell * tc.pool) != (8 * SCALE, CELL_PX):
        raise ValueError("the classifier stage needs target cells that match the digit cells")
    k, batch, shift = tc.n_image_tokens, cfg.classifier_batch, cfg.classifier_shift
    train_idx, held_idx = classifier_split(cfg.classifier_holdout, seed)
    # rendered once, a step only lays them out; in one channel (the digits are gray), so
    # the layout costs a third, and the channels are repeated as a view at the end
    train_images = digit_images(train_idx, tc)[:, :1]
    # a digit's label by its row in train_images; row -1 (a blank cell) picks the BLANK at the end
    labels_of = torch.from_numpy(np.append(load_bank().labels[train_idx], BLANK))
    head = nn.Linear(tc.d_model, BLANK + 1 + k)  # digit-or-blank logits, then column logits
    encoder = [*model.patch_conv.parameters(), *model.patch_out.parameters(), model.col_emb]
    optimizer = torch.optim.AdamW([*encoder, *head.parameters()], lr=cfg.classifier_lr)
    columns = torch.arange(k).repeat(batch)
    gen = torch.Generator().manual_seed(seed)
    for step in range(cfg.classifier_steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg.classifier_steps, cfg.classifier_lr, "cosine", 10)
        rows = torch.randint(len(train_idx), (batch, k), generator=gen)
        n_digits = torch.randint(1, k + 1, (batch, 1), generator=gen)
        rows[torch.arange(k) >= n_digits] = -1  # strips of 1..k digits, then blank cells
        images = strip_images(train_images, rows)
        if shift:  # move each strip by up to `shift` source px: fewer misreads of new digits
            moves = torch.randint(-shift, shift + 1, (batch, 2), generator=gen) * SCALE
            for move in moves.unique(dim=0):
                same = (moves == move).all(dim=1)
                images[same] = _shifted(images[same], *move.tolist())
        images = images.expand(-1, tc.image_channels, -1, -1)
        logits = _cell_logits(model, head, images).flatten(0, 1)
        loss = F.cross_entropy(logits[:, : BLANK + 1], labels_of[rows].flatten())
        loss = loss + F.cross_entropy(logits[:, BLANK + 1 :], columns)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    # every held-out digit once, in strips of k (so in every cell position)
    rows = torch.arange(-(-len(held_idx) // k) * k)
    rows = torch.where(rows < len(held_idx), rows, -1).view(-1, k)
    labels = torch.from_numpy(np.append(load_bank().labels[held_idx], BLANK))[rows]
    with torch.no_grad():
        images = strip_images(digit_images(held_idx, tc), rows)
        guess = _cell_logits(model, head, images)[..., : BLANK + 1].argmax(-1)
    return float((guess == labels)[rows >= 0].float().mean())


# --- all stages --------------------------------------------------------------------------------


def pretrain(cfg: BaseConfig, seed: int) -> tuple[TargetModel, dict]:
    """Train a base from scratch in three stages (see the module docstring).

    The report holds the final loss, each stage's seconds, the classifier stage's accuracy on
    held-out pool digits and the held-out accuracy on the task mix.
    """
    clock = [time.perf_counter()]

    def lap() -> float:
        clock.append(time.perf_counter())
        return clock[-1] - clock[-2]

    torch.manual_seed(seed)
    model = TargetModel(cfg.target)
    digit_accuracy = train_classifier(model, cfg, seed)
    seconds = {"classifier": lap()}
    train = make_task_mix(cfg.n_train, cfg.mix, np.random.default_rng([seed, 0]))
    heldout = make_task_mix(cfg.n_heldout, cfg.mix, np.random.default_rng([seed, 1]))
    plan = batch_plan(len(train), cfg.batch_size, cfg.steps, None, seed)
    n_shallow = max(0, cfg.steps - cfg.deep_steps)
    seconds["data"] = lap()
    blocks, n = model.blocks, cfg.shallow_layers
    model.blocks = nn.ModuleList(blocks[:n])  # train_steps optimises only what is attached
    losses = train_steps(model, train, plan[:n_shallow], cfg.lr, "cosine", warmup=20)
    model.blocks = blocks
    seconds["shallow"] = lap()
    with torch.no_grad():  # no residual writes: the grown blocks start as the identity
        for block in blocks[n:]:
            block.attn.proj.weight.zero_()
            block.mlp.down.weight.zero_()
    losses += train_steps(model, train, plan[n_shallow:], cfg.deep_lr, "cosine", warmup=20)
    seconds["deep"] = lap()
    report = {
        "seed": seed,
        "steps": cfg.steps,
        "final_loss": float(np.mean(losses[-20:])),
        "train_seconds": clock[-1] - clock[0],
        "seconds": seconds,
        "classifier_heldout_accuracy": digit_accuracy,
        "heldout_accuracy": heldout_accuracy(model, heldout),
    }
    return model, report


def cache_key(cfg: BaseConfig, seed: int) -> str:
    blob = json.dumps({"config": cfg.to_dict(), "seed": seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def base_dir(cache_dir: str | os.PathLike[str], cfg: BaseConfig, seed: int) -> Path:
    return Path(cache_dir) / f"base-{cache_key(cfg, seed)}"


def get_base_model(
    cache_dir: str | os.PathLike[str], seed: int = 0, config: BaseConfig | None = None
) -> TargetModel:
    """Load the cached base for (config, seed), or pre-train and cache it first."""
    cfg = config or BaseConfig()
    folder = base_dir(cache_dir, cfg, seed)
    if (folder / REPORT).is_file():
        return TargetModel.load(folder)
    model, report = pretrain(cfg, seed)
    acc = report["heldout_accuracy"]
    print(
        f"base model pre-trained in {report['train_seconds']:.0f}s: final loss "
        f"{report['final_loss']:.3f}, held-out accuracy "
        + ", ".join(f"{k} {v:.1%}" for k, v in acc.items())
    )
    # write to a temporary folder, then rename: a crash never leaves a half-written cache
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".base-", dir=folder.parent))
    model.save(tmp)
    (tmp / REPORT).write_text(json.dumps({**report, "config": cfg.to_dict()}, indent=2) + "\n")
    try:
        tmp.rename(folder)
    except OSError:  # another process cached it first; theirs is equivalent
        shutil.rmtree(tmp, ignore_errors=True)
    return model


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Pre-train (or load) the benchmark's base model.")
    ap.add_argument("cache_dir")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    get_base_model(a.cache_dir, a.seed)
    print(f"base model in {base_dir(a.cache_dir, BaseConfig(), a.seed)}")


if __name__ == "__main__":
    main()
