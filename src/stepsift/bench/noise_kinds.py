"""The kinds of generator error in the v2 pool, their default mix, and the pool's rules.

This is the vocabulary that both sides share: each task family (`families`) says which kinds
it can carry, and the error processes (`errors`) make them. It sits below both, so that
neither imports the other's way round.

The random kinds are those of `problems.NOISE_TYPES`, each striking single samples; the
systematic kinds are one consistent wrong rule for the whole pool (`Rules`, drawn from the
pool seed): see `errors` for what each does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from stepsift.bench.problems import CONFUSIONS, NOISE_TYPES, STREAMS

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


@dataclass(frozen=True)
class Rules:
    """The systematic errors' rules, one for the whole pool."""

    misread: tuple[int, int]  # (true digit, digit it is read as)

    @classmethod
    def from_seed(cls, seed: int) -> Rules:
        rng = np.random.default_rng([seed, STREAMS["rules"]])
        pairs = [(d, c) for d in sorted(CONFUSIONS) for c in CONFUSIONS[d]]
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
