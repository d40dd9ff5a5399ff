"""A validated pool that stays on disk: where each good record is, not the record itself.

`index_records` validates a file exactly as `read_records` does (same problems, same ids),
in one streamed pass, but keeps for each good record only its id, line, where it is (byte
span; for a Parquet/Arrow row, file and row group) and text size: a few dozen bytes a
record in compact arrays, however long its conversation. Records are read back in batches
when they are needed (`RecordIndex.load`), so scoring a pool of millions of records holds
one batch of them at a time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .reader import DataValidationError, _Collector, scan_file
from .record import Problem, Record
from .spans import SpanReader
from .table_reader import TableRowReader, scan_table
from .tabular import is_table, open_table

_FLUSH = 1 << 16  # rows gathered in Python lists before they are packed into arrays


@dataclass
class RecordIndex:
    """The good records of one input, by position: ids, lines, where each is, text sizes."""

    reader: SpanReader | TableRowReader
    ids: pa.ChunkedArray  # string
    lines: np.ndarray  # int64: the 1-based line each record starts on; a table row's row
    where: np.ndarray  # int64 (n, 2): byte offset and length; a table row's file and group
    sizes: np.ndarray  # int64, characters of text over its turns (for length-sorted batches)
    problems: list[Problem]
    container: str  # "jsonl", "json", "parquet" or "arrow"

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def format(self) -> str:
        return self.reader.format

    def id_list(self, positions: Sequence[int] | np.ndarray) -> list[str]:
        return self.ids.take(pa.array(np.asarray(positions, dtype=np.int64))).to_pylist()

    def load(self, positions: Sequence[int] | np.ndarray) -> list[Record]:
        """The records at `positions`, read back from the input, in that order."""
        p = np.asarray(positions, dtype=np.int64)
        return self.reader.read(self.where[p], self.lines[p])

    def length_order(self) -> np.ndarray:
        """Positions ordered by text size, then id: records of like length batch together
        (little padding), in an order that does not depend on the file's. A table's rows
        are ordered so within each row group: a batch then reads one group, not many."""
        columns = {"size": self.sizes, "id": self.ids}
        keys = [("size", "ascending"), ("id", "ascending")]
        if self.reader.grouped:
            columns = {"file": self.where[:, 0], "group": self.where[:, 1], **columns}
            keys = [("file", "ascending"), ("group", "ascending"), *keys]
        return pc.sort_indices(pa.table(columns), sort_keys=keys).to_numpy()

    def raise_for_problems(self) -> None:
        if self.problems:
            raise DataValidationError(self.problems)


class LazyRecords(Sequence[Record]):
    """A `RecordIndex` seen as a sequence of records, each read when it is asked for."""

    def __init__(self, index: RecordIndex):
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.index.load(range(len(self))[i])
        return self.index.load([i])[0]


def index_records(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    check_images: bool = True,
) -> RecordIndex:
    """Validate every record of a JSONL/JSON file or a Parquet/Arrow table, streamed; keep
    where each is."""
    out = _Collector(None)
    columns = _Columns()
    if is_table(path):
        table = open_table(path)
        scan = scan_table(table, image_root, check_images, out)
        for i, g, entry, record in scan.valid():
            columns.add(record.id, entry.line, i, g, text_size(record))
        reader = TableRowReader(table, scan.format, scan.image_root)
        return RecordIndex(reader, *columns.finish(), out.problems, table.kind)
    scan = scan_file(Path(path), image_root, check_images, out)
    for entry, record in scan.valid():
        columns.add(record.id, entry.line, entry.offset, entry.length, text_size(record))
    reader = SpanReader(scan.file, scan.format, scan.base)
    return RecordIndex(reader, *columns.finish(), out.problems, scan.container)


def text_size(record: Record) -> int:
    """Characters of text over a record's turns: what batches are sorted by."""
    return sum(len(t.text) for t in record.turns)


class _Columns:
    """Index rows gathered in short Python lists, packed into arrays every `_FLUSH` rows."""

    def __init__(self) -> None:
        self._rows: list[tuple[str, int, int, int, int]] = []
        self._ids: list[pa.Array] = []
        self._numbers: list[np.ndarray] = []

    def add(self, rid: str, line: int, offset: int, length: int, size: int) -> None:
        self._rows.append((rid, line, offset, length, size))
        if len(self._rows) >= _FLUSH:
            self._pack()

    def _pack(self) -> None:
        if not self._rows:
            return
        self._ids.append(pa.array([r[0] for r in self._rows], pa.string()))
        self._numbers.append(np.array([r[1:] for r in self._rows], dtype=np.int64))
        self._rows = []

    def finish(self) -> tuple[pa.ChunkedArray, np.ndarray, np.ndarray, np.ndarray]:
        """ids, lines, where (n, 2) and sizes."""
        self._pack()
        ids = pa.chunked_array(self._ids, pa.string())  # chunks: no 2 GiB limit on all ids
        numbers = np.concatenate(self._numbers) if self._numbers else np.zeros((0, 4), np.int64)
        lines, where, sizes = numbers[:, 0], numbers[:, 1:3], numbers[:, 3]
        return ids, *(np.ascontiguousarray(a) for a in (lines, where, sizes))
