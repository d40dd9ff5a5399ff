"""Parquet and Arrow input: where a table's shards are, and its rows one row group at a time.

A table is what the Hugging Face hub, `datasets`, LLaMA-Factory and ms-swift keep
multimodal SFT sets in: one `.parquet` file, a folder of shards (searched recursively, as
the hub lays out `data/train-00000-of-00004.parquet`), a glob of them, or a `datasets`
`save_to_disk` folder (Arrow IPC `data-*.arrow` files listed in its `state.json`).

Each row becomes the same dict a JSON record would be, so every record format of
`formats.py` applies unchanged; images stay the `{"bytes", "path"}` structs `datasets`
stores its Image feature as. Rows are read a row group (Parquet) or record batch (Arrow)
at a time, so a pass over the table holds one group, not the table.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET, ARROW = "parquet", "arrow"
_GLOB_CHARS = "*?["
IMAGE_COLUMNS = ("image", "images")  # read only when validating, not to learn the format


@dataclass(frozen=True)
class Table:
    """A table's files, in order; all of one kind and, for reading back, one schema."""

    files: tuple[Path, ...]
    kind: str  # PARQUET or ARROW
    root: Path  # default ids are file paths relative to it

    def label(self, file_index: int) -> str:
        """The id prefix of a file's rows: its path under the root, without the suffix."""
        f = self.files[file_index]
        try:
            rel = f.relative_to(self.root)
        except ValueError:
            rel = Path(f.name)
        return str(rel.with_suffix(""))


class TableError(ValueError):
    """A table that cannot be read at all (corrupt shard, schemas that differ); names the file."""


def is_table(path: str | os.PathLike[str]) -> bool:
    """Whether `path` names Parquet/Arrow input rather than a JSON/JSONL file."""
    s = str(path)
    if any(c in s for c in _GLOB_CHARS) and not Path(s).exists():
        return True
    p = Path(s)
    return p.is_dir() or p.suffix in (".parquet", ".arrow")


def open_table(path: str | os.PathLike[str]) -> Table:
    """The table at `path` (a file, a folder of shards, a glob or a save_to_disk folder)."""
    s = str(path)
    p = Path(s)
    if not p.exists() and any(c in s for c in _GLOB_CHARS):
        files = sorted(Path(f) for f in glob.glob(s, recursive=True) if Path(f).is_file())
        if not files:
            raise FileNotFoundError(f"{s}: no file matches this pattern")
        return _of_files(files, Path(os.path.commonpath([f.parent for f in files])), s)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_file():
        return _of_files([p], p.parent, s)
    if (p / "dataset_dict.json").is_file():
        splits = sorted(d.name for d in p.iterdir() if (d / "state.json").is_file())
        raise TableError(f"{p} is a datasets DatasetDict; give one split's folder, e.g. "
                         f"{p / (splits[0] if splits else 'train')}")  # fmt: skip
    if (p / "state.json").is_file():
        return _of_files(_saved_files(p), p, s)
    parquet = sorted(p.rglob("*.parquet"))
    if parquet:
        return _of_files(parquet, p, s)
    arrow = sorted(p.rglob("*.arrow"))
    if arrow:
        return _of_files(arrow, p, s)
    raise TableError(f"{p}: a folder with no .parquet or .arrow files (nor a save_to_disk dataset)")


def _saved_files(folder: Path) -> list[Path]:
    """The Arrow files of a `save_to_disk` folder, in its `state.json`'s order."""
    try:
        state = json.loads((folder / "state.json").read_text())
        names = [d["filename"] for d in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TableError(f"{folder / 'state.json'}: not a datasets state file ({e})") from None
    return [folder / n for n in names]


def _of_files(files: list[Path], root: Path, asked: str) -> Table:
    kinds = {f.suffix for f in files}
    if kinds == {".parquet"}:
        return Table(tuple(files), PARQUET, root)
    if kinds == {".arrow"}:
        return Table(tuple(files), ARROW, root)
    if len(files) == 1:
        raise TableError(f"{files[0]}: expected a .parquet or .arrow file")
    raise TableError(f"{asked}: mixes {', '.join(sorted(kinds))} files; give one kind")


def group_rows(table: Table, file_index: int) -> list[int]:
    """How many rows each row group of the file holds (from its footer / batch headers)."""
    f = table.files[file_index]
    try:
        if table.kind == PARQUET:
            meta = pq.ParquetFile(f).metadata
            return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        return [batch.num_rows for batch in _arrow_batches(f)]
    except (OSError, pa.ArrowException) as e:
        raise TableError(f"{f}: cannot read this {table.kind} file ({_short(e)})") from None


def _arrow_batches(f: Path) -> Iterator[pa.RecordBatch]:
    """An Arrow IPC file's record batches, memory-mapped (`save_to_disk` writes the
    streaming format; the random-access file format is read too)."""
    source = pa.memory_map(str(f))
    try:
        reader = pa.ipc.open_file(source)
        for k in range(reader.num_record_batches):
            yield reader.get_batch(k)
    except pa.ArrowInvalid:
        source.seek(0)
        yield from pa.ipc.open_stream(source)


def group_starts(table: Table, file_index: int) -> list[int]:
    """The file's row index of each row group's first row, and the file's row count last."""
    return list(accumulate(group_rows(table, file_index), initial=0))


def read_group(
    table: Table, file_index: int, group: int, columns: list[str] | None = None
) -> pa.Table:
    """The rows of one row group (Parquet) or record batch (Arrow), only `columns` if given."""
    f = table.files[file_index]
    try:
        if table.kind == PARQUET:
            return pq.ParquetFile(f).read_row_group(group, columns=columns)
        for k, batch in enumerate(_arrow_batches(f)):
            if k == group:
                got = pa.Table.from_batches([batch])
                return got.select(columns) if columns is not None else got
    except (OSError, pa.ArrowException) as e:
        raise TableError(f"{f}: row group {group}: cannot read it ({_short(e)})") from None
    raise TableError(f"{f}: has no row group {group}")


def data_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files an input consists of: itself, or a Parquet/Arrow table's shards."""
    return list(open_table(path).files) if is_table(path) else [Path(path)]


def schema_of(table: Table, file_index: int = 0) -> pa.Schema:
    f = table.files[file_index]
    try:
        if table.kind == PARQUET:
            return pq.read_schema(f)
        source = pa.memory_map(str(f))
        try:
            return pa.ipc.open_file(source).schema
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_stream(source).schema
    except (OSError, pa.ArrowException) as e:
        raise TableError(f"{f}: cannot read this {table.kind} file ({_short(e)})") from None


def rows_of(group_table: pa.Table) -> list[dict[str, Any]]:
    """The group's rows as the dicts a JSON record would be: a null column is a missing key
    (Arrow has no missing keys; a shard's optional `system` is null where not given)."""
    return [{k: v for k, v in row.items() if v is not None} for row in group_table.to_pylist()]


def row_summary(row: dict[str, Any]) -> str:
    """A row as JSON for messages and rejected-row files, embedded bytes summarised."""
    return json.dumps(_summarised(row), ensure_ascii=False, default=str)


def _summarised(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value):,} bytes>"
    if isinstance(value, dict):
        return {k: _summarised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_summarised(v) for v in value]
    return value


def _short(e: Exception, limit: int = 200) -> str:
    text = f"{type(e).__name__}: {e}"
    return text if len(text) <= limit else text[:limit] + "..."
