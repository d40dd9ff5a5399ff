"""From scores to a subset: keep the top records by utility, written back unchanged.

How much is kept (`Keep`): a fraction, a count, a token budget or `auto` (see
`select/budget.py`); which are harmful (`Policy.harmful`): calibrated against the anchors'
noise where the score file has `fold_utility` (`select/reliability.py`), else the file's own
flags; and, with `Policy.diverse`, a set-wise greedy that pays for redundancy
(`select/diverse.py`). `decide` is the one place all of that happens, for the full path here
and the fast path (`select/fast.py`) alike, so both choose the same records.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stepsift.data import Record, read_records, write_records
from stepsift.select import budget, coverage, diverse, reliability
from stepsift.select.harmful import Policy, harmful_flags
from stepsift.select.score_data import ScoreData, read_score_data

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
        top, served = coverage.coverage_order(
            data.group_utility, np.array(sizes), n_target, _ranking_position(order)
        )
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


def rank(ids: list[str], utility: np.ndarray) -> np.ndarray:
    """Indices by utility, highest first; ties broken by id so the order is reproducible."""
    # lexsort sorts by the last key first: utility descending, then id ascending
    return np.lexsort((np.asarray(ids, dtype=str), -utility))


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


@dataclass
class Plan:
    """A selection decided but not yet written: the records to write, in order."""

    selection: Selection
    records: list[Record]
    container: str  # the input's container, "jsonl" or "json"


def plan_selection(
    candidates: Path,
    scores: Path,
    keep: Keep | str,
    drop_harmful: bool = False,
    skip_invalid: bool = False,
    order: str = "input",
    image_root: Path | None = None,
    policy: Policy | None = None,
) -> Plan:
    """Everything `select` does except writing: read, validate, choose, order."""
    keep = parse_keep(keep) if isinstance(keep, str) else keep
    if order not in ("input", "utility"):
        raise ValueError(f"unknown order {order!r}; choose 'input' or 'utility'")
    read = read_records(Path(candidates), image_root)
    if not skip_invalid:
        read.raise_for_problems()
    data = read_score_data(Path(scores))
    check_ids_match(data.ids, [r.id for r in read.records], candidates, scores)
    selection = decide(data, keep, drop_harmful, policy)
    by_id = {r.id: r for r in read.records}
    if order == "utility":
        chosen = [by_id[i] for i in selection.kept_ids]
    else:
        kept = set(selection.kept_ids)
        chosen = [r for r in read.records if r.id in kept]
    return Plan(selection, chosen, read.container)


def select(
    candidates: Path,
    scores: Path,
    keep: Keep | str,
    out: Path,
    drop_harmful: bool = False,
    skip_invalid: bool = False,
    order: str = "input",
    image_root: Path | None = None,
    policy: Policy | None = None,
) -> Selection:
    """Write the chosen records of `candidates`, byte-for-byte, in the input's own format.

    `keep` is a fraction, a count, a token budget or `auto` (`parse_keep`); `policy` says
    how harmful flags are made and whether the selection is set-wise (`Policy`).
    `order` is "input" (the file's order) or "utility" (best first; with
    `policy.diverse`, the order the greedy chose them). Records are validated
    as `score` validated them (images included, resolved against `image_root`), so that with
    `skip_invalid` the same records are left out; when the score file vouches for these
    exact JSONL bytes, that validation is trusted and the file is only streamed
    (`select/fast.py`).
    """
    from stepsift.select.fast import fast_select  # it builds on this module

    keep = parse_keep(keep) if isinstance(keep, str) else keep
    if order not in ("input", "utility"):
        raise ValueError(f"unknown order {order!r}; choose 'input' or 'utility'")
    fast = fast_select(
        Path(candidates), Path(scores), keep, Path(out), drop_harmful, order, skip_invalid, policy
    )
    if fast is not None:
        return fast
    plan = plan_selection(
        candidates, scores, keep, drop_harmful, skip_invalid, order, image_root, policy
    )
    write_records(plan.records, Path(out), container=plan.container)
    return plan.selection


def check_ids_match(
    score_ids: list[str], record_ids: list[str], candidates: Path, scores: Path
) -> None:
    """Scores and candidates must describe the same records, each once."""
    seen: set[str] = set()
    doubled = [i for i in score_ids if i in seen or seen.add(i)]
    if doubled:
        raise ValueError(
            f"{scores}: {len(doubled)} id(s) scored more than once, e.g. {doubled[0]!r}"
        )
    records = set(record_ids)
    unknown = [i for i in score_ids if i not in records]
    unscored = [i for i in record_ids if i not in seen]
    if unknown:
        raise ValueError(
            f"{scores}: {len(unknown)} scored id(s) are not in {candidates}, e.g. {unknown[0]!r} "
            "(were the scores made from another file?)"
        )
    if unscored:
        raise ValueError(
            f"{candidates}: {len(unscored)} record(s) have no score in {scores}, "
            f"e.g. {unscored[0]!r}"
        )
