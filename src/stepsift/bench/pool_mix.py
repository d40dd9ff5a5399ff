"""The v2 pool and clean sets: families in the mix's exact shares, errors assigned on top.

`make_mixed_pool` (or `pools.make_pool(..., families=FamilyMix(...))`) draws each sample's
family first (exact counts from the mix, shuffled), then which samples are noisy (exactly
round(n * noise_rate)), then each noisy sample's kind among the kinds its family supports;
then it draws each sample's problem and reply (`errors` for the noisy ones).
`make_mixed_clean` draws the clean anchor, test and judge problems of given families. The
assignment of error kinds to samples is this module's own; the families, their mix, the
error kinds and their processes come from the modules below it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stepsift.bench.digits import load_bank
from stepsift.bench.errors import draw_noisy, near_duplicate
from stepsift.bench.families import FAMILIES, FAMILY_NAMES, Problem
from stepsift.bench.family_mix import FamilyMix, apportion, check_weights
from stepsift.bench.noise_kinds import ALL_NOISE_TYPES, SYSTEMATIC_TYPES, Rules, v2_noise_weights
from stepsift.bench.problems import DEFAULT_NOISE_RATE, STREAMS, Sample


def problem_meta(p: Problem, noise: str, split: str) -> dict[str, Any]:
    """A sample's hidden ground truth: its noise kind, family, task, digits and true answer."""
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
    rng = np.random.default_rng([seed, STREAMS["pool"]])
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
            p, text, extra = draw_noisy(f, kind, rng, bank, "pool", rules)
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
            samples[i] = near_duplicate(src, ids[i], FAMILIES[name], rng)
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
    weights = check_weights({"chain": 1.0} if families is None else families, "families")
    if not any(w > 0 for w in weights.values()):
        raise ValueError("families: at least one weight must be positive")
    bank = load_bank()
    rng = np.random.default_rng([seed, STREAMS[stream or split]])
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
