"""Which candidates are harmful: the score file's own flags, a plain threshold, flags
calibrated against the anchors' noise (`select/reliability.py`) where the file has
per-fold utilities, or, by default, two witnesses together (`evidence`): the step hurts
the anchors beyond their noise *and* the proxy's loss on the candidate is an outlier
among candidates of its kind (`select/misfit.py`).

Why two: a single Adam step raises the anchors' loss for most of a pool (74% of bench v2's
10,000 candidates had utility < 0, 40% precision against the injected errors), so a
negative utility alone marks the unhelpful and the wrong alike; a wrong sample is also one
the proxy finds surprising for its format. Requiring both trades recall for a flag a user
can believe (benchmarks/RESULTS.md has the figures of every rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stepsift.select import misfit, reliability
from stepsift.select.score_data import ScoreData

HARMFUL_MODES = ("auto", "evidence", "calibrated", "threshold")
COVERAGE_MODES = ("auto", "off")


@dataclass(frozen=True)
class Policy:
    """How `select` decides beyond the budget: harmful flags and set-wise selection."""

    # auto: where the file has fold_utility, evidence (calibrated without a loss column);
    # else the file's own flags
    harmful: str = "auto"
    level: float = 0.05  # one-sided level of the calibrated flags
    correction: str = "none"  # or "bh": Benjamini-Hochberg over the pool
    diverse: bool = False
    # auto: fill the budget by anchor group (select/coverage.py) when the score file has
    # group_utility for 2+ groups; off: the plain top-k by utility (the paper's OST)
    coverage: str = "auto"

    def __post_init__(self) -> None:
        if self.coverage not in COVERAGE_MODES:
            raise ValueError(f"--coverage {self.coverage!r}: choose one of {COVERAGE_MODES}")
        if self.harmful not in HARMFUL_MODES:
            raise ValueError(f"--harmful {self.harmful!r}: choose one of {HARMFUL_MODES}")
        if self.correction not in reliability.CORRECTIONS:
            raise ValueError(
                f"--harmful-correction {self.correction!r}: choose one of {reliability.CORRECTIONS}"
            )
        if not 0 < self.level < 1:
            raise ValueError(f"--harmful-level {self.level}: must be in (0, 1)")


def harmful_flags(data: ScoreData, policy: Policy) -> tuple[np.ndarray, str]:
    """The harmful flags `policy` asks for, and a line saying which rule made them."""
    mode = policy.harmful
    has_folds = data.fold_utility is not None and data.fold_utility.shape[1] >= 2
    if mode == "auto":
        if not has_folds:
            mode = "file"
        else:
            mode = "evidence" if data.loss is not None else "calibrated"
    if mode == "evidence":
        return evidence_flags(data, policy, has_folds)
    if mode == "calibrated":
        if not has_folds:
            raise ValueError(
                f"{data.source}: --harmful calibrated needs the fold_utility column with 2+ "
                "anchor folds; `stepsift score` writes it with --anchor-folds K (default 10)"
            )
        flags = reliability.calibrated_harmful(
            data.utility, data.fold_utility, data.fold_sizes, policy.level, policy.correction
        )
        rule = f"one-sided t test at {policy.level:g}" + (
            ", Benjamini-Hochberg over the pool" if policy.correction == "bh" else ""
        )
        return flags, (
            f"harmful: calibrated, utility below 0 beyond the anchors' noise ({rule}, "
            f"{data.fold_utility.shape[1]} anchor folds): {int(flags.sum())} flagged, against "
            f"{int((data.utility < 0).sum())} with utility < 0"
        )
    if mode == "threshold":
        below = float(data.settings.get("harmful_below", 0.0))
        flags = data.utility < below
        return flags, f"harmful: utility < {below:g} (the score run's --harmful-below)"
    return data.harmful, "harmful: the score file's own flags"


def evidence_flags(data: ScoreData, policy: Policy, has_folds: bool) -> tuple[np.ndarray, str]:
    """Harmful where the step hurts the anchors (beyond their noise when the file has
    folds) and the candidate's loss misfits its kind."""
    if data.loss is None:
        raise ValueError(f"{data.source}: --harmful evidence needs the score file's loss column")
    if has_folds:
        hurts = reliability.calibrated_harmful(
            data.utility, data.fold_utility, data.fold_sizes, policy.level, policy.correction
        )
        first = f"utility below 0 beyond the anchors' noise (one-sided t at {policy.level:g})"
    else:
        hurts = data.utility < 0
        first = "utility < 0"
    kinds = misfit.candidate_kinds(data.sketch, len(data.ids))
    odd = misfit.loss_z_within_kind(data.loss, kinds) > misfit.MISFIT_Z
    flags = hurts & odd
    n_kinds = len(np.unique(kinds))
    return flags, (
        f"harmful: {first} and a loss more than {misfit.MISFIT_Z:g} robust SDs above its "
        f"kind's median ({n_kinds} kind{'s' if n_kinds != 1 else ''} of candidates by "
        f"gradient sketch): {int(flags.sum())} flagged; {int(hurts.sum())} hurt the anchors, "
        f"{int(odd.sum())} misfit their kind"
    )
