"""The task families of generator v2: kinds of problem about one digit-image world.

In the paper's regime a user selects, from a broad synthetic pool made by one generator over
many task families, the data for *their* task; the anchors and the test describe that task
(the target, see `family_mix`). A family is a kind of problem about the same digit images
(or, for `text_arith`, no image at all); every clean reply ends in a final line whose value
is an int (`meta["answer"]`), read by the family's own parser:

    chain        the multi-step problems of `problems.TEMPLATES`, ending in `Answer: N`
    answer_only  the same questions, the reply only `Answer: N`
    transcribe   "Read the digits." -> reading line, `Answer: 375` (the concatenation)
    count        "How many digits are in the image?" -> reading line, count, `Answer: 3`
    compare      "Is the first digit larger than the second? ..." -> relation, `Answer: 0/1`
    text_arith   text only: "What is 3 + 4 + 8?" -> "3 + 4 + 8 = 15." then `Answer: 15`
    boxed        "What is the sum of the digits? Give ... \\boxed{N}." -> chain, `\\boxed{15}`

Each family also says which error kinds (`noise_kinds`) it can carry and gives the pieces
the error processes (`errors`) build wrong replies from; it knows nothing about pools.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stepsift.bench.digits import DigitBank
from stepsift.bench.noise_kinds import ALL_NOISE_TYPES, Rules
from stepsift.bench.problems import (
    MALFORMED_FINALS,
    REFUSALS,
    TEMPLATE_BY_NAME,
    TEMPLATES,
    Template,
    chain,
    draw_digits,
    extract_answer,
    near_slips,
    reading_line,
    wrong_results,
)


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
    malformed: tuple[str, ...] = MALFORMED_FINALS
    refusals: tuple[str, ...] = REFUSALS

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
        digits = draw_digits(rng, t)
        return self.make(t, digits, bank.pick(rng, split, digits))

    def _t(self, p: Problem) -> Template:
        assert p.template is not None
        return p.template

    def on(self, p: Problem, values: Sequence[int]) -> Problem | None:
        t = self._t(p)
        return self.make(t, values) if t.accepts(values) else None

    def draw_like(self, p: Problem, rng: np.random.Generator) -> Problem | None:
        return self.make(self._t(p), draw_digits(rng, self._t(p)))

    def lines(self, p: Problem, result: int) -> list[str]:
        return chain(self._t(p), p.digits, result)

    def slips(self, p: Problem) -> list[int]:
        return wrong_results(self._t(p), p.digits)

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
            out = [x for x in near_slips(r) if x >= 0]
        elif p.op == "-":
            out = [*near_slips(r), -r]
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


def is_correct(text: str, meta: Mapping[str, Any]) -> bool:
    """Exact match of the final answer, read by the sample's family's parser (records without
    a `family` are chain), with the true answer."""
    family = meta.get("family", "chain")
    if family == "chain":
        return extract_answer(text) == meta["answer"]
    return parse_answer(text, family) == meta["answer"]
