"""Write chosen rows of a Parquet/Arrow table to one Parquet file, rows unchanged.

The output has the input's schema, its metadata included (the `huggingface` key through
which `datasets` knows a struct column is an Image), so the subset loads as the input did,
images still embedded. Rows are copied by Arrow `take` from the row groups they are in;
nothing is decoded to Python. Row groups of the output are about as large as the input's
(its authors chose them), capped so that one holds about 64 MiB.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_write
from .tabular import PARQUET, Table, group_rows, group_starts, read_group, schema_of

_GROUP_BYTES = 64 << 20  # an output row group's target size, uncompressed
_WINDOW_BYTES = 128 << 20  # kept rows gathered at a time before they are written


def write_table_rows(
    table: Table, where: np.ndarray, rows: np.ndarray, out: str | os.PathLike[str]
) -> int:
    """Write the rows at (file index, row group) `where` and file row `rows`, in that order,
    to the Parquet file `out` (atomically); return how many were written.

    The rows are gathered a window at a time (about 128 MiB of them): each row group a
    window needs is read once, in file order, and the window is then put in the asked
    order. In the input's order that reads every row group once; in another order (best
    first) once per window, so a subset under the window's size is one pass too."""
    out = Path(out)
    schema = schema_of(table)
    per_row = row_bytes(table)
    per_group = output_group_rows(table, per_row)
    window = max(per_group, _WINDOW_BYTES // per_row)
    starts = {i: group_starts(table, i) for i in {int(i) for i in where[:, 0]}}

    def write(tmp: str) -> None:
        with pq.ParquetWriter(tmp, schema) as writer:
            for start in range(0, len(rows), window):
                block = _gather(table, where[start : start + window],
                                rows[start : start + window], starts, schema)  # fmt: skip
                writer.write_table(block, row_group_size=per_group)
            if not len(rows):
                writer.write_table(schema.empty_table())

    atomic_write(out, write)
    return len(rows)


def _gather(
    table: Table, where: np.ndarray, rows: np.ndarray, starts: dict, schema: pa.Schema
) -> pa.Table:
    """The rows named, in the order named, each row group read once."""
    by_group: dict[tuple[int, int], list[int]] = {}
    for k, (i, g) in enumerate(where.tolist()):
        by_group.setdefault((i, g), []).append(k)
    pieces, order = [], []
    for (i, g), ks in sorted(by_group.items()):
        first = starts[i][g]
        group = read_group(table, i, g)
        offsets = pa.array([int(rows[k]) - first for k in ks], pa.int64())
        pieces.append(group.take(offsets).cast(schema))
        order += ks
    gathered = pa.concat_tables(pieces)
    # gathered row j is asked-for row order[j]; put them back in the asked order
    back = np.empty(len(order), dtype=np.int64)
    back[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
    return gathered.take(pa.array(back)).replace_schema_metadata(schema.metadata)


def row_bytes(table: Table) -> int:
    """About how many bytes a row holds, uncompressed (Parquet footers say; an Arrow file
    is uncompressed on disk)."""
    rows = sum(sum(group_rows(table, i)) for i in range(len(table.files)))
    if table.kind == PARQUET:
        total = 0
        for f in table.files:
            meta = pq.ParquetFile(f).metadata
            total += sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    else:
        total = sum(f.stat().st_size for f in table.files)
    return max(1, total // max(1, rows))


def output_group_rows(table: Table, per_row: int) -> int:
    """Rows per output row group: the input's median, capped at about 64 MiB a group
    (`per_row`: `row_bytes(table)`)."""
    counts = [n for i in range(len(table.files)) for n in group_rows(table, i) if n]
    if not counts:
        return 1024
    return max(1, min(int(np.median(counts)), _GROUP_BYTES // per_row))
