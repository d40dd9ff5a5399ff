"""Write chosen rows of a Parquet/Arrow table to one Parquet file, rows unchanged.

The output has the input's schema, its metadata included (the `huggingface` key through
which `datasets` knows a struct column is an Image), so the subset loads as the input did,
images still embedded. Rows are copied by Arrow `take` from the row groups they are in;
nothing is decoded to Python. Row groups of the output are about as large as the input's
(its authors chose them), capped so that one holds about 64 MiB.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_write
from .tabular import PARQUET, Group, Table, group_rows, read_group, schema_of

_GROUP_BYTES = 64 << 20  # an output row group's target size, uncompressed


def write_table_rows(
    table: Table, where: np.ndarray, rows: np.ndarray, out: str | os.PathLike[str]
) -> int:
    """Write the rows at (file index, row group) `where` and file row `rows`, in that order,
    to the Parquet file `out` (atomically); return how many were written."""
    out = Path(out)
    schema = schema_of(table)
    per_group = output_group_rows(table)
    first_rows = {
        i: np.concatenate([[0], np.cumsum(group_rows(table, i))]).astype(np.int64)
        for i in sorted({int(i) for i in where[:, 0]})
    } if len(where) else {}  # fmt: skip
    cache: OrderedDict[tuple[int, int], pa.Table] = OrderedDict()

    def group_table(i: int, g: int) -> pa.Table:
        if (i, g) not in cache:
            cache[(i, g)] = read_group(table, Group(i, g, int(first_rows[i][g]), 0))
            if len(cache) > 2:
                cache.popitem(last=False)
        return cache[(i, g)]

    def write(tmp: str) -> None:
        with pq.ParquetWriter(tmp, schema) as writer:
            for start in range(0, len(rows), per_group):
                chunk = zip(where[start : start + per_group].tolist(),
                            rows[start : start + per_group].tolist(), strict=True)  # fmt: skip
                pieces = [(i, g, row - int(first_rows[i][g])) for (i, g), row in chunk]
                writer.write_table(_take(pieces, group_table, schema), row_group_size=per_group)
            if not len(rows):
                writer.write_table(schema.empty_table())

    atomic_write(out, write)
    return len(rows)


def _take(pieces: list[tuple[int, int, int]], group_table, schema: pa.Schema) -> pa.Table:
    """The rows `pieces` names, in its order: consecutive rows of one group are taken
    together (in input order that is every row of the chunk)."""
    runs: list[pa.Table] = []
    k = 0
    while k < len(pieces):
        i, g, _ = pieces[k]
        end = k
        while end < len(pieces) and pieces[end][:2] == (i, g):
            end += 1
        offsets = pa.array([p[2] for p in pieces[k:end]], pa.int64())
        runs.append(group_table(i, g).take(offsets).cast(schema))
        k = end
    return pa.concat_tables(runs).replace_schema_metadata(schema.metadata)


def output_group_rows(table: Table) -> int:
    """Rows per output row group: the input's median, capped at about 64 MiB a group."""
    counts = [n for i in range(len(table.files)) for n in group_rows(table, i) if n]
    if not counts:
        return 1024
    median = int(np.median(counts))
    if table.kind != PARQUET:
        return max(1, median)
    meta = pq.ParquetFile(table.files[0]).metadata
    total_bytes = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    per_row = max(1, total_bytes // max(1, meta.num_rows))
    return max(1, min(median, _GROUP_BYTES // per_row))
