"""From scores to a subset: keep the top records by utility, written back unchanged."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from stepsift.data import Record, read_records, write_records
from stepsift.engine.store import read_scores


@dataclass(frozen=True)
class Keep:
    """How much to keep: a fraction of the candidates or a count."""

    fraction: float | None = None
    count: int | None = None

    def size(self, n: int) -> int:
        if self.count is not None:
            return min(self.count, n)
        # the small epsilon keeps 0.2 * 1000 from flooring to 199 through float error
        return min(n, math.floor(self.fraction * n + 1e-9))

    def __str__(self) -> str:
        return f"{self.fraction * 100:g}%" if self.fraction is not None else str(self.count)


def parse_keep(spec: str) -> Keep:
    """'20%' or '0.2' -> a fraction; '5000' -> a count."""
    text = str(spec).strip()
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
        raise ValueError(f"--keep {spec!r}: give a percentage (20%), a fraction (0.2) or a count")
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

    def lines(self) -> list[str]:
        out = [
            f"kept {len(self.kept_ids)} of {self.n_candidates} candidates (target {self.n_target})"
        ]
        if self.kept_ids:
            out.append(f"utility range kept: {self.utility_min:.6g} .. {self.utility_max:.6g}")
        out.append(
            f"harmful in pool: {self.n_harmful}; dropped as harmful: {self.n_dropped_harmful}"
        )
        return out


def score_columns(table: pa.Table) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Ids, utilities and harmful flags of a score table; a table without a `harmful`
    column counts negative utility as harmful."""
    ids = [str(x) for x in table.column("id").to_pylist()]
    utility = table.column("utility").to_numpy(zero_copy_only=False).astype(np.float64)
    if "harmful" in table.column_names:
        harmful = table.column("harmful").to_numpy(zero_copy_only=False).astype(bool)
    else:
        harmful = utility < 0
    return ids, utility, harmful


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
) -> Plan:
    """Everything `select` does except writing: read, validate, choose, order."""
    keep = parse_keep(keep) if isinstance(keep, str) else keep
    if order not in ("input", "utility"):
        raise ValueError(f"unknown order {order!r}; choose 'input' or 'utility'")
    read = read_records(Path(candidates), image_root)
    if not skip_invalid:
        read.raise_for_problems()
    ids, utility, harmful = score_columns(read_scores(Path(scores)))
    check_ids_match(ids, [r.id for r in read.records], candidates, scores)
    selection = choose(ids, utility, harmful, keep, drop_harmful)
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
) -> Selection:
    """Write the chosen records of `candidates`, byte-for-byte, in the input's own format.

    `order` is "input" (the file's order) or "utility" (best first). Records are validated
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
        Path(candidates), Path(scores), keep, Path(out), drop_harmful, order, skip_invalid
    )
    if fast is not None:
        return fast
    plan = plan_selection(candidates, scores, keep, drop_harmful, skip_invalid, order, image_root)
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
