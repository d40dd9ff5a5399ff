"""From a score file's data to the ids to keep, and the lines that say why.

How much is kept (`Keep`): a fraction, a count, a token budget or `auto` (see
`select/budget.py`); which are harmful (`Policy.harmful`): calibrated against the anchors'
noise where the score file has `fold_utility` (`select/reliability.py`), else the file's own
flags; with `Policy.diverse`, a set-wise greedy that pays for redundancy
(`select/diverse.py`); by default, with utilities towards 2+ anchor groups, the budget
filled by group (`select/coverage.py`). `decide` is the one place all of that happens, for
the full path (`select/topk.py`) and the fast path (`select/fast.py`) alike, so both
choose the same records.
"""

from __future__ import annotations

import math

import numpy as np

from stepsift.select import budget, coverage, diverse, reliability
from stepsift.select.harmful import Policy, harmful_flags
from stepsift.select.keep import Keep, Selection, rank
from stepsift.select.score_data import ScoreData


def _ranking_position(order: np.ndarray) -> np.ndarray:
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    return position


def no_sketch_error(source: str) -> ValueError:
    return ValueError(
        f"{source}: --diverse needs the score file's `sketch` column (a random projection of "
        "each candidate's gradient), and this file has none. `stepsift score` writes it with "
        "--sketch-dim D > 0 (default 64) for the estimators that take per-sample gradients "
        "(exact, curvature, less); rescore with one of them, or select without --diverse"
    )


def decide(
    data: ScoreData, keep: Keep, drop_harmful: bool = False, policy: Policy | None = None
) -> Selection:
    """Which candidates to keep, and the lines that say why: the whole of `select` but the
    reading and writing of records. Both the full and the fast path call it."""
    policy = policy or Policy()
    ids, utility, n = data.ids, data.utility, len(data.ids)
    harmful, harmful_line = harmful_flags(data, policy)
    notes: list[str] = []
    warnings: list[str] = []
    order = rank(ids, utility)
    tokens = data.tokens
    if keep.by_curve:
        if keep.tokens is not None and tokens is None:
            raise ValueError(f"{data.source}: --keep {keep} needs the score file's `tokens` column")
        cost = tokens if tokens is not None else np.ones(n, dtype=np.int64)
        curve = budget.utility_curve(ids, utility, cost)
        if keep.auto:
            cut = budget.explain_auto_cut(curve)
            n_target = cut.n
            if n_target == 0:
                raise ValueError(
                    f"{data.source}: --keep auto: no candidate has positive utility, so no "
                    "subset helps the anchors; give --keep explicitly to keep some anyway"
                )
            notes.append(
                cut.line()
                + (
                    ""
                    if tokens is not None
                    else " (no tokens column: each candidate counted as cost 1)"
                )
            )
        else:
            n_target = budget.token_cut(curve, keep.tokens)
            if n_target == 0:
                first = int(curve.cum_tokens[0]) if n else 0
                raise ValueError(
                    f"--keep {keep}: the budget is smaller than the best candidate's "
                    f"{first:,} supervised tokens, so nothing fits"
                )
            notes.append(
                f"token budget {keep.tokens:,}: the best {n_target} candidates by utility fit "
                f"({int(curve.cum_tokens[n_target - 1]):,} tokens)"
            )
    else:
        n_target = keep.size(n)
    if policy.diverse:
        if data.sketch is None:
            raise no_sketch_error(data.source)
        token_budget = keep.tokens if keep.tokens is not None else None
        top = diverse.diverse_order(
            utility,
            data.sketch,
            k=None if token_budget is not None else n_target,
            tokens=tokens,
            budget_tokens=token_budget,
            tie=_ranking_position(order),
        )
        n_target = len(top)
        overlap = len(np.intersect1d(top, order[:n_target]))
        notes.append(
            f"diverse: redundancy-aware greedy on {data.sketch.shape[1]}-dim gradient "
            f"sketches; {n_target - overlap} of the {n_target} kept are not in the plain top "
            f"{n_target} (near-duplicates of better candidates left out)"
        )
    elif covers(data, policy, keep):
        names, sizes = data.groups
        top, served = coverage_plan(data, n_target, order)
        notes.append(coverage_line(names, sizes, served, top, order[:n_target]))
    else:
        top = order[:n_target]
    dropped = 0
    if drop_harmful:
        dropped = int(harmful[top].sum())
        top = top[~harmful[top]]
    notes.append(harmful_line)
    if data.fold_utility is not None:
        rel = reliability.split_half_reliability(data.fold_utility, data.fold_sizes)
        notes.append(rel.line())
        if rel.warning:
            warnings.append(f"anchor set: {rel.warning}")
    kept_utility = utility[top]
    return Selection(
        kept_ids=[ids[i] for i in top],
        n_candidates=n,
        n_target=n_target,
        n_dropped_harmful=dropped,
        n_harmful=int(harmful.sum()),
        utility_min=float(kept_utility.min()) if len(top) else math.nan,
        utility_max=float(kept_utility.max()) if len(top) else math.nan,
        notes=tuple(notes),
        warnings=tuple(warnings),
        kept_tokens=int(tokens[top].sum()) if tokens is not None else None,
    )


def covers(data: ScoreData, policy: Policy, keep: Keep) -> bool:
    """Whether the budget is filled by anchor group: by default, when the file has utilities
    towards 2+ groups and the budget is a size (a token budget or `auto` is cut on the plain
    utility curve)."""
    if policy.coverage == "off" or keep.by_curve or data.group_utility is None:
        return False
    return data.group_utility.shape[1] >= 2


def coverage_plan(
    data: ScoreData, n_target: int, order: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Coverage's `n_target` picks, in the order taken, and the anchor group each serves;
    `order` is the plain ranking (`rank`) when the caller already has it."""
    _, sizes = data.groups
    if order is None:
        order = rank(data.ids, data.utility)
    tie = _ranking_position(order)
    return coverage.coverage_order(data.group_utility, np.array(sizes), n_target, tie)


def coverage_line(
    names: list[str], sizes: list[int], served: np.ndarray, top: np.ndarray, plain: np.ndarray
) -> str:
    quota = ", ".join(f"{name} {int((served == j).sum())}" for j, name in enumerate(names))
    moved = len(top) - len(np.intersect1d(top, plain))
    return (
        f"coverage: the budget filled by anchor group in proportion to the anchors "
        f"({', '.join(f'{n} {s}' for n, s in zip(names, sizes, strict=True))}), each group's "
        f"share by its own utility: {quota}; {moved} of the {len(top)} kept are not in the "
        "plain top by utility (--coverage off: the plain top-k)"
    )


def choose(
    ids: list[str], utility: np.ndarray, harmful: np.ndarray, keep: Keep, drop_harmful: bool = False
) -> Selection:
    """The top `keep` of the candidates by utility; with `drop_harmful`, harmful ones never
    make it in (so fewer than the target are kept when too few are not harmful)."""
    n_target = keep.size(len(ids))
    order = rank(ids, utility)
    top = order[:n_target]
    dropped = 0
    if drop_harmful:
        dropped = int(harmful[top].sum())
        top = top[~harmful[top]]
    kept_utility = utility[top]
    return Selection(
        kept_ids=[ids[i] for i in top],
        n_candidates=len(ids),
        n_target=n_target,
        n_dropped_harmful=dropped,
        n_harmful=int(harmful.sum()),
        utility_min=float(kept_utility.min()) if len(top) else math.nan,
        utility_max=float(kept_utility.max()) if len(top) else math.nan,
    )
