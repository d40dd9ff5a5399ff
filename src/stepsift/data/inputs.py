"""Read any input stepsift accepts into `Record`s held in memory: a JSONL/JSON file, or a
Parquet/Arrow table (a file, a folder of shards, a glob or a `save_to_disk` folder).

For pools too large to hold, `index.index_records` validates the same way and keeps only
where each record is.
"""

from __future__ import annotations

import os

from .reader import ReadResult, _Collector, read_json_records
from .table_reader import scan_table
from .tabular import is_table, open_table


def read_records(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    check_images: bool = True,
    max_problems: int | None = None,
) -> ReadResult:
    """Read and validate every record of `path`, all held in memory.

    Relative image paths resolve against `image_root`, else the data file's folder, and must
    not climb out of it with `..`; absolute paths are taken as given. Images embedded in a
    table's rows are used as they are. With `check_images`, every image must decode.
    """
    if not is_table(path):
        return read_json_records(
            path, image_root, check_images=check_images, max_problems=max_problems
        )
    out = _Collector(max_problems)
    table = open_table(path)
    scan = scan_table(table, image_root, check_images, out)
    records = [record for _, _, _, record in scan.valid()]
    return ReadResult(records, out.problems, scan.format, table.kind, scan.truncated)
