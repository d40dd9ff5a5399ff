"""Generator v2: task families of one digit-image world, a pool that mixes them, and
systematic generator errors.

In the paper's regime a user selects, from a broad synthetic pool made by one generator over
many task families, the data for *their* task; the anchors and the test describe that task
(the target). A family is a kind of problem about the same digit images (or, for
`text_arith`, no image at all); every clean reply ends in a final line whose value is an int
(`meta["answer"]`), read by the family's own parser:

    chain        the multi-step problems of `problems.TEMPLATES`, ending in `Answer: N`
    answer_only  the same questions, the reply only `Answer: N`
    transcribe   "Read the digits." -> reading line, `Answer: 375` (the concatenation)
    count        "How many digits are in the image?" -> reading line, count, `Answer: 3`
    compare      "Is the first digit larger than the second? ..." -> relation, `Answer: 0/1`
    text_arith   text only: "What is 3 + 4 + 8?" -> "3 + 4 + 8 = 15." then `Answer: 15`
    boxed        "What is the sum of the digits? Give ... \\boxed{N}." -> chain, `\\boxed{15}`

Generator errors come in two kinds. The random processes of `problems.py` (misread,
arithmetic, answer_mismatch, truncated, off_task, near_duplicate) strike single samples;
the systematic ones are one consistent wrong rule for the whole pool:

    sys_misread   one digit is always read as another (a commonly confused pair, fixed by the
                  pool seed, e.g. "7->1"); the whole reply follows the misreading
    sys_carry     additions with a result in 10..19 lose the carry ("7 + 5 = 2.")
    sys_operator  a subtraction (chain's `difference`, answer_only's, text_arith's "-") is
                  solved as an addition ("7 - 3 = 10.")
    sys_format    the final line is "The answer is N.": the right value, but unparsable

`make_mixed_pool` (or `problems.make_pool(..., families=FamilyMix(...))`) draws each sample's
family first (exact counts from the mix, shuffled), then which samples are noisy (exactly
round(n * noise_rate)), then each noisy sample's kind among the kinds its family supports.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stepsift.bench.digits import DigitBank, load_bank
from stepsift.bench.problems import (
    _CONFUSIONS,
    _MALFORMED,
    _REFUSALS,
    _STREAM,
    DEFAULT_NOISE_RATE,
    NOISE_TYPES,
    TEMPLATE_BY_NAME,
    TEMPLATES,
    Sample,
    Template,
    _draw_digits,
    _near,
    _wrong_results,
    chain,
    extract_answer,
    reading_line,
)

RANDOM_TYPES = NOISE_TYPES
SYSTEMATIC_TYPES = ("sys_misread", "sys_carry", "sys_operator", "sys_format")
ALL_NOISE_TYPES = (*RANDOM_TYPES, *SYSTEMATIC_TYPES)
# Chosen before any results: every random type weighs 1.0 and every systematic type 1.5, so
# that half of the noise is systematic (6 x 1.0 = 4 x 1.5) where a family supports them all.
DEFAULT_V2_NOISE_MIX: dict[str, float] = {
    **{t: 1.0 for t in RANDOM_TYPES},
    **{t: 1.5 for t in SYSTEMATIC_TYPES},
}

SYS_CARRY_RULE = "drop carry"
SYS_OPERATOR_RULE = "difference as sum"
SYS_FORMAT_RULE = "The answer is N."
_MAX_DRAWS = 10_000  # redraws of a problem until one can carry the requested noise


# --- problems ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One problem of a family: what is asked, about which digits, and its true answer."""

    family: str
    task: str  # the template for chain/answer_only/boxed, else the family's name
    question: str
    digits: tuple[int, ...]  # the digits the image shows; () for a text-only problem
    image_indices: tuple[int, ...]  # their digit-bank images; () without an image
    answer: int
    template: Template | None = None  # chain, answer_only, boxed
    operands: tuple[int, ...] = ()  # text_arith
    op: str = ""  # text_arith: "+", "-" or "*"

    @property
    def has_image(self) -> bool:
        return bool(self.image_indices)


_ANSWER_MALFORMED = _MALFORMED
_BOXED_MALFORMED = ("\\boxed{{}}", "\\boxed{{{r}", "boxed {r}", "\\boxed{{the result}}")
_TEXT_REFUSALS = (
    "I cannot solve this.",
    "Sorry, I can only answer questions about images.",
    "That is a simple question.",
    "Let me know if you have another question!",
)
_BOXED = re.compile(r"\\boxed\{(-?\d+)\}\.?")


def extract_boxed(text: str) -> int | None:
    """The integer of the last line holding `\\boxed{...}`; None if none or malformed."""
    finals = [s for s in (line.strip() for line in text.splitlines()) if "\\boxed" in s]
    if not finals:
        return None
    m = _BOXED.fullmatch(finals[-1])
    return int(m.group(1)) if m else None


class Family:
    """A kind of problem: how it is drawn, its clean reply, its parser, its noise kinds.

    Subclasses implement `draw`, `on`, `draw_like`, `lines` and `slips`; the defaults give
    the `Answer: N` final line and parser.
    """

    name = ""
    has_image = True
    noise_types: tuple[str, ...] = ()
    malformed: tuple[str, ...] = _ANSWER_MALFORMED
    refusals: tuple[str, ...] = _REFUSALS

    def draw(self, rng: np.random.Generator, bank: DigitBank, split: str) -> Problem:
        raise NotImplementedError

    def supports(self, kind: str, rules: Rules) -> bool:
        """Whether some problem of this family can carry `kind` noise under the pool's rules."""
        return kind in self.noise_types

    def on(self, p: Problem, values: Sequence[int]) -> Problem | None:
        """The same task on other digits (operands), or None if the task does not take them."""
        raise NotImplementedError

    def draw_like(self, p: Problem, rng: np.random.Generator) -> Problem | None:
        """The same task on freshly drawn digits (no image): e.g. a chain about another image."""
        raise NotImplementedError

    def lines(self, p: Problem, result: int) -> list[str]:
        """The reasoning lines (no final line), stating `result` as the computed value."""
        raise NotImplementedError

    def slips(self, p: Problem) -> list[int]:
        """Plausible wrong computed values (arithmetic noise), distinct, != the answer."""
        return []

    def wrong_finals(self, p: Problem) -> list[int]:
        """Values a final line might wrongly state after a right chain (answer_mismatch)."""
        out = [*self.slips(p), *p.digits, *p.operands]
        return [w for w in dict.fromkeys(out) if w != p.answer]

    def carry_sum(self, p: Problem) -> int | None:
        """The result of the addition `sys_carry` applies to, or None: no sum-like step."""
        return None

    def as_sum(self, p: Problem) -> int | None:
        """A subtraction's value when solved as an addition (`sys_operator`), else None."""
        return None

    def other_task(self, p: Problem, rng: np.random.Generator) -> tuple[str, str] | None:
        """(reply, task answered): the right values, but another question's answer."""
        return None

    def final_text(self, p: Problem) -> str:
        """The value as the clean final line writes it."""
        return str(p.answer)

    def final_line(self, value: str) -> str:
        return f"Answer: {value}"

    def parse(self, text: str) -> int | None:
        return extract_answer(text)

    def reword(self, text: str) -> str:
        """A near-duplicate's light rewording (may be the text itself)."""
        return text.replace("The digits are", "I see the digits", 1)

    def reply(self, p: Problem) -> str:
        """The clean reply."""
        return "\n".join([*self.lines(p, p.answer), self.final_line(self.final_text(p))])

    def render(self, p: Problem, result: int, final: int) -> str:
        """A reply whose computation states `result` and whose final line says `final`."""
        return "\n".join([*self.lines(p, result), self.final_line(str(final))])

    def __repr__(self) -> str:
        return f"<family {self.name}>"


_ALL = ALL_NOISE_TYPES


class ChainFamily(Family):
    """The multi-step template problems with their chain of thought (the default target)."""

    name = "chain"
    templates: tuple[Template, ...] = TEMPLATES
    noise_types = _ALL

    def question(self, t: Template) -> str:
        return t.question

    def make(self, t: Template, digits: Sequence[int], images: Sequence[int] = ()) -> Problem:
        d = tuple(int(x) for x in digits)
        return Problem(
            self.name, t.name, self.question(t), d, tuple(images), int(t.solve(d)), template=t
        )

    def draw(self, rng: np.random.Generator, bank: DigitBank, split: str) -> Problem:
        # the same draws as problems._draw_problem for the full template list
        t = self.templates[int(rng.integers(len(self.templates)))]
        digits = _draw_digits(rng, t)
        return self.make(t, digits, bank.pick(rng, split, digits))

    def _t(self, p: Problem) -> Template:
        assert p.template is not None
        return p.template

    def on(self, p: Problem, values: Sequence[int]) -> Problem | None:
        t = self._t(p)
        return self.make(t, values) if t.accepts(values) else None

    def draw_like(self, p: Problem, rng: np.random.Generator) -> Problem | None:
        return self.make(self._t(p), _draw_digits(rng, self._t(p)))

    def lines(self, p: Problem, result: int) -> list[str]:
        return chain(self._t(p), p.digits, result)

    def slips(self, p: Problem) -> list[int]:
        return _wrong_results(self._t(p), p.digits)

    def carry_sum(self, p: Problem) -> int | None:
        return p.answer if self._t(p).name in ("sum", "max_plus_min") else None

    def as_sum(self, p: Problem) -> int | None:
        return p.digits[0] + p.digits[1] if self._t(p).name == "difference" else None

    def other_task(self, p: Problem, rng: np.random.Generator) -> tuple[str, str] | None:
        # another template's answer on the same digits, in this family's own format
        fits = [t for t in TEMPLATES if t is not p.template and t.accepts(p.digits)]
        if not fits:
            return None
        q = self.make(fits[int(rng.integers(len(fits)))], p.digits)
        if q.answer == p.answer:
            return None
        return self.reply(q), q.task


class AnswerOnlyFamily(ChainFamily):
    """Chain's questions, answered with the final line alone."""

    name = "answer_only"
    noise_types = tuple(t for t in _ALL if t != "answer_mismatch")  # no chain to disagree with

    def lines(self, p: Problem, result: int) -> list[str]:
        return []

    def reword(self, text: str) -> str:
        return text  # nothing to reword in a bare final line


class BoxedFamily(ChainFamily):
    """The sum, with its chain, in another answer format: `\\boxed{N}`."""

    name = "boxed"
    templates = (TEMPLATE_BY_NAME["sum"],)
    noise_types = tuple(t for t in _ALL if t != "sys_operator")
    malformed = _BOXED_MALFORMED

    def question(self, t: Template) -> str:
        return "What is the sum of the digits? Give the final answer as \\boxed{N}."

    def final_line(self, value: str) -> str:
        return f"\\boxed{{{value}}}"

    def parse(self, text: str) -> int | None:
        return extract_boxed(text)


class _DigitsFamily(Family):
    """A question about the digits themselves (no template): transcribe, count, compare."""

    sizes: tuple[int, ...] = (2, 3)
    distinct = False
    question = ""

    def accepts(self, digits: Sequence[int]) -> bool:
        return len(digits) in self.sizes and (not self.distinct or len(set(digits)) == len(digits))

    def solve(self, digits: Sequence[int]) -> int:
        raise NotImplementedError

    def make(self, digits: Sequence[int], images: Sequence[int] = ()) -> Problem:
        d = tuple(int(x) for x in digits)
        return Problem(self.name, self.name, self.question, d, tuple(images), self.solve(d))

    def draw_digits(self, rng: np.random.Generator) -> list[int]:
        k = int(rng.choice(self.sizes))
        if self.distinct:
            return [int(x) for x in rng.choice(10, size=k, replace=False)]
        return [int(x) for x in rng.integers(0, 10, size=k)]

    def draw(self, rng: np.random.Generator, bank: DigitBank, split: str) -> Problem:
        digits = self.draw_digits(rng)
        return self.make(digits, bank.pick(rng, split, digits))

    def on(self, p: Problem, values: Sequence[int]) -> Problem | None:
        return self.make(values) if self.accepts(values) else None

    def draw_like(self, p: Problem, rng: np.random.Generator) -> Problem | None:
        return self.make(self.draw_digits(rng))

    def other_task(self, p: Problem, rng: np.random.Generator) -> tuple[str, str] | None:
        # another question's clean reply on the same digits (another digit family's, or a
        # chain template's), kept when this family's parser does not read the true answer
        options: list[tuple[str, str]] = []
        for fam in (TRANSCRIBE, COUNT, COMPARE):
            if fam is not self and fam.accepts(p.digits):
                options.append((fam.reply(fam.make(p.digits)), fam.name))
        for t in TEMPLATES:
            if t.accepts(p.digits):
                options.append((CHAIN.reply(CHAIN.make(t, p.digits)), t.name))
        options = [o for o in options if self.parse(o[0]) != p.answer]
        return options[int(rng.integers(len(options)))] if options else None


class TranscribeFamily(_DigitsFamily):
    """Read the digits; the answer is the int of their concatenation ("075" -> 75)."""

    name = "transcribe"
    question = "Read the digits."
    noise_types = (
        "misread",
        "answer_mismatch",
        "truncated",
        "off_task",
        "near_duplicate",
        "sys_misread",
        "sys_format",
    )

    def solve(self, digits: Sequence[int]) -> int:
        return int("".join(map(str, digits)))

    def lines(self, p: Problem, result: int) -> list[str]:
        return [reading_line(p.digits)]

    def final_text(self, p: Problem) -> str:
        return "".join(map(str, p.digits))  # as read, leading zero and all; parses to answer

    def wrong_finals(self, p: Problem) -> list[int]:
        d = list(p.digits)
        swaps = [d[:i] + [d[i + 1], d[i]] + d[i + 2 :] for i in range(len(d) - 1)]
        out = [self.solve(d[::-1]), *(self.solve(s) for s in swaps), *d]
        return [w for w in dict.fromkeys(out) if w != p.answer]


class CountFamily(_DigitsFamily):
    """How many digits the image holds."""

    name = "count"
    question = "How many digits are in the image?"
    noise_types = (
        "arithmetic",
        "answer_mismatch",
        "truncated",
        "off_task",
        "near_duplicate",
        "sys_format",
    )

    def solve(self, digits: Sequence[int]) -> int:
        return len(digits)

    def lines(self, p: Problem, result: int) -> list[str]:
        return [reading_line(p.digits), f"That is {result} digits."]

    def slips(self, p: Problem) -> list[int]:
        return [x for x in (p.answer + 1, p.answer - 1) if x >= 2]  # a miscount


class CompareFamily(_DigitsFamily):
    """Whether the first of two distinct digits is the larger: 1 for yes, 0 for no."""

    name = "compare"
    question = "Is the first digit larger than the second? Answer 1 for yes, 0 for no."
    sizes = (2,)
    distinct = True
    noise_types = (
        "misread",
        "arithmetic",
        "answer_mismatch",
        "truncated",
        "off_task",
        "near_duplicate",
        "sys_misread",
        "sys_format",
    )

    def solve(self, digits: Sequence[int]) -> int:
        return int(digits[0] > digits[1])

    def supports(self, kind: str, rules: Rules) -> bool:
        if kind == "sys_misread":  # flips a comparison only across a digit in between
            return abs(rules.misread[0] - rules.misread[1]) >= 2
        return super().supports(kind, rules)

    def lines(self, p: Problem, result: int) -> list[str]:
        a, b = p.digits
        relation = "larger" if result == 1 else "smaller"
        return [reading_line(p.digits), f"{a} is {relation} than {b}."]

    def slips(self, p: Problem) -> list[int]:
        return [1 - p.answer]  # the comparison the wrong way round


_OPS: dict[str, Callable[[Sequence[int]], int]] = {
    "+": lambda v: sum(v),
    "-": lambda v: v[0] - v[1],
    "*": lambda v: v[0] * v[1],
}
_OP_NAMES = {"+": "addition", "-": "subtraction", "*": "multiplication"}


class TextArithFamily(Family):
    """Arithmetic on numbers stated in the text; no image."""

    name = "text_arith"
    has_image = False
    noise_types = (
        "arithmetic",
        "answer_mismatch",
        "truncated",
        "off_task",
        "near_duplicate",
        "sys_carry",
        "sys_operator",
        "sys_format",
    )
    refusals = _TEXT_REFUSALS

    @staticmethod
    def expression(p: Problem) -> str:
        return f" {p.op} ".join(map(str, p.operands))

    def make(self, op: str, operands: Sequence[int]) -> Problem:
        v = tuple(int(x) for x in operands)
        expr = f" {op} ".join(map(str, v))
        return Problem(
            self.name, self.name, f"What is {expr}?", (), (), _OPS[op](v), operands=v, op=op
        )

    def _operands(self, rng: np.random.Generator, op: str) -> list[int]:
        k = int(rng.choice((2, 3))) if op == "+" else 2
        return [int(x) for x in rng.integers(0, 10, size=k)]

    def draw(self, rng: np.random.Generator, bank: DigitBank, split: str) -> Problem:
        op = tuple(_OPS)[int(rng.integers(len(_OPS)))]
        return self.make(op, self._operands(rng, op))

    def on(self, p: Problem, values: Sequence[int]) -> Problem | None:
        return self.make(p.op, values) if len(values) == len(p.operands) else None

    def draw_like(self, p: Problem, rng: np.random.Generator) -> Problem | None:
        return self.make(p.op, [int(x) for x in rng.integers(0, 10, size=len(p.operands))])

    def lines(self, p: Problem, result: int) -> list[str]:
        return [f"{self.expression(p)} = {result}."]

    def slips(self, p: Problem) -> list[int]:
        r, v = p.answer, p.operands
        if p.op == "+":
            out = [x for x in _near(r) if x >= 0]
        elif p.op == "-":
            out = [*_near(r), -r]
        else:
            a, b = v
            out = [x for x in (r + a, r - a, r + b, r - b, r + 1, r - 1, r + 10, a + b) if x >= 0]
        return [x for x in dict.fromkeys(out) if x != r]

    def carry_sum(self, p: Problem) -> int | None:
        return p.answer if p.op == "+" else None

    def as_sum(self, p: Problem) -> int | None:
        return p.operands[0] + p.operands[1] if p.op == "-" else None

    def other_task(self, p: Problem, rng: np.random.Generator) -> tuple[str, str] | None:
        if len(p.operands) != 2:
            return None
        ops = [op for op in _OPS if op != p.op]
        q = self.make(ops[int(rng.integers(len(ops)))], p.operands)
        if q.answer == p.answer:
            return None
        return self.reply(q), f"text_arith:{_OP_NAMES[q.op]}"

    def reword(self, text: str) -> str:
        return text.replace(" = ", " equals ", 1)


CHAIN = ChainFamily()
ANSWER_ONLY = AnswerOnlyFamily()
TRANSCRIBE = TranscribeFamily()
COUNT = CountFamily()
COMPARE = CompareFamily()
TEXT_ARITH = TextArithFamily()
BOXED = BoxedFamily()
FAMILIES: dict[str, Family] = {
    f.name: f for f in (CHAIN, ANSWER_ONLY, TRANSCRIBE, COUNT, COMPARE, TEXT_ARITH, BOXED)
}
FAMILY_NAMES = tuple(FAMILIES)


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; known: {', '.join(FAMILY_NAMES)}") from None


def parse_answer(text: str, family: str = "chain") -> int | None:
    """The final value of `text` as `family`'s parser reads it (None: unparsable)."""
    return get_family(family).parse(text)


# --- the family mix ----------------------------------------------------------------------------


def _check_weights(weights: Mapping[str, float], what: str) -> dict[str, float]:
    out = {}
    for name, w in weights.items():
        get_family(name)
        if not float(w) >= 0:
            raise ValueError(f"{what}: weight of {name!r} must be >= 0, got {w}")
        out[name] = float(w)
    return out


def apportion(weights: Mapping[str, float], n: int) -> dict[str, int]:
    """Exact counts summing to `n`, proportional to `weights` (largest remainder; ties go to
    the earlier name). Zero-weight names get 0."""
    names = [k for k, w in weights.items() if w > 0]
    if n == 0:
        return {k: 0 for k in weights}
    if not names:
        raise ValueError("cannot share samples among weights that are all zero")
    total = sum(weights[k] for k in names)
    quotas = [n * weights[k] / total for k in names]
    counts = [int(q) for q in quotas]
    order = sorted(range(len(names)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    got = dict(zip(names, counts, strict=True))
    return {k: got.get(k, 0) for k in weights}


@dataclass(frozen=True)
class FamilyMix:
    """Which families a pool holds: the target's share, the rest from `others` by weight.

    `others=None` means equal weights over every non-target family. Exactly
    round(n * target_share) samples are the target's (split equally among its families).
    `FamilyMix(target_share=1.0)` is the old single-family (chain) regime.
    """

    target: tuple[str, ...] = ("chain",)
    target_share: float = 0.3
    others: dict[str, float] | None = field(default=None)

    def __post_init__(self) -> None:
        target = (self.target,) if isinstance(self.target, str) else tuple(self.target)
        object.__setattr__(self, "target", target)
        if not target:
            raise ValueError("FamilyMix.target names no family")
        if len(set(target)) != len(target):
            raise ValueError(f"FamilyMix.target repeats a family: {target}")
        for name in target:
            get_family(name)
        if not 0.0 <= float(self.target_share) <= 1.0:
            raise ValueError(f"target_share must be in [0, 1], got {self.target_share}")
        if self.others is None:
            others = {f: 1.0 for f in FAMILY_NAMES if f not in target}
        else:
            others = _check_weights(self.others, "FamilyMix.others")
            both = sorted(set(others) & set(target))
            if both:
                raise ValueError(f"families {both} are both target and others")
        object.__setattr__(self, "others", others)
        if self.target_share < 1.0 and not any(w > 0 for w in others.values()):
            raise ValueError("target_share < 1 but no non-target family has a positive weight")

    def counts(self, n: int) -> dict[str, int]:
        """Exact samples per family for a pool of `n`."""
        n_target = round(n * self.target_share)
        out = apportion({t: 1.0 for t in self.target}, n_target)
        assert self.others is not None
        if n - n_target:
            out.update(apportion(self.others, n - n_target))
        return {k: v for k, v in out.items() if v}

    def weights(self) -> dict[str, float]:
        """The pool's family shares (e.g. `JudgeSettings.families`): the judge learns the
        pool's mix, not only the target."""
        assert self.others is not None
        out = {t: self.target_share / len(self.target) for t in self.target}
        total = sum(self.others.values())
        for name, w in self.others.items():
            if total > 0 and w > 0 and self.target_share < 1:
                out[name] = (1.0 - self.target_share) * w / total
        return {k: v for k, v in out.items() if v > 0}

    def target_weights(self) -> dict[str, float]:
        """The anchors' and the test's families: the target's, equally."""
        return {t: 1.0 for t in self.target}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (e.g. for a spec file); `FamilyMix(**d)` rebuilds it."""
        return {
            "target": list(self.target),
            "target_share": self.target_share,
            "others": dict(self.others or {}),
        }


# --- noise processes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """The systematic errors' rules, one for the whole pool."""

    misread: tuple[int, int]  # (true digit, digit it is read as)

    @classmethod
    def from_seed(cls, seed: int) -> Rules:
        rng = np.random.default_rng([seed, _STREAM["rules"]])
        pairs = [(d, c) for d in sorted(_CONFUSIONS) for c in _CONFUSIONS[d]]
        src, dst = pairs[int(rng.integers(len(pairs)))]
        return cls((int(src), int(dst)))

    def describe(self) -> dict[str, str]:
        return {
            "sys_misread": f"{self.misread[0]}->{self.misread[1]}",
            "sys_carry": SYS_CARRY_RULE,
            "sys_operator": SYS_OPERATOR_RULE,
            "sys_format": SYS_FORMAT_RULE,
        }


def systematic_rules(seed: int) -> dict[str, str]:
    """meta["rule"] of each systematic type in the pool built from `seed`."""
    return Rules.from_seed(seed).describe()


Made = tuple[str, dict[str, Any]] | None
Noiser = Callable[[Family, Problem, np.random.Generator, Rules], Made]


def _misread(f: Family, p: Problem, rng: np.random.Generator, rules: Rules) -> Made:
    for pos in rng.permutation(len(p.digits)):
        d = p.digits[pos]
        likely = list(rng.permutation(_CONFUSIONS[d]))
        others = [x for x in rng.permutation(10) if x != d and x not in likely]
        for wrong in [*likely, *others]:
            seen = list(p.digits)
            seen[pos] = int(wrong)
            q = f.on(p, seen)
            # the rest of the reply follows the wrong reading, so the answer must change
            if q is not None and q.answer != p.answer:
                return f.reply(q), {"stated_digits": seen}
    return None


def _arithmetic(f: Family, p: Problem, rng: np.random.Generator, rules: Rules) -> Made:
    wrong = f.slips(p)
    if not wrong:
        return None
    r = int(rng.choice(wrong))
    return f.render(p, r, r), {}


def _answer_mismatch(f: Family, p: Problem, rng: np.random.Generator, rules: Rules) -> Made:
    wrong = f.wrong_finals(p)
    if not wrong:
        return None
    return f.render(p, p.answer, int(rng.choice(wrong))), {}


def _truncated(f: Family, p: Problem, rng: np.random.Generator, rules: Rules) -> Made:
    body = "\n".join(f.lines(p, p.answer))
    if body and rng.random() < 0.5:
        # cut at a word boundary somewhere after the first word, up to just before the final
        cuts = [m.start() for m in re.finditer(r"\s", body)] + [len(body)]
        cut = int(rng.choice(cuts[1:]))
        return body[:cut].rstrip(), {"detail": "cut"}
    line = str(rng.choice(f.malformed)).format(r=f.final_text(p))
    return (f"{body}\n{line}" if body else line), {"detail": "malformed"}


def _off_task(f: Family, p: Problem, rng: np.random.Generator, rules: Rules) -> Made:
    kind = str(rng.choice(["other_digits", "other_task", "refusal"], p=[0.4, 0.3, 0.3]))
    if kind == "refusal":
        return str(rng.choice(f.refusals)), {"detail": "refusal"}
    if kind == "other_digits":  # a reply about some other image (other numbers)
        q = f.draw_like(p, rng)
        if q is None or q.answer == p.answer:
            return None
        return f.reply(q), {"detail": kind, "answered_task": q.task}
    made = f.other_task(p, rng)  # the right digits, but the answer to a different question
    if made is None:
        return None
    return made[0], {"detail": kind, "answered_task": made[1]}


def _sys_misread(f: Family, p: Problem, rng: np.random.Generator, rules: Rules) -> Made:
    src, dst = rules.misread
    if src not in p.digits:
        return None
    seen = [dst if d == src else d for d in p.digits]  # every occurrence: a consistent habit
    q = f.on(p, seen)
    if q is None or q.answer == p.answer:
        return None
    return f.reply(q), {"stated_digits": seen, "rule": f"{src}->{dst}"}


def _sys_carry(f: Family, p: Problem, rng: np.random.Generator, rules: Rules) -> Made:
    r = f.carry_sum(p)
    # 10..19 only: there, r - 10 is exactly the result without its carry
    if r is None or not 10 <= r <= 19:
        return None
    return f.render(p, r - 10, r - 10), {"rule": SYS_CARRY_RULE}


def _sys_operator(f: Family, p: Problem, rng: np.random.Generator, rules: Rules) -> Made:
    s = f.as_sum(p)
    if s is None or s == p.answer:  # "7 - 0" is the same either way
        return None
    return f.render(p, s, s), {"rule": SYS_OPERATOR_RULE}


def _sys_format(f: Family, p: Problem, rng: np.random.Generator, rules: Rules) -> Made:
    text = "\n".join([*f.lines(p, p.answer), f"The answer is {f.final_text(p)}."])
    return text, {"rule": SYS_FORMAT_RULE}


NOISERS: dict[str, Noiser] = {
    "misread": _misread,
    "arithmetic": _arithmetic,
    "answer_mismatch": _answer_mismatch,
    "truncated": _truncated,
    "off_task": _off_task,
    "sys_misread": _sys_misread,
    "sys_carry": _sys_carry,
    "sys_operator": _sys_operator,
    "sys_format": _sys_format,
}


def _near_duplicate(src: Sample, sid: str, f: Family, rng: np.random.Generator) -> Sample:
    """A redundant but correct copy of a clean sample of the same family."""
    reworded_text = f.reword(src.answer)
    reworded = bool(rng.random() < 0.5) and reworded_text != src.answer
    answer = reworded_text if reworded else src.answer
    if src.has_image:
        same_image = bool(rng.random() < 0.5)
        detail = "same_image" if same_image else "dimmed_image"
        brightness = 1.0 if same_image else round(float(rng.uniform(0.8, 0.95)), 2)
        image_of = src.id if same_image else sid
    else:
        detail, brightness, image_of = "text_only", 1.0, sid
    meta = {
        **src.meta,
        "noise": "near_duplicate",
        "systematic": False,
        "duplicate_of": src.id,
        "detail": detail + (",reworded" if reworded else ""),
    }
    return Sample(sid, src.question, answer, meta, image_of, brightness, src.has_image)


# --- pools -------------------------------------------------------------------------------------


def problem_meta(p: Problem, noise: str, split: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "noise": noise,
        "systematic": noise in SYSTEMATIC_TYPES,
        "family": p.family,
        "task": p.task,
        "digits": list(p.digits),
        "answer": p.answer,
        "image_indices": list(p.image_indices),
        "split": split,
    }
    if p.op:
        meta["op"] = p.op
        meta["operands"] = list(p.operands)
    return meta


def v2_noise_weights(noise_mix: Mapping[str, float] | None) -> dict[str, float]:
    """The mix as weights over ALL_NOISE_TYPES (None: DEFAULT_V2_NOISE_MIX), validated."""
    mix = dict(DEFAULT_V2_NOISE_MIX if noise_mix is None else noise_mix)
    unknown = set(mix) - set(ALL_NOISE_TYPES)
    if unknown:
        raise ValueError(f"unknown noise types {sorted(unknown)}; known: {ALL_NOISE_TYPES}")
    w = {t: float(mix.get(t, 0.0)) for t in ALL_NOISE_TYPES}
    if any(not x >= 0 for x in w.values()) or sum(w.values()) <= 0:
        raise ValueError("noise_mix weights must be >= 0 with a positive sum")
    return w


def _family_kinds(
    name: str, weights: Mapping[str, float], rules: Rules
) -> tuple[list[str], np.ndarray]:
    """The noise kinds `name` supports with a positive weight, and their renormalised mix."""
    f = FAMILIES[name]
    kinds = [k for k in ALL_NOISE_TYPES if weights[k] > 0 and f.supports(k, rules)]
    w = np.array([weights[k] for k in kinds], dtype=float)
    return kinds, (w / w.sum() if kinds else w)


def _assign_noise(
    fams: Sequence[str],
    n_noisy: int,
    weights: Mapping[str, float],
    rules: Rules,
    rng: np.random.Generator,
) -> list[str]:
    """Each sample's noise kind: exactly `n_noisy` noisy, among samples whose family supports
    some kind of the mix (a family that supports none stays clean; others take its share)."""
    per_family = {name: _family_kinds(name, weights, rules) for name in FAMILY_NAMES}
    eligible = [i for i, f in enumerate(fams) if per_family[f][0]]
    if n_noisy > len(eligible):
        raise ValueError(
            f"{n_noisy} noisy samples requested, but only {len(eligible)} samples belong to "
            "families that support a noise type of the mix"
        )
    kinds = ["clean"] * len(fams)
    for i in sorted(int(x) for x in rng.choice(eligible, n_noisy, replace=False)):
        ks, w = per_family[fams[i]]
        kinds[i] = str(rng.choice(ks, p=w))
    # a near-duplicate copies a clean sample of its own family; where a family has none,
    # its near-duplicates take another kind the family supports instead
    for name in FAMILY_NAMES:
        idx = [i for i, f in enumerate(fams) if f == name]
        dups = [i for i in idx if kinds[i] == "near_duplicate"]
        if dups and all(kinds[i] != "clean" for i in idx):
            ks, w = per_family[name]
            keep = [j for j, k in enumerate(ks) if k != "near_duplicate"]
            if not keep:
                raise ValueError(
                    f"near_duplicate noise copies clean {name} samples, but there are none"
                )
            alt, p = [ks[j] for j in keep], w[keep] / w[keep].sum()
            for i in dups:
                kinds[i] = str(rng.choice(alt, p=p))
    return kinds


def _draw_noisy(
    f: Family, kind: str, rng: np.random.Generator, bank: DigitBank, split: str, rules: Rules
) -> tuple[Problem, str, dict[str, Any]]:
    for _ in range(_MAX_DRAWS):
        p = f.draw(rng, bank, split)
        made = NOISERS[kind](f, p, rng, rules)
        if made is not None:
            return p, made[0], made[1]
    raise RuntimeError(f"no {f.name} problem could carry {kind} noise in {_MAX_DRAWS} draws")


def make_mixed_pool(
    n: int,
    noise_rate: float = DEFAULT_NOISE_RATE,
    noise_mix: Mapping[str, float] | None = None,
    seed: int = 0,
    mix: FamilyMix | None = None,
) -> list[Sample]:
    """`n` pool samples over the families of `mix` (default `FamilyMix()`), exactly
    round(n * noise_rate) of them noisy, kinds from `noise_mix` (default DEFAULT_V2_NOISE_MIX)
    restricted per sample to what its family supports."""
    if not 0.0 <= noise_rate <= 1.0:
        raise ValueError(f"noise_rate must be in [0, 1], got {noise_rate}")
    mix = FamilyMix() if mix is None else mix
    weights = v2_noise_weights(noise_mix)
    bank = load_bank()
    rng = np.random.default_rng([seed, _STREAM["pool"]])
    rules = Rules.from_seed(seed)
    counts = mix.counts(n)
    fams = [name for name, c in counts.items() for _ in range(c)]
    fams = [fams[i] for i in rng.permutation(n)]
    kinds = _assign_noise(fams, round(n * noise_rate), weights, rules, rng)

    ids = [f"pool-{i:06d}" for i in range(n)]
    samples: list[Sample | None] = [None] * n
    for i, (name, kind) in enumerate(zip(fams, kinds, strict=True)):
        if kind == "near_duplicate":
            continue  # filled in below, once the clean samples it copies exist
        f = FAMILIES[name]
        if kind == "clean":
            p = f.draw(rng, bank, "pool")
            text, extra = f.reply(p), {}
        else:
            p, text, extra = _draw_noisy(f, kind, rng, bank, "pool", rules)
        meta = {**problem_meta(p, kind, "pool"), **extra}
        samples[i] = Sample(ids[i], p.question, text, meta, has_image=p.has_image)

    clean: dict[str, list[int]] = {}
    for i, (name, kind) in enumerate(zip(fams, kinds, strict=True)):
        if kind == "clean":
            clean.setdefault(name, []).append(i)
    for i, (name, kind) in enumerate(zip(fams, kinds, strict=True)):
        if kind == "near_duplicate":
            src = samples[clean[name][int(rng.integers(len(clean[name])))]]
            assert src is not None
            samples[i] = _near_duplicate(src, ids[i], FAMILIES[name], rng)
    return [s for s in samples if s is not None]


def make_mixed_clean(
    n: int,
    split: str,
    prefix: str,
    seed: int = 0,
    stream: str | None = None,
    families: Mapping[str, float] | None = None,
) -> list[Sample]:
    """`n` clean problems on `split`'s images, families in exact proportion to `families`
    (default: chain only), in shuffled order."""
    weights = _check_weights({"chain": 1.0} if families is None else families, "families")
    if not any(w > 0 for w in weights.values()):
        raise ValueError("families: at least one weight must be positive")
    bank = load_bank()
    rng = np.random.default_rng([seed, _STREAM[stream or split]])
    names = [name for name, c in apportion(weights, n).items() for _ in range(c)]
    names = [names[i] for i in rng.permutation(n)]
    out = []
    for i, name in enumerate(names):
        f = FAMILIES[name]
        p = f.draw(rng, bank, split)
        out.append(
            Sample(
                f"{prefix}-{i:06d}",
                p.question,
                f.reply(p),
                problem_meta(p, "clean", split),
                has_image=p.has_image,
            )
        )
    return out
