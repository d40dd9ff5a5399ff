"""Visual digit-math problems, their chain-of-thought answers, and tagged noise processes.

A problem is a question about 2-3 digits shown in an image. Its clean answer reads the digits,
computes, and ends with the line `Answer: N`:

    The digits are 3, 7 and 5.
    3 + 7 + 5 = 15.
    Answer: 15

`make_pool` builds a candidate pool in which a fraction `noise_rate` of samples is corrupted
the way a generator model's outputs go wrong (misread digit, arithmetic slip, final line that
disagrees with the chain, truncation, off-task text, near-duplicates). The default
`noise_rate=0.4` was chosen before looking at any results, to mimic a noisy synthetic pool; the
default mix weighs the six noise types equally. Every sample's `meta` records its noise type
and the true answer; the scorer never sees it. Anchor (dev) and test problems are always clean.

This module is the single-family (chain) generator and the pieces the other families build
on; `bench/pools.py` chooses between it and the many-family generator v2
(`bench/pool_mix.py`), and `families.is_correct` grades an answer by its family's parser.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stepsift.bench.digits import DigitBank, load_bank

NOISE_TYPES = (
    "misread",
    "arithmetic",
    "answer_mismatch",
    "truncated",
    "off_task",
    "near_duplicate",
)
DEFAULT_NOISE_RATE = 0.4  # chosen before looking at any results
DEFAULT_NOISE_MIX: dict[str, float] = {t: 1.0 for t in NOISE_TYPES}

# Independent random streams, so e.g. a bigger test set does not change the pool. "judge" is
# the judge baseline's own clean training problems: pool-split images, but not the pool.
# "rules" picks the v2 pool's systematic error rules (noise_kinds.Rules).
STREAMS = {"pool": 0, "dev": 1, "test": 2, "judge": 3, "rules": 4}


# --- templates ---------------------------------------------------------------------------------


def _sum_render(d: Sequence[int], r: int) -> list[str]:
    return [" + ".join(map(str, d)) + f" = {r}."]


def _count_even_render(d: Sequence[int], r: int) -> list[str]:
    evens = [str(x) for x in d if x % 2 == 0]
    return [f"Even digits: {', '.join(evens) or 'none'}. Count = {r}."]


def _max_min_render(d: Sequence[int], r: int) -> list[str]:
    return [f"Largest {max(d)}, smallest {min(d)}.", f"{max(d)} + {min(d)} = {r}."]


@dataclass(frozen=True)
class Template:
    """A question about the digits, how to solve it, and how a solver plausibly slips."""

    name: str
    question: str
    sizes: tuple[int, ...]  # how many digits the image may hold
    solve: Callable[[Sequence[int]], int]
    render: Callable[[Sequence[int], int], list[str]]  # computation lines, ending in the result
    slips: Callable[[Sequence[int], int], list[int]]  # plausible wrong results
    distinct: bool = False  # digits must differ (e.g. "which is larger" needs no tie)
    signed: bool = False  # the answer may be negative

    def accepts(self, digits: Sequence[int]) -> bool:
        return len(digits) in self.sizes and (not self.distinct or len(set(digits)) == len(digits))


def near_slips(r: int) -> list[int]:
    return [r + 1, r - 1, r + 2, r - 2, r + 10, r - 10]  # off-by-one and carry slips


TEMPLATES: tuple[Template, ...] = (
    Template(
        "sum",
        "What is the sum of the digits?",
        (2, 3),
        sum,
        _sum_render,
        lambda d, r: near_slips(r),
    ),
    Template(
        "difference",
        "What is the first digit minus the second digit?",
        (2,),
        lambda d: d[0] - d[1],
        lambda d, r: [f"{d[0]} - {d[1]} = {r}."],
        lambda d, r: [*near_slips(r), -r],  # -r: subtracting the wrong way round
        signed=True,
    ),
    Template(
        "product",
        "What is the product of the two digits?",
        (2,),
        lambda d: d[0] * d[1],
        lambda d, r: [f"{d[0]} * {d[1]} = {r}."],
        lambda d, r: [r + d[0], r - d[0], r + d[1], r - d[1], r + 1, r - 1, r + 10, d[0] + d[1]],
    ),
    Template(
        "larger",
        "Which of the two digits is larger?",
        (2,),
        max,
        lambda d, r: [f"Of {d[0]} and {d[1]}, the larger is {r}."],
        lambda d, r: [min(d)],  # picking the smaller one
        distinct=True,
    ),
    Template(
        "count_even",
        "How many of the digits are even?",
        (3,),
        lambda d: sum(x % 2 == 0 for x in d),
        _count_even_render,
        lambda d, r: [x for x in (r - 1, r + 1) if x <= len(d)],
    ),
    Template(
        "max_plus_min",
        "What is the largest digit plus the smallest digit?",
        (3,),
        lambda d: max(d) + min(d),
        _max_min_render,
        lambda d, r: [*near_slips(r), max(d) - min(d)],
    ),
)
TEMPLATE_BY_NAME = {t.name: t for t in TEMPLATES}


def reading_line(digits: Sequence[int]) -> str:
    """'The digits are 3 and 4.' / 'The digits are 3, 7 and 5.'"""
    head = ", ".join(map(str, digits[:-1]))
    return f"The digits are {head} and {digits[-1]}."


def chain(template: Template, digits: Sequence[int], result: int | None = None) -> list[str]:
    """Reasoning lines (no final line) for `digits`; `result` overrides the computed value."""
    r = template.solve(digits) if result is None else result
    return [reading_line(digits), *template.render(digits, r)]


def solution(template: Template, digits: Sequence[int]) -> str:
    """The clean chain-of-thought answer, ending in `Answer: N`."""
    return "\n".join([*chain(template, digits), f"Answer: {template.solve(digits)}"])


def wrong_results(template: Template, digits: Sequence[int]) -> list[int]:
    """Distinct plausible wrong results (slips), in a fixed order."""
    r = template.solve(digits)
    out = [x for x in template.slips(digits, r) if x != r and (template.signed or x >= 0)]
    return list(dict.fromkeys(out))


# --- parsing -----------------------------------------------------------------------------------

_FINAL = re.compile(r"Answer:\s*(-?\d+)\.?")
_READING = re.compile(r"digits(?: are)? ((?:\d, )*\d and \d)\.")


def extract_answer(text: str) -> int | None:
    """The integer on the last `Answer: N` line; None if there is none or it is malformed.

    Only the last line starting with "Answer" counts, so a trailing `Answer: ` after a
    well-formed one is still a malformed (None) answer.
    """
    finals = [s for s in (line.strip() for line in text.splitlines()) if s.startswith("Answer")]
    if not finals:
        return None
    m = _FINAL.fullmatch(finals[-1])
    return int(m.group(1)) if m else None


def stated_digits(text: str) -> list[int] | None:
    """The digits the chain says it read ('The digits are 3, 7 and 5.'), or None."""
    m = _READING.search(text)
    return [int(c) for c in re.findall(r"\d", m.group(1))] if m else None


def last_computed_value(text: str) -> int | None:
    """The last number in the reasoning, i.e. before any `Answer` line."""
    body = [line for line in text.splitlines() if not line.strip().startswith("Answer")]
    nums = re.findall(r"-?\d+", "\n".join(body))
    return int(nums[-1]) if nums else None


# --- samples -----------------------------------------------------------------------------------


@dataclass
class Sample:
    """One question/answer pair about one image, before it is written to disk.

    `image_of` is the id of the sample whose PNG this one shows (itself, unless it is a
    near-duplicate reusing another sample's file); `brightness` < 1 marks a dimmed image copy.
    `has_image` is False for a text-only problem (families' `text_arith`): no PNG, no image.
    """

    id: str
    question: str
    answer: str
    meta: dict[str, Any]
    image_of: str = ""
    brightness: float = 1.0
    has_image: bool = True

    def __post_init__(self) -> None:
        self.image_of = self.image_of or self.id


@dataclass(frozen=True)
class _Problem:
    template: Template
    digits: list[int]
    image_indices: list[int]


def draw_digits(rng: np.random.Generator, template: Template) -> list[int]:
    k = int(rng.choice(template.sizes))
    if template.distinct:
        return [int(x) for x in rng.choice(10, size=k, replace=False)]
    return [int(x) for x in rng.integers(0, 10, size=k)]


def _draw_problem(rng: np.random.Generator, bank: DigitBank, split: str) -> _Problem:
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    digits = draw_digits(rng, template)
    return _Problem(template, digits, bank.pick(rng, split, digits))


# --- noise processes ---------------------------------------------------------------------------
# Each takes a problem and returns (answer text, extra meta), or None when the problem cannot
# carry that kind of noise (e.g. no misreading changes the answer); the caller then redraws.

Noiser = Callable[[_Problem, np.random.Generator], tuple[str, dict[str, Any]] | None]

# Digits that handwritten-digit readers commonly confuse; tried before arbitrary misreads.
CONFUSIONS = {
    0: (8, 6),
    1: (7, 4),
    2: (7, 3),
    3: (8, 5, 9),
    4: (9, 1),
    5: (6, 3, 9),
    6: (5, 0, 8),
    7: (1, 2),
    8: (3, 0, 9),
    9: (4, 8, 3),
}


def misreadings(digits: Sequence[int], rng: np.random.Generator) -> Iterator[list[int]]:
    """`digits` with one digit misread, in the order a misreading noiser tries them: positions
    in random order, at each the common confusions first, then any other digit. Lazy, so the
    random draws stop where the caller stops."""
    for pos in rng.permutation(len(digits)):
        d = digits[pos]
        likely = list(rng.permutation(CONFUSIONS[d]))
        others = [x for x in rng.permutation(10) if x != d and x not in likely]
        for wrong in [*likely, *others]:
            seen = list(digits)
            seen[pos] = int(wrong)
            yield seen


def _misread(p: _Problem, rng: np.random.Generator) -> tuple[str, dict[str, Any]] | None:
    true = p.template.solve(p.digits)
    for seen in misreadings(p.digits, rng):
        # the rest of the chain follows the wrong reading, so the answer must change
        if p.template.accepts(seen) and p.template.solve(seen) != true:
            return solution(p.template, seen), {"stated_digits": seen}
    return None


def _arithmetic(p: _Problem, rng: np.random.Generator) -> tuple[str, dict[str, Any]] | None:
    wrong = wrong_results(p.template, p.digits)
    if not wrong:
        return None
    r = int(rng.choice(wrong))
    return "\n".join([*chain(p.template, p.digits, r), f"Answer: {r}"]), {}


def _answer_mismatch(p: _Problem, rng: np.random.Generator) -> tuple[str, dict[str, Any]] | None:
    true = p.template.solve(p.digits)
    # a slip-like value or one of the digits themselves, as a generator's final line might say
    wrong = list(dict.fromkeys([*wrong_results(p.template, p.digits), *p.digits]))
    wrong = [w for w in wrong if w != true]
    if not wrong:
        return None
    final = int(rng.choice(wrong))
    return "\n".join([*chain(p.template, p.digits), f"Answer: {final}"]), {}


MALFORMED_FINALS = ("Answer: ", "Answr {r}", "Answer =", "Answer: the result")


def _truncated(p: _Problem, rng: np.random.Generator) -> tuple[str, dict[str, Any]] | None:
    body = "\n".join(chain(p.template, p.digits))
    if rng.random() < 0.5:
        # cut at a word boundary somewhere after the first word, up to just before `Answer:`
        cuts = [m.start() for m in re.finditer(r"\s", body)] + [len(body)]
        cut = int(rng.choice(cuts[1:]))
        return body[:cut].rstrip(), {"detail": "cut"}
    line = str(rng.choice(MALFORMED_FINALS)).format(r=p.template.solve(p.digits))
    return f"{body}\n{line}", {"detail": "malformed"}


REFUSALS = (
    "I cannot read the digits in this image.",
    "Sorry, the image is too blurry to answer.",
    "The image shows some handwritten numbers.",
    "Let me know if you have another question!",
)


def _off_task(p: _Problem, rng: np.random.Generator) -> tuple[str, dict[str, Any]] | None:
    true = p.template.solve(p.digits)
    kind = rng.choice(["other_digits", "other_task", "refusal"], p=[0.4, 0.3, 0.3])
    if kind == "refusal":
        return str(rng.choice(REFUSALS)), {"detail": "refusal"}
    if kind == "other_digits":  # a chain about some other image
        template, digits = p.template, draw_digits(rng, p.template)
    else:  # the right digits, but the answer to a different question
        fits = [t for t in TEMPLATES if t is not p.template and t.accepts(p.digits)]
        template, digits = fits[int(rng.integers(len(fits)))], p.digits
    if template.solve(digits) == true:
        return None
    return solution(template, digits), {"detail": str(kind), "answered_task": template.name}


_NOISERS: dict[str, Noiser] = {
    "misread": _misread,
    "arithmetic": _arithmetic,
    "answer_mismatch": _answer_mismatch,
    "truncated": _truncated,
    "off_task": _off_task,
}


def _near_duplicate(src: Sample, sid: str, rng: np.random.Generator) -> Sample:
    """A redundant but correct copy of a clean sample: same or dimmed image, same or reworded."""
    answer = src.answer
    reworded = bool(rng.random() < 0.5)
    if reworded:
        answer = answer.replace("The digits are", "I see the digits", 1)
    same_image = bool(rng.random() < 0.5)
    meta = {
        **src.meta,
        "noise": "near_duplicate",
        "duplicate_of": src.id,
        "detail": ("same_image" if same_image else "dimmed_image")
        + (",reworded" if reworded else ""),
    }
    return Sample(
        id=sid,
        question=src.question,
        answer=answer,
        meta=meta,
        image_of=src.id if same_image else sid,
        brightness=1.0 if same_image else round(float(rng.uniform(0.8, 0.95)), 2),
    )


def _meta(p: _Problem, noise: str, split: str) -> dict[str, Any]:
    return {
        "noise": noise,
        "task": p.template.name,
        "digits": list(p.digits),
        "answer": p.template.solve(p.digits),
        "image_indices": list(p.image_indices),
        "split": split,
    }


def _normalise_mix(noise_mix: Mapping[str, float] | None) -> np.ndarray:
    mix = dict(DEFAULT_NOISE_MIX if noise_mix is None else noise_mix)
    unknown = set(mix) - set(NOISE_TYPES)
    if unknown:
        hint = ""
        if any(t.startswith("sys_") for t in unknown):
            hint = " (systematic types need a family mix: make_pool(..., families=FamilyMix()))"
        raise ValueError(f"unknown noise types {sorted(unknown)}; known: {NOISE_TYPES}{hint}")
    w = np.array([float(mix.get(t, 0.0)) for t in NOISE_TYPES])
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("noise_mix weights must be >= 0 with a positive sum")
    return w / w.sum()


def make_chain_pool(
    n: int,
    noise_rate: float = DEFAULT_NOISE_RATE,
    noise_mix: Mapping[str, float] | None = None,
    seed: int = 0,
) -> list[Sample]:
    """`n` chain pool samples; exactly round(n * noise_rate) of them noisy, types drawn from
    the mix."""
    if not 0.0 <= noise_rate <= 1.0:
        raise ValueError(f"noise_rate must be in [0, 1], got {noise_rate}")
    weights = _normalise_mix(noise_mix)
    bank = load_bank()
    rng = np.random.default_rng([seed, STREAMS["pool"]])
    n_noisy = round(n * noise_rate)
    kinds = ["clean"] * (n - n_noisy) + [
        str(k) for k in rng.choice(NOISE_TYPES, n_noisy, p=weights)
    ]
    kinds = [kinds[i] for i in rng.permutation(n)]
    if "near_duplicate" in kinds and "clean" not in kinds:
        raise ValueError("near_duplicate noise copies clean samples, but the pool has none")

    ids = [f"pool-{i:06d}" for i in range(n)]
    samples: list[Sample | None] = [None] * n
    for i, kind in enumerate(kinds):
        if kind == "near_duplicate":
            continue  # filled in below, once the clean samples it copies exist
        while True:
            p = _draw_problem(rng, bank, "pool")
            if kind == "clean":
                text, extra = solution(p.template, p.digits), {}
                break
            made = _NOISERS[kind](p, rng)
            if made is not None:
                text, extra = made
                break
        samples[i] = Sample(ids[i], p.template.question, text, {**_meta(p, kind, "pool"), **extra})

    clean = [i for i, k in enumerate(kinds) if k == "clean"]
    for i, kind in enumerate(kinds):
        if kind == "near_duplicate":
            src = samples[clean[int(rng.integers(len(clean)))]]
            assert src is not None
            samples[i] = _near_duplicate(src, ids[i], rng)
    return [s for s in samples if s is not None]


def make_chain_clean(
    n: int, split: str, prefix: str, seed: int = 0, stream: str | None = None
) -> list[Sample]:
    """`n` clean chain problems on the images of `split` ("dev" for anchors, or "test");
    `stream` names the random stream (default: the split's own)."""
    bank = load_bank()
    rng = np.random.default_rng([seed, STREAMS[stream or split]])
    out = []
    for i in range(n):
        p = _draw_problem(rng, bank, split)
        text = solution(p.template, p.digits)
        out.append(Sample(f"{prefix}-{i:06d}", p.template.question, text, _meta(p, "clean", split)))
    return out
