"""What selection reads from a score file: ids, utilities, flags, tokens, and the optional
per-fold utilities and gradient sketches (the sketch only when asked for)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from stepsift.engine.store import read_scores, read_settings


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


def matrix_column(table: pa.Table, name: str, source: Path | str) -> np.ndarray | None:
    """A fixed-size list column (`fold_utility`, `group_utility`, `sketch`) as an (n, K)
    float array; None when the table has no such column."""
    if name not in table.column_names:
        return None
    column = table.column(name).combine_chunks()
    n = len(column)
    if column.null_count:
        raise ValueError(f"{source}: column {name!r} has {column.null_count} null row(s)")
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
    elif pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        lengths = np.unique(column.value_lengths().to_numpy(zero_copy_only=False))
        if len(lengths) > 1:
            raise ValueError(f"{source}: rows of column {name!r} differ in length {lengths}")
        width = int(lengths[0]) if len(lengths) else 0
    else:
        raise ValueError(f"{source}: column {name!r} is {column.type}, expected a list of floats")
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(n, width)


@dataclass(frozen=True)
class ScoreData:
    """What selection reads from a score file."""

    source: str  # the file, for messages
    ids: list[str]
    utility: np.ndarray
    harmful: np.ndarray  # the file's own flags
    tokens: np.ndarray | None
    fold_utility: np.ndarray | None
    table: pa.Table = field(repr=False, compare=False)  # for the columns read on demand
    settings: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def sketch(self) -> np.ndarray | None:
        """(n, D) float32 gradient sketches; read only when set-wise selection asks (at 1M
        rows and D = 64 they are 256 MB)."""
        sketch = matrix_column(self.table, "sketch", self.source)
        return sketch.astype(np.float32) if sketch is not None else None

    @cached_property
    def loss(self) -> np.ndarray | None:
        """(n,) the candidates' own proxy losses, or None without the column."""
        if "loss" not in self.table.column_names:
            return None
        return self.table.column("loss").to_numpy(zero_copy_only=False).astype(np.float64)

    @cached_property
    def group_utility(self) -> np.ndarray | None:
        """(n, G) utilities towards each anchor group, or None without the column."""
        return matrix_column(self.table, "group_utility", self.source)

    @property
    def groups(self) -> tuple[list[str], list[int]]:
        """The anchor groups' names and sizes the `group_utility` columns stand for."""
        names = self.settings.get("anchor_groups")
        sizes = self.settings.get("anchor_group_sizes")
        width = self.group_utility.shape[1] if self.group_utility is not None else 0
        if not (isinstance(names, list) and isinstance(sizes, list)) or not (
            len(names) == len(sizes) == width
        ):
            raise ValueError(
                f"{self.source}: has group_utility with {width} columns but its metadata's "
                f"anchor_groups is {names!r} and anchor_group_sizes {sizes!r}"
            )
        return [str(x) for x in names], [int(x) for x in sizes]

    @property
    def fold_sizes(self) -> list[int]:
        sizes = self.settings.get("anchor_fold_sizes")
        if self.fold_utility is not None and (
            not isinstance(sizes, list) or len(sizes) != self.fold_utility.shape[1]
        ):
            raise ValueError(
                f"{self.source}: has fold_utility with {self.fold_utility.shape[1]} folds but "
                f"its metadata's anchor_fold_sizes is {sizes!r}"
            )
        return [int(x) for x in sizes] if sizes is not None else []


def score_data(table: pa.Table, source: Path | str, settings: dict | None = None) -> ScoreData:
    """The columns selection reads, from a score table (optional ones None when absent).
    `settings` default to the ones the table carries in its schema metadata."""
    if settings is None:
        raw = (table.schema.metadata or {}).get(b"stepsift")
        settings = json.loads(raw) if raw else {}
    ids, utility, harmful = score_columns(table)
    tokens = None
    if "tokens" in table.column_names:
        tokens = table.column("tokens").to_numpy(zero_copy_only=False).astype(np.int64)
    return ScoreData(
        str(source),
        ids,
        utility,
        harmful,
        tokens,
        matrix_column(table, "fold_utility", source),
        table,
        dict(settings or {}),
    )


def read_score_data(path: Path) -> ScoreData:
    path = Path(path)
    return score_data(read_scores(path), path, read_settings(path))
