"""The LLM-as-a-Judge baseline, done the way the paper's judge worked, at benchmark scale.

The paper's judge (a 235B model) solved each pool problem itself and kept the samples whose
final answer agreed with its own (rejection sampling; it kept ~81%). Here the judge is a model
clearly stronger than the proxy:

- the benchmark's *target* architecture (~7x the proxy's parameters), started from the same
  base checkpoint as every fine-tuned target;
- fine-tuned on its own CLEAN problems: `JudgeSettings.n_train` problems drawn on pool-split
  images from a separate random stream ("judge"), so they are neither the pool's problems nor
  anything from the dev/test images. A real judge is trained on data nobody here paid for, so
  its training time is reported (`train_seconds`) but not charged to the selection;
- its *inference* over the pool is charged: `SelectionResult.select_seconds` is the time it
  takes to answer every pool problem.

The judge decides how much to keep (every agreeing sample), so it ignores the keep fraction.
A sample with no parsable final answer never agrees.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stepsift.bench.digits import compose, load_bank
from stepsift.bench.problems import extract_answer, make_clean
from stepsift.bench.selectors import SelectionResult
from stepsift.bench.target import Example, TargetModel, strip_of
from stepsift.bench.trainer import evaluate, finetune, generate_replies
from stepsift.data.record import Record, Turn


@dataclass(frozen=True)
class JudgeSettings:
    n_train: int = 2000  # its own clean problems
    epochs: int = 3
    lr: float = 2e-3
    batch_size: int = 16
    seed: int = 0


@dataclass
class Judge:
    model: TargetModel
    train_seconds: float
    settings: JudgeSettings


def judge_examples(n: int, seed: int) -> list[Example]:
    """`n` clean problems on pool-split images, from the judge's own random stream."""
    bank = load_bank()
    out = []
    for s in make_clean(n, "pool", "judge", seed=seed, stream="judge"):
        gray = compose(bank, s.meta["image_indices"])
        # as the reader gives a LLaVA record: the <image> placeholder is not part of the text
        turns = (
            Turn("user", s.question),
            Turn("assistant", s.answer, supervised=True),
        )
        out.append(Example(turns, np.repeat(gray[:, :, None], 3, axis=2), s.meta["answer"]))
    return out


def train_judge(base: TargetModel, settings: JudgeSettings | None = None) -> Judge:
    """Fine-tune a copy of `base` on the judge's own clean problems (protocol A)."""
    settings = settings or JudgeSettings()
    examples = judge_examples(settings.n_train, settings.seed)
    model, stats = finetune(
        base,
        examples,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        seed=settings.seed,
    )
    return Judge(model, stats.seconds, settings)


def judge_accuracy(judge: Judge, test: Sequence[Record]) -> float:
    """The judge's own exact-match accuracy on the test set (how strong it is)."""
    return evaluate(judge.model, test).accuracy


def judge_select(judge: Judge, records: Sequence[Record]) -> SelectionResult:
    """Keep the samples whose final answer equals the judge's answer to the same prompt."""
    start = time.perf_counter()
    # generation renders only the turns before the answer (`prompt_ids`), and the metadata is
    # not passed on: the judge sees the question and the image, nothing else
    prompts = [Example(tuple(r.turns), strip_of(r.images) if r.images else None) for r in records]
    replies = generate_replies(judge.model, prompts)
    kept, agree = [], {}
    for record, reply in zip(records, replies, strict=True):
        claimed = extract_answer(record.turns[-1].text)
        ok = claimed is not None and claimed == extract_answer(reply)
        agree[record.id] = float(ok)
        if ok:
            kept.append(record.id)
    return SelectionResult(
        "judge",
        kept,
        len(records),
        len(kept),
        time.perf_counter() - start,
        "keeps every sample whose final answer agrees with the judge's (ignores the fraction)",
        agree,
    )
