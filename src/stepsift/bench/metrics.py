"""How well a score separates the injected noise from clean samples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from stepsift.data.record import Record

# Near-duplicates are redundant, not wrong: they are kept out of the "wrong" class.
NOT_WRONG = ("clean", "near_duplicate")


def noise_tags(pool: Sequence[Record]) -> dict[str, str]:
    """The benchmark's hidden ground truth by id (read only for reporting, never to select)."""
    return {r.id: r.metadata["meta"]["noise"] for r in pool}


def noise_auroc(score: Sequence[float], noise: Sequence[str]) -> float:
    """AUROC of `score` ranking clean samples above wrong ones (0.5 = chance, 1 = perfect)."""
    return auroc_against(score, noise, lambda tag: tag not in NOT_WRONG)


def auroc_against(score: Sequence[float], noise: Sequence[str], is_bad) -> float:
    s = np.asarray(score, dtype=np.float64)
    keep = np.array([tag == "clean" or is_bad(tag) for tag in noise])
    clean = np.array([tag == "clean" for tag in noise])[keep]
    if clean.all() or not clean.any():
        return float("nan")
    return float(roc_auc_score(clean, s[keep]))


def per_type_auroc(score: Sequence[float], noise: Sequence[str]) -> dict[str, float]:
    """Clean versus each noise type on its own."""
    types = sorted({t for t in noise if t != "clean"})
    return {t: auroc_against(score, noise, lambda tag, t=t: tag == t) for t in types}


def harmful_precision(harmful: Sequence[bool], noise: Sequence[str]) -> float:
    """Of the samples flagged harmful, the share that really are wrong."""
    flagged = [tag for h, tag in zip(harmful, noise, strict=True) if h]
    if not flagged:
        return float("nan")
    return sum(tag not in NOT_WRONG for tag in flagged) / len(flagged)


def flag_quality(flags: Sequence[bool], noise: Sequence[str]) -> dict:
    """How many flags, their precision (`harmful_precision`) and their recall of the
    wrong samples."""
    wrong = np.array([t not in NOT_WRONG for t in noise])
    flags = np.asarray(flags, dtype=bool)
    return {
        "flagged": int(flags.sum()),
        "precision": harmful_precision(flags, noise),
        "recall": int((flags & wrong).sum()) / int(wrong.sum()) if wrong.any() else float("nan"),
    }
