"""Which candidates are harmful: the score file's own flags, a plain threshold, or flags
calibrated against the anchors' noise (`select/reliability.py`) where the file has
per-fold utilities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stepsift.select import reliability
from stepsift.select.score_data import ScoreData

HARMFUL_MODES = ("auto", "calibrated", "threshold")
COVERAGE_MODES = ("auto", "off")


@dataclass(frozen=True)
class Policy:
    """How `select` decides beyond the budget: harmful flags and set-wise selection."""

    harmful: str = "auto"  # auto: calibrated if the file has fold_utility, else the file's
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
        mode = "calibrated" if has_folds else "file"
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
