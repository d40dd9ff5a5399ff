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
    Table,
    TableError,
    group_starts,
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
    starts: list[list[int]]  # per file, `group_starts` ([0]: no rows, or unreadable)

    truncated: bool = False

    def valid(self) -> Iterator[tuple[int, int, Entry, Record]]:
        context = EntryContext(Path(), self.format, Path(), self.image_root is not None,
                               self.check_images, self.out)  # fmt: skip
        for i, f in enumerate(self.table.files):
            context = replace(context, file=f, base=_image_base(f, self.image_root),
                              id_prefix=self.table.label(i))  # fmt: skip
            for g, first in enumerate(self.starts[i][:-1]):
                try:
                    rows = rows_of(read_group(self.table, i, g))
                except TableError as e:
                    self.out.add(Problem(f, first, "", str(e), None, None, g))
                    continue
                for k, row in enumerate(rows):
                    if self.out.full:
                        self.truncated = True
                        return
                    entry = Entry(first + k, row_summary(row), row, row_group=g)
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
    starts: list[list[int]] = []
    for i, f in enumerate(table.files):
        try:
            schema = schema_of(table, i)
            first_rows = group_starts(table, i)
        except TableError as e:  # an unreadable shard: one problem, its rows left out
            out.add(Problem(f, 0, "", str(e)))
            starts.append([0])
            continue
        if first_schema is None:
            first_schema = schema
        elif not schema.equals(first_schema, check_metadata=False):
            raise TableError(
                f"{f}: its columns differ from {table.files[0]}'s; the shards of one "
                f"dataset must share a schema (got {_columns(schema)} and "
                f"{_columns(first_schema)})"
            )
        starts.append(first_rows)
        text_columns = [c for c in schema.names if c not in IMAGE_COLUMNS]
        for g in range(len(first_rows) - 1):
            try:
                text = read_group(table, i, g, columns=text_columns)
            except TableError:
                continue  # reported by the validating pass
            for row in rows_of(text):
                if fmt := detect_format(row):
                    counts[fmt] += 1
    if sum(s[-1] for s in starts) == 0 and not out.problems:
        out.add(Problem(table.files[0], 0, "", "no rows in the table"))
    base = Path(image_root) if image_root is not None else None
    return TableScan(table, _majority(counts), base, check_images, out, starts)


def _columns(schema) -> str:
    pairs = zip(schema.names, schema.types, strict=True)
    return "[" + ", ".join(f"{n}: {t}" for n, t in pairs) + "]"


class TableRowReader:
    """Reads rows of an indexed table back by (file, row group, row): each row group is
    read once into a small cache, so batches of neighbouring rows cost one read. Picklable
    (the cache is not carried), so a Ray actor can be handed one."""

    cached_groups = 2

    grouped = True  # rows are read by row group: order them group by group

    def __init__(self, table: Table, format: str, image_root: Path | None):
        self.table, self.format, self.image_root = table, format, image_root
        self._cache: OrderedDict[tuple[int, int], object] = OrderedDict()
        self._starts: dict[int, list[int]] = {}  # per file, `group_starts`
        self._contexts: dict[int, EntryContext] = {}  # per file: how its rows are rebuilt

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
            row = int(row)
            obj = rows_of(self._group(i, g).slice(row - self._start(i, g), 1))[0]
            entry = Entry(row, row_summary(obj), obj, row_group=g)
            out.append(rebuild_record(entry, self._context(i)))
        return out

    def _context(self, i: int) -> EntryContext:
        if i not in self._contexts:
            f = self.table.files[i]
            self._contexts[i] = EntryContext(
                f, self.format, _image_base(f, self.image_root), False, False, _Collector(0),
                id_prefix=self.table.label(i),
            )  # fmt: skip
        return self._contexts[i]

    def _group(self, i: int, g: int):
        key = (i, g)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        got = read_group(self.table, i, g)
        self._cache[key] = got
        if len(self._cache) > self.cached_groups:
            self._cache.popitem(last=False)
        return got

    def _start(self, i: int, g: int) -> int:
        if i not in self._starts:
            self._starts[i] = group_starts(self.table, i)
        return self._starts[i][g]
