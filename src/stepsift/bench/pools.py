"""The bench's samples, from whichever generator the run asks for: the single-family chain
generator (`problems.py`, bench v1) or the many-family one with systematic errors
(`pool_mix.py`, bench v2). Callers ask here, so neither generator needs to know the other.
"""

from __future__ import annotations

from collections.abc import Mapping

from stepsift.bench.family_mix import FamilyMix
from stepsift.bench.pool_mix import make_mixed_clean, make_mixed_pool
from stepsift.bench.problems import (
    DEFAULT_NOISE_RATE,
    Sample,
    make_chain_clean,
    make_chain_pool,
)


def make_pool(
    n: int,
    noise_rate: float = DEFAULT_NOISE_RATE,
    noise_mix: Mapping[str, float] | None = None,
    seed: int = 0,
    families: FamilyMix | None = None,
) -> list[Sample]:
    """`n` pool samples; exactly round(n * noise_rate) of them noisy, types drawn from the mix.

    Without `families`, the chain pool of bench v1; with a `FamilyMix`, the v2 pool: many
    task families and systematic errors (`noise_mix=None` is then
    `noise_kinds.DEFAULT_V2_NOISE_MIX`).
    """
    if families is not None:
        return make_mixed_pool(n, noise_rate, noise_mix, seed, families)
    return make_chain_pool(n, noise_rate, noise_mix, seed)


def make_clean(
    n: int,
    split: str,
    prefix: str,
    seed: int = 0,
    stream: str | None = None,
    families: Mapping[str, float] | None = None,
) -> list[Sample]:
    """`n` clean problems on the images of `split` ("dev" for anchors, or "test").

    `stream` names the random stream (default: the split's own); the judge's training set uses
    "judge" so that its problems on pool-split images are not the pool's problems.
    `families` (family name -> weight; exact shares) draws from those task families; None is
    the chain problems of bench v1.
    """
    if families is not None:
        return make_mixed_clean(n, split, prefix, seed, stream, families)
    return make_chain_clean(n, split, prefix, seed, stream)
