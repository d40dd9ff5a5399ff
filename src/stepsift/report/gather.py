"""Read what the report shows: the score file's columns and settings (read as `select`
reads them), and the candidate records of the samples it displays.

Optional columns (`fold_utility`, `group_utility`) may be absent; what is missing, or
recorded inconsistently, is said in `ReportData.notes` or raised as a ValueError naming the
file and field. Nothing here draws or writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stepsift.data import Record
from stepsift.data.index import index_records
from stepsift.engine.store import read_scores, read_settings
from stepsift.select.harmful import Policy, harmful_flags
from stepsift.select.keep import rank
from stepsift.select.score_data import ScoreData, matrix_column, score_data


@dataclass(frozen=True)
class Groups:
    """Each candidate's utility towards each anchor group (`group_utility`)."""

    names: list[str]
    sizes: list[int] | None  # anchors per group, when recorded
    utility: np.ndarray  # (n_candidates, n_groups)


@dataclass(frozen=True)
class Folds:
    """Each candidate's utility on each disjoint anchor fold (`fold_utility`)."""

    sizes: list[int]  # anchors per fold
    utility: np.ndarray  # (n_candidates, n_folds)


@dataclass
class ReportData:
    """What the report reads from a score file: what `select` reads (`scores`) and the
    columns only a person looks at."""

    path: Path
    scores: ScoreData
    harmful: np.ndarray  # the flags `select` uses by default (calibrated where it can)
    harmful_rule: str  # which rule made them, as `select` prints it
    loss: np.ndarray | None
    truncated: np.ndarray | None
    groups: Groups | None
    folds: Folds | None
    notes: list[str] = field(default_factory=list)  # why a section is absent or partial

    @property
    def ids(self) -> list[str]:
        return self.scores.ids

    @property
    def utility(self) -> np.ndarray:
        return self.scores.utility

    @property
    def tokens(self) -> np.ndarray | None:
        return self.scores.tokens

    @property
    def settings(self) -> dict[str, Any]:
        return self.scores.settings

    @property
    def n(self) -> int:
        return len(self.ids)

    @cached_property
    def order(self) -> np.ndarray:
        """Row indices, best utility first (ties by id, as `select` ranks)."""
        return rank(self.ids, self.utility)


def read_report_data(path: Path) -> ReportData:
    """The score file's columns as arrays, its settings, and the optional diagnostics."""
    path = Path(path)
    table = read_scores(path)  # the sketch too: the default harmful flags find kinds with it
    settings = read_settings(path)
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: the 'stepsift' metadata is not a JSON object")
    scores = score_data(table, path, settings)
    if not scores.ids:
        raise ValueError(f"{path}: the score file has no rows")
    _require_finite(path, "utility", scores.utility, scores.ids)
    notes: list[str] = []
    folds = _folds(path, scores, notes)
    harmful, rule = harmful_flags(scores, Policy())
    data = ReportData(
        path=path,
        scores=scores,
        harmful=np.asarray(harmful, dtype=bool),
        harmful_rule=rule,
        loss=_column(table, "loss", np.float64),
        truncated=_column(table, "truncated", bool),
        groups=_groups(path, table, scores, notes),
        folds=folds,
        notes=notes,
    )
    if data.tokens is None:
        notes.append("no `tokens` column: the budget curve counts candidates, not tokens")
    return data


def _column(table: pa.Table, name: str, dtype: type) -> np.ndarray | None:
    if name not in table.column_names:
        return None
    return table.column(name).to_numpy(zero_copy_only=False).astype(dtype)


def _require_finite(path: Path, name: str, values: np.ndarray, ids: list[str]) -> None:
    """Every row of `values` (one per id) must be finite: NaN would poison every ranking."""
    bad = ~np.isfinite(values).reshape(len(ids), -1).all(axis=1)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise ValueError(
            f"{path}: column {name!r} has {int(bad.sum())} row(s) with non-finite values, "
            f"e.g. for id {ids[row]!r}"
        )


def _groups(path: Path, table: pa.Table, scores: ScoreData, notes: list[str]) -> Groups | None:
    values = matrix_column(table, "group_utility", path)
    if values is None:
        return None
    values = values.astype(np.float64)
    _require_finite(path, "group_utility", values, scores.ids)
    width = values.shape[1]
    names = scores.settings.get("anchor_groups")
    if names is None:
        names = [f"group {g}" for g in range(width)]
        notes.append("the score file does not name its anchor groups (`anchor_groups`)")
    elif not isinstance(names, list) or len(names) != width:
        raise ValueError(
            f"{path}: metadata field 'anchor_groups' should list {width} names "
            f"(the width of 'group_utility'), got {names!r:.200}"
        )
    sizes = scores.settings.get("anchor_group_sizes")
    if sizes is not None and (
        not isinstance(sizes, list)
        or len(sizes) != width
        or not all(isinstance(x, int) and x > 0 for x in sizes)
    ):
        raise ValueError(
            f"{path}: metadata field 'anchor_group_sizes' should list {width} positive "
            f"anchor counts (one per group), got {sizes!r:.200}"
        )
    return Groups(names=[str(x) for x in names], sizes=sizes, utility=values)


def _folds(path: Path, scores: ScoreData, notes: list[str]) -> Folds | None:
    if scores.fold_utility is None:
        return None
    if "anchor_fold_sizes" not in scores.settings:
        notes.append(
            "the score file has `fold_utility` but no `anchor_fold_sizes`: "
            "anchor reliability cannot be computed"
        )
        return None
    values = scores.fold_utility.astype(np.float64)
    _require_finite(path, "fold_utility", values, scores.ids)
    return Folds(sizes=scores.fold_sizes, utility=values)  # fold_sizes checks the metadata


@dataclass(frozen=True)
class Shown:
    """The rows the report displays as samples."""

    harmful: list[int]  # most harmful first: lowest utility among those flagged harmful
    useful: list[int]  # most useful first


def pick_samples(data: ReportData, top: int) -> Shown:
    order = data.order
    flagged = order[data.harmful[order]][::-1]  # worst first
    return Shown(harmful=[int(i) for i in flagged[:top]], useful=[int(i) for i in order[:top]])


def read_shown_records(
    candidates: Path, data: ReportData, rows: list[int], image_root: Path | None = None
) -> tuple[dict[str, Record], list[str]]:
    """The candidate records of `rows`, by id, and notes on those that could not be found.

    The file is indexed in one streamed pass and only the shown records are read back, so a
    pool of millions costs an index, not its records. Images are not checked here: the page
    embeds those it can decode and names the others.
    """
    candidates = Path(candidates)
    index = index_records(candidates, image_root, check_images=False)
    if not pc.any(pc.is_in(index.ids, value_set=pa.array(data.ids, pa.string()))).as_py():
        first = f"; its first problem: {index.problems[0]}" if index.problems else ""
        raise ValueError(
            f"{data.path}: none of its {data.n} scored ids is a valid record of {candidates} "
            f"(were the scores made from another file?){first}"
        )
    wanted = sorted({data.ids[i] for i in rows})
    where = pc.index_in(index.ids, value_set=pa.array(wanted, pa.string()))
    positions = np.flatnonzero(where.is_valid().to_numpy(zero_copy_only=False))
    records = {r.id: r for r in index.load(positions)}
    missing = [i for i in wanted if i not in records]
    notes = []
    if missing:
        notes.append(
            f"{len(missing)} shown id(s) are not valid records of {candidates}, "
            f"e.g. {missing[0]!r:.100}: shown without their text"
        )
    return records, notes
