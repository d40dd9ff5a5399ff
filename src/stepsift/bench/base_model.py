"""The target's base checkpoint: pre-trained once on a clean, simpler task mix, then cached.

As in the paper, selected subsets fine-tune a base model rather than a random network. The
base learns the skills the benchmark's problems compose, but not the problems themselves:

    read_one    "What digit is this?"  on one digit     -> "The digit is 7."
    read_strip  "Read the digits."     on 2-3 digits    -> "The digits are 3 and 7."
    arithmetic  "What is 3 + 4?"       text only        -> "3 + 4 = 7.\\nAnswer: 7"

Images come from the digit bank's POOL split only, never dev or test, so no test image is seen
in pre-training. The checkpoint is cached under a folder named by a hash of the config and the
seed: the first `get_base_model` call trains (a few minutes on a laptop CPU), later ones load.

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

from stepsift.bench.digits import compose, load_bank
from stepsift.bench.problems import reading_line
from stepsift.bench.target import Example, TargetConfig, TargetModel, reply_text
from stepsift.bench.trainer import batch_plan, train_steps
from stepsift.data.record import Turn

TASKS = ("read_one", "read_strip", "arithmetic")
REPORT = "base.json"


@dataclass
class BaseConfig:
    target: TargetConfig = field(default_factory=TargetConfig)
    mix: dict[str, float] = field(
        default_factory=lambda: {"read_one": 0.15, "read_strip": 0.45, "arithmetic": 0.4}
    )
    n_train: int = 16000  # distinct examples; at least what the steps see, so none repeats
    n_heldout: int = 300
    steps: int = 1000
    batch_size: int = 16  # more, smaller steps learn more per second than fewer big ones
    lr: float = 3e-3
    version: int = 3  # bump whenever the task generator changes, so old caches are not reused

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
    replies = model.generate(examples, max_new_tokens=40)
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


def pretrain(cfg: BaseConfig, seed: int) -> tuple[TargetModel, dict]:
    """Train a base from scratch; the report holds the final loss and held-out accuracy."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = TargetModel(cfg.target)
    train = make_task_mix(cfg.n_train, cfg.mix, np.random.default_rng([seed, 0]))
    heldout = make_task_mix(cfg.n_heldout, cfg.mix, np.random.default_rng([seed, 1]))
    plan = batch_plan(len(train), cfg.batch_size, cfg.steps, None, seed)
    losses = train_steps(model, train, plan, cfg.lr, "cosine", warmup=20)
    report = {
        "seed": seed,
        "steps": cfg.steps,
        "final_loss": float(np.mean(losses[-20:])),
        "train_seconds": time.perf_counter() - start,
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
