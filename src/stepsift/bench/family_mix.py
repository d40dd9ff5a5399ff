"""The pool's family proportions and the target: `FamilyMix`, and exact shares by weight.

A `FamilyMix` says which task families (`families`) a v2 pool holds: the target's share
(the families the anchors and the test come from) and the rest by weight. `apportion` turns
weights into exact counts, so a mix gives the same number of samples per family every time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stepsift.bench.families import FAMILY_NAMES, get_family


def check_weights(weights: Mapping[str, float], what: str) -> dict[str, float]:
    """`weights` as floats, after checking each names a known family and is >= 0."""
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
            others = check_weights(self.others, "FamilyMix.others")
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
