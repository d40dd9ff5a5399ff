"""Fine-tune the target model on a selected subset, and score it on the test set.

Two protocols, as in data-selection papers:

    A  same number of epochs: steps = epochs * ceil(n / batch_size); a smaller subset
       gets fewer steps (the cheaper-training claim of selection)
    B  a fixed number of steps whatever the subset size, cycling the subset (the
       same-compute comparison: does the selected data teach more per step?)

Everything is deterministic given `seed`: the batch order comes from a seeded generator, the
model is a copy of the base, and nothing in the network is random.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from stepsift.bench.families import parse_answer
from stepsift.bench.target import (
    Example,
    TargetModel,
    collate,
    example_from_record,
    prompt_ids,
    reply_text,
)
from stepsift.data.record import Record


@dataclass
class TrainStats:
    seconds: float
    steps: int
    samples_seen: int
    losses: list[float] = field(default_factory=list, repr=False)  # one per step


@dataclass
class EvalResult:
    accuracy: float
    n: int
    seconds: float
    outputs: list[str] = field(default_factory=list, repr=False)
    correct: list[bool] = field(default_factory=list, repr=False)


def as_examples(items: Sequence[Record | Example]) -> list[Example]:
    return [it if isinstance(it, Example) else example_from_record(it) for it in items]


def batch_plan(
    n: int, batch_size: int, steps: int | None, epochs: int | None, seed: int
) -> list[np.ndarray]:
    """Index batches for protocol A (`epochs`) or B (`steps`); exactly one must be given."""
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps (protocol B) or epochs (protocol A)")
    if n == 0:
        raise ValueError("cannot fine-tune on an empty subset")
    rng = np.random.default_rng(seed)
    if epochs is not None:  # A: a fresh shuffle per epoch, the last batch may be short
        plan = []
        for _ in range(epochs):
            order = rng.permutation(n)
            plan += [order[i : i + batch_size] for i in range(0, n, batch_size)]
        return plan
    # B: one endless stream of shuffles, cut into full batches (cycles a small subset)
    assert steps is not None
    need = steps * batch_size
    stream = np.concatenate([rng.permutation(n) for _ in range(math.ceil(need / n))])
    return [stream[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def lr_at(step: int, total: int, lr: float, schedule: str, warmup: int) -> float:
    """Linear warm-up, then constant or cosine decay to 10% of `lr`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}; use 'cosine' or 'constant'")
    progress = (step - warmup) / max(1, total - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train_steps(
    model: TargetModel,
    examples: Sequence[Example],
    plan: Sequence[np.ndarray],
    lr: float,
    schedule: str = "cosine",
    warmup: int = 10,
    weight_decay: float = 0.01,
) -> list[float]:
    """Run AdamW over `plan`'s batches in place; the loss of each step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = min(warmup, len(plan) // 10)  # short runs: warm up for at most a tenth
    model.train()
    losses = []
    for step, idx in enumerate(plan):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, len(plan), lr, schedule, warmup)
        loss = model.loss(collate([examples[i] for i in idx], model.cfg))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


def finetune(
    base: TargetModel,
    records: Sequence[Record | Example],
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    schedule: str = "cosine",
) -> tuple[TargetModel, TrainStats]:
    """A fine-tuned copy of `base` (left untouched): protocol A with `epochs`, B with `steps`."""
    start = time.perf_counter()
    examples = as_examples(records)
    plan = batch_plan(len(examples), batch_size, steps, epochs, seed)
    model = copy.deepcopy(base)
    losses = train_steps(model, examples, plan, lr, schedule)
    seen = sum(len(idx) for idx in plan)
    return model, TrainStats(time.perf_counter() - start, len(plan), seen, losses)


# --- evaluation --------------------------------------------------------------------------------


def true_answer(example_or_record: Example | Record) -> int:
    """A test item's true answer: `Example.answer`, or a record's `metadata["meta"]["answer"]`."""
    if isinstance(example_or_record, Example):
        answer = example_or_record.answer
    else:
        answer = example_or_record.metadata.get("meta", {}).get("answer")
    if answer is None:
        raise ValueError("test item has no true answer (metadata['meta']['answer'])")
    return int(answer)


def true_family(example_or_record: Example | Record) -> str:
    """A test item's task family: `Example.family`, or a record's `meta["family"]` (chain
    where there is none, as in the single-family benchmark)."""
    if isinstance(example_or_record, Example):
        return example_or_record.family
    meta = example_or_record.metadata.get("meta")
    return str(meta.get("family", "chain")) if isinstance(meta, dict) else "chain"


def score(
    outputs: Sequence[str], answers: Sequence[int], families: Sequence[str] | None = None
) -> list[bool]:
    """Exact match of each output's final answer, read by its family's parser (default: all
    chain, i.e. the final `Answer: N`), with the true answer."""
    fams = ["chain"] * len(outputs) if families is None else list(families)
    return [
        parse_answer(text, fam) == ans
        for text, ans, fam in zip(outputs, answers, fams, strict=True)
    ]


def generate_replies(
    model: TargetModel,
    examples: Sequence[Example],
    batch_size: int = 256,
    max_new_tokens: int = 120,
) -> list[str]:
    """Greedy replies, batched; same-length prompts are batched together (less padding)."""
    order = sorted(range(len(examples)), key=lambda i: len(prompt_ids(examples[i].turns)))
    replies: list[str] = [""] * len(examples)
    for lo in range(0, len(order), batch_size):
        chunk = order[lo : lo + batch_size]
        ids = model.generate([examples[i] for i in chunk], max_new_tokens)
        for i, reply in zip(chunk, ids, strict=True):
            replies[i] = reply_text(reply)
    return replies


def evaluate(
    model: TargetModel,
    test_records: Sequence[Record | Example],
    batch_size: int = 256,
    max_new_tokens: int = 120,
) -> EvalResult:
    """Accuracy of greedy answers to each test item's prompt (answers are < 110 bytes), each
    read by its item's family's parser."""
    start = time.perf_counter()
    examples = as_examples(test_records)
    answers = [true_answer(it) for it in test_records]
    families = [true_family(it) for it in test_records]
    outputs = generate_replies(model, examples, batch_size, max_new_tokens)
    correct = score(outputs, answers, families)
    accuracy = sum(correct) / max(1, len(correct))
    return EvalResult(accuracy, len(correct), time.perf_counter() - start, outputs, correct)
