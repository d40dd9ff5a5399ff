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

With a v2 pool (many task families, `families.py`), `JudgeSettings.families` is the pool's
family mix (`FamilyMix.weights()`): the judge learns every family of the pool, and answers
are compared with the parser of the sample's family (`meta["family"]`, default chain).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stepsift.bench.digits import compose, load_bank
from stepsift.bench.families import parse_answer
from stepsift.bench.pools import make_clean
from stepsift.bench.selectors import SelectionResult
from stepsift.bench.target import Example, TargetModel, strip_of
from stepsift.bench.trainer import evaluate, finetune, generate_replies, true_family
from stepsift.data.record import Record, Turn


@dataclass(frozen=True)
class JudgeSettings:
    n_train: int = 2000  # its own clean problems
    epochs: int = 3
    lr: float = 2e-3
    batch_size: int = 16
    seed: int = 0
    # the families of its clean problems, as weights (FamilyMix.weights()); None: chain only
    families: dict[str, float] | None = None


@dataclass
class Judge:
    model: TargetModel
    train_seconds: float
    settings: JudgeSettings


def judge_examples(n: int, seed: int, families: Mapping[str, float] | None = None) -> list[Example]:
    """`n` clean problems on pool-split images, from the judge's own random stream, of the
    given families (weights; None: chain only)."""
    bank = load_bank()
    out = []
    for s in make_clean(n, "pool", "judge", seed=seed, stream="judge", families=families):
        pixels = None
        if s.has_image:
            gray = compose(bank, s.meta["image_indices"])
            pixels = np.repeat(gray[:, :, None], 3, axis=2)
        # as the reader gives a LLaVA record: the <image> placeholder is not part of the text
        turns = (
            Turn("user", s.question),
            Turn("assistant", s.answer, supervised=True),
        )
        family = s.meta.get("family", "chain")
        out.append(Example(turns, pixels, s.meta["answer"], family))
    return out


def train_judge(base: TargetModel, settings: JudgeSettings | None = None) -> Judge:
    """Fine-tune a copy of `base` on the judge's own clean problems (protocol A)."""
    settings = settings or JudgeSettings()
    examples = judge_examples(settings.n_train, settings.seed, settings.families)
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
        family = true_family(record)  # metadata['meta']['family'], default chain
        claimed = parse_answer(record.turns[-1].text, family)
        ok = claimed is not None and claimed == parse_answer(reply, family)
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
