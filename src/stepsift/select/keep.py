"""What a selection keeps: how much (`Keep`, from `--keep`), the ranking every rule starts
from (`rank`), and what came out (`Selection`). The pieces every other module of
`select/` builds on, so it imports none of them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

TOKEN_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}


@dataclass(frozen=True)
class Keep:
    """How much to keep: a fraction of the candidates, a count, a token budget, or `auto`
    (the knee of the cumulative-utility curve, `select/budget.py`)."""

    fraction: float | None = None
    count: int | None = None
    tokens: int | None = None  # supervised tokens (the score file's `tokens` column)
    auto: bool = False

    @property
    def by_curve(self) -> bool:
        """True when the size depends on the utility curve, not only on the pool's size."""
        return self.tokens is not None or self.auto

    def size(self, n: int) -> int:
        if self.by_curve:
            raise ValueError(f"--keep {self}: the size depends on the scores (see `decide`)")
        if self.count is not None:
            return min(self.count, n)
        # the small epsilon keeps 0.2 * 1000 from flooring to 199 through float error
        return min(n, math.floor(self.fraction * n + 1e-9))

    def __str__(self) -> str:
        if self.auto:
            return "auto"
        if self.tokens is not None:
            return f"{self.tokens:,} tokens"
        return f"{self.fraction * 100:g}%" if self.fraction is not None else str(self.count)


ORDERS = ("input", "utility")


def requested(keep: Keep | str, order: str) -> Keep:
    """`keep` parsed if given as text, after checking `order` is one `select` knows."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; choose 'input' or 'utility'")
    return parse_keep(keep) if isinstance(keep, str) else keep


def parse_keep(spec: str) -> Keep:
    """'20%' or '0.2' -> a fraction; '5000' -> a count; '2M-tokens', '500k-tokens',
    '1500000-tokens' -> a token budget; 'auto' -> the automatic budget."""
    text = str(spec).strip()
    if text.lower() == "auto":
        return Keep(auto=True)
    t = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmMgGbB]?)-tokens", text)
    if t:
        tokens = math.floor(float(t.group(1)) * TOKEN_UNITS[t.group(2).lower()] + 1e-6)
        if tokens <= 0:
            raise ValueError(f"--keep {spec!r}: a token budget must be at least 1 token")
        return Keep(tokens=tokens)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)%", text)
    if m:
        fraction = float(m.group(1)) / 100
    elif re.fullmatch(r"\d+", text):
        if int(text) == 0:
            raise ValueError(f"--keep {spec!r}: keeping 0 records writes an empty subset")
        return Keep(count=int(text))
    elif re.fullmatch(r"0?\.\d+|1\.0*", text):
        fraction = float(text)
    else:
        raise ValueError(
            f"--keep {spec!r}: give a percentage (20%), a fraction (0.2), a count (5000), "
            "a token budget (2M-tokens, 500k-tokens) or auto"
        )
    if not 0 < fraction <= 1:
        raise ValueError(f"--keep {spec!r}: the fraction must be in (0, 100%]")
    return Keep(fraction=fraction)


@dataclass
class Selection:
    """Which ids to keep, and the figures a user wants to see about it."""

    kept_ids: list[str]
    n_candidates: int
    n_target: int
    n_dropped_harmful: int
    n_harmful: int
    utility_min: float
    utility_max: float
    notes: tuple[str, ...] = ()  # the budget's cut and why, harmful rule, anchor reliability
    warnings: tuple[str, ...] = ()  # what the user should not overlook (printed to stderr)
    kept_tokens: int | None = None  # supervised tokens kept, where the file has them

    def lines(self) -> list[str]:
        out = [
            f"kept {len(self.kept_ids)} of {self.n_candidates} candidates (target {self.n_target})"
        ]
        if self.kept_tokens is not None:
            out.append(f"supervised tokens kept: {self.kept_tokens:,}")
        if self.kept_ids:
            out.append(f"utility range kept: {self.utility_min:.6g} .. {self.utility_max:.6g}")
        out.append(
            f"harmful in pool: {self.n_harmful}; dropped as harmful: {self.n_dropped_harmful}"
        )
        return out + list(self.notes)


def rank(ids: list[str], utility: np.ndarray) -> np.ndarray:
    """Indices by utility, highest first; ties broken by id so the order is reproducible."""
    # lexsort sorts by the last key first: utility descending, then id ascending
    return np.lexsort((np.asarray(ids, dtype=str), -utility))
