"""The error processes of the v2 pool: how a generator's reply to a family's problem goes wrong.

Generator errors come in two kinds (their names: `noise_kinds`). The random processes of
`problems.py` (misread, arithmetic, answer_mismatch, truncated, off_task, near_duplicate),
adapted here to any task family, strike single samples; the systematic ones are one
consistent wrong rule for the whole pool (`noise_kinds.Rules`):

    sys_misread   one digit is always read as another (a commonly confused pair, fixed by the
                  pool seed, e.g. "7->1"); the whole reply follows the misreading
    sys_carry     additions with a result in 10..19 lose the carry ("7 + 5 = 2.")
    sys_operator  a subtraction (chain's `difference`, answer_only's, text_arith's "-") is
                  solved as an addition ("7 - 3 = 10.")
    sys_format    the final line is "The answer is N.": the right value, but unparsable

Each process (`NOISERS`) takes a family, a problem of it and the pool's rules, and returns
(reply, extra meta), or None when that problem cannot carry the error; `draw_noisy` then
redraws. Which samples get which error is the pool's business (`pool_mix`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from stepsift.bench.digits import DigitBank
from stepsift.bench.families import Family, Problem
from stepsift.bench.noise_kinds import SYS_CARRY_RULE, SYS_FORMAT_RULE, SYS_OPERATOR_RULE, Rules
from stepsift.bench.problems import Sample, misreadings

_MAX_DRAWS = 10_000  # redraws of a problem until one can carry the requested noise

Made = tuple[str, dict[str, Any]] | None
Noiser = Callable[[Family, Problem, np.random.Generator, Rules], Made]


def _misread(f: Family, p: Problem, rng: np.random.Generator, rules: Rules) -> Made:
    for seen in misreadings(p.digits, rng):
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


def near_duplicate(src: Sample, sid: str, f: Family, rng: np.random.Generator) -> Sample:
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


def draw_noisy(
    f: Family, kind: str, rng: np.random.Generator, bank: DigitBank, split: str, rules: Rules
) -> tuple[Problem, str, dict[str, Any]]:
    """A fresh problem of `f` with a `kind` reply: (problem, reply, extra meta)."""
    for _ in range(_MAX_DRAWS):
        p = f.draw(rng, bank, split)
        made = NOISERS[kind](f, p, rng, rules)
        if made is not None:
            return p, made[0], made[1]
    raise RuntimeError(f"no {f.name} problem could carry {kind} noise in {_MAX_DRAWS} draws")
