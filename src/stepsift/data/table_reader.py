"""Validate a Parquet/Arrow table's rows into `Record`s, and read rows back by position.

The same checks as for JSON input (`reader.read_entry`), row by row, one row group at a
time; a problem names file, row group, row (0-based, as `datasets` and pandas count) and
column. A shard or row group that cannot be read at all is one problem naming it, and its
rows are left out, as a JSON array with a syntax error is.
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .entries import Entry
from .formats import detect_format
from .reader import EntryContext, _Collector, _majority, read_entry, rebuild_record
from .record import Problem, Record
from .tabular import (
    IMAGE_COLUMNS,
    Group,
    Table,
    TableError,
    group_rows,
    read_group,
    row_summary,
    rows_of,
    schema_of,
)


@dataclass
class TableScan:
    """One validating pass over a table, streamed: `valid()` yields (file index, row group,
    entry, record) for each good row and sends every problem to the collector."""

    table: Table
    format: str
    image_root: Path | None
    check_images: bool
    out: _Collector
    row_counts: list[list[int]]  # per file, the rows of each row group ([]: unreadable)
    truncated: bool = False

    def valid(self) -> Iterator[tuple[int, int, Entry, Record]]:
        context = EntryContext(Path(), self.format, Path(), self.image_root is not None,
                               self.check_images, self.out)  # fmt: skip
        for i, f in enumerate(self.table.files):
            context = replace(context, file=f, base=_image_base(f, self.image_root),
                              id_prefix=self.table.label(i))  # fmt: skip
            first = 0
            for g, n in enumerate(self.row_counts[i]):
                group = Group(i, g, first, n)
                first += n
                try:
                    rows = rows_of(read_group(self.table, group))
                except TableError as e:
                    self.out.add(Problem(f, group.first_row, "", str(e), None, None, g))
                    continue
                for k, row in enumerate(rows):
                    if self.out.full:
                        self.truncated = True
                        return
                    entry = Entry(group.first_row + k, row_summary(row), row, row_group=g)
                    record = read_entry(entry, context)
                    if record is not None:
                        yield i, g, entry, record


def _image_base(file: Path, image_root: Path | None) -> Path:
    """Relative image paths resolve against the image root, else the shard's folder."""
    return Path(image_root) if image_root is not None else file.parent


def scan_table(
    table: Table, image_root: str | os.PathLike[str] | None, check_images: bool, out: _Collector
) -> TableScan:
    """Learn the table's row groups and record format (a first pass over the text columns
    only: images are read once, when validating). Shards must share one schema, since a
    selection is written back as one table; an unreadable shard is one problem."""
    first_schema = None
    counts: Counter[str] = Counter()
    sizes: list[list[int]] = []
    for i, f in enumerate(table.files):
        try:
            schema = schema_of(table, i)
            rows = group_rows(table, i)
        except TableError as e:  # an unreadable shard: one problem, its rows left out
            out.add(Problem(f, 0, "", str(e)))
            sizes.append([])
            continue
        if first_schema is None:
            first_schema = schema
        elif not schema.equals(first_schema, check_metadata=False):
            raise TableError(
                f"{f}: its columns differ from {table.files[0]}'s; the shards of one "
                f"dataset must share a schema (got {_columns(schema)} and "
                f"{_columns(first_schema)})"
            )
        sizes.append(rows)
        text_columns = [c for c in schema.names if c not in IMAGE_COLUMNS]
        first = 0
        for g, n in enumerate(rows):
            try:
                text = read_group(table, Group(i, g, first, n), columns=text_columns)
            except TableError:
                first += n
                continue  # reported by the validating pass
            first += n
            for row in rows_of(text):
                if fmt := detect_format(row):
                    counts[fmt] += 1
    if sum(sum(s) for s in sizes) == 0 and not out.problems:
        out.add(Problem(table.files[0], 0, "", "no rows in the table"))
    base = Path(image_root) if image_root is not None else None
    return TableScan(table, _majority(counts), base, check_images, out, sizes)


def _columns(schema) -> str:
    pairs = zip(schema.names, schema.types, strict=True)
    return "[" + ", ".join(f"{n}: {t}" for n, t in pairs) + "]"


class TableRowReader:
    """Reads rows of an indexed table back by (file, row group, row): each row group is
    read once into a small cache, so batches of neighbouring rows cost one read. Picklable
    (the cache is not carried), so a Ray actor can be handed one."""

    cached_groups = 2

    def __init__(self, table: Table, format: str, image_root: Path | None):
        self.table, self.format, self.image_root = table, format, image_root
        self._cache: OrderedDict[tuple[int, int], object] = OrderedDict()
        self._first_rows: dict[int, list[int]] = {}

    grouped = True  # rows are read by row group: order them group by group

    def __getstate__(self) -> dict:
        return {"table": self.table, "format": self.format, "image_root": self.image_root}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["table"], state["format"], state["image_root"])

    def resolved(self) -> TableRowReader:
        """The same reader with absolute paths (for workers with another directory)."""
        files = tuple(f.resolve() for f in self.table.files)
        table = Table(files, self.table.kind, self.table.root.resolve())
        root = self.image_root.resolve() if self.image_root is not None else None
        return TableRowReader(table, self.format, root)

    def read(self, where: np.ndarray | Sequence, lines: Sequence[int]) -> list[Record]:
        """The records at these (file index, row group) pairs and rows, in that order."""
        out = []
        for (i, g), row in zip(np.asarray(where).tolist(), lines, strict=True):
            group = self._group(int(i), int(g))
            first = self._first_row(int(i), int(g))
            obj = rows_of(group.slice(int(row) - first, 1))[0]
            f = self.table.files[int(i)]
            context = EntryContext(
                f, self.format, _image_base(f, self.image_root), False, False, _Collector(0),
                id_prefix=self.table.label(int(i)),
            )  # fmt: skip
            entry = Entry(int(row), row_summary(obj), obj, row_group=int(g))
            out.append(rebuild_record(entry, context))
        return out

    def _group(self, i: int, g: int):
        key = (i, g)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        got = read_group(self.table, Group(i, g, self._first_row(i, g), 0))
        self._cache[key] = got
        if len(self._cache) > self.cached_groups:
            self._cache.popitem(last=False)
        return got

    def _first_row(self, i: int, g: int) -> int:
        if i not in self._first_rows:
            counts = group_rows(self.table, i)
            self._first_rows[i] = [int(x) for x in np.concatenate([[0], np.cumsum(counts)])]
        return self._first_rows[i][g]
