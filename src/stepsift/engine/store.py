"""The score store: one Parquet file of per-candidate scores, written atomically, and the
resumable parts it is assembled from while a run is going.

This module is the only writer of score files. Columns:
  id (string), utility (float64), loss (float64), harmful (bool), tokens (int64),
  truncated (bool), and, when the estimator makes them, fold_utility
  (fixed_size_list<float64>[K]), group_utility (fixed_size_list<float64>[G]) and sketch
  (fixed_size_list<float32>[D]). The run's settings travel in the file's metadata under
  "stepsift". Readers must work without the optional columns (old files, estimators
  that cannot make them: the metadata then says why, e.g. "fold_utility": "not computed
  by method first-order").
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stepsift.data.atomic import atomic_write, atomic_write_text
from stepsift.data.tabular import data_files

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("utility", pa.float64()),
        ("loss", pa.float64()),
        ("harmful", pa.bool_()),
        ("tokens", pa.int64()),
        ("truncated", pa.bool_()),
    ]
)
REQUIRED_COLUMNS = ("id", "utility")
SCALAR_COLUMNS = ("id", "utility", "loss", "tokens", "truncated")  # as ScoreRows holds them
# optional per-candidate vectors, a fixed width per file: name -> element type
OPTIONAL_COLUMNS = {
    "fold_utility": pa.float64(),
    "group_utility": pa.float64(),
    "sketch": pa.float32(),
}


@dataclass
class ScoreRows:
    """Scores accumulated in memory as plain columns (a few bytes per candidate)."""

    id: list[str] = field(default_factory=list)
    utility: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    # the optional columns, as blocks of rows (each an (n, width) array); empty if absent
    fold_utility: list[np.ndarray] = field(default_factory=list)
    group_utility: list[np.ndarray] = field(default_factory=list)
    sketch: list[np.ndarray] = field(default_factory=list)

    def extend(self, ids, utility, loss, tokens, truncated, **optional) -> None:
        """Append rows; `optional` may give any of OPTIONAL_COLUMNS, one row per id (an
        (n, width) array, a list of rows, or Arrow fixed-size lists)."""
        unknown = set(optional) - set(OPTIONAL_COLUMNS)
        if unknown:
            raise ValueError(f"unknown score column(s): {', '.join(sorted(unknown))}")
        ids = list(ids)
        # checked before anything is appended, so a refused call changes nothing
        matrices = {k: self._checked(k, optional.get(k), len(ids)) for k in OPTIONAL_COLUMNS}
        # converted before appending: `rows.add(vars(rows))` must not read what it appends
        utility, loss = [float(u) for u in utility], [float(x) for x in loss]
        tokens, truncated = [int(t) for t in tokens], [bool(t) for t in truncated]
        self.id.extend(ids)
        self.utility.extend(utility)
        self.loss.extend(loss)
        self.tokens.extend(tokens)
        self.truncated.extend(truncated)
        for name, matrix in matrices.items():
            if matrix is not None:
                getattr(self, name).append(matrix)

    def _checked(self, name: str, values, n: int) -> np.ndarray | None:
        if n == 0:
            return None
        blocks = getattr(self, name)
        matrix = as_matrix(values, n, OPTIONAL_COLUMNS[name].to_pandas_dtype(), name)
        if len(self.id) and (matrix is None) != (not blocks):
            # a run's rows either all have a column or none do
            raise ValueError(f"score rows with and without a {name!r} column are being mixed")
        if matrix is not None and blocks and blocks[0].shape[1] != matrix.shape[1]:
            raise ValueError(
                f"{name!r} rows of width {matrix.shape[1]} added to rows of width "
                f"{blocks[0].shape[1]}"
            )
        return matrix

    def matrix(self, name: str) -> np.ndarray | None:
        """An optional column as one (n, width) array, or None when absent."""
        blocks = getattr(self, name)
        if not blocks:
            return None
        if len(blocks) > 1:
            blocks[:] = [np.concatenate(blocks)]
        return blocks[0]

    def add(self, columns: Mapping[str, Sequence]) -> None:
        """Append rows given as columns by name: `columns_of` a Parquet part, a Ray
        batch, or another ScoreRows' `vars()`."""
        optional = {k: columns[k] for k in OPTIONAL_COLUMNS if k in columns}
        self.extend(*(columns[k] for k in SCALAR_COLUMNS), **optional)

    def __len__(self) -> int:
        return len(self.id)

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Every column as a NumPy array (the optional ones 2-D), e.g. for a Ray batch."""
        out = {
            "id": np.array(self.id, dtype=object),
            "utility": np.array(self.utility, dtype=np.float64),
            "loss": np.array(self.loss, dtype=np.float64),
            "tokens": np.array(self.tokens, dtype=np.int64),
            "truncated": np.array(self.truncated, dtype=bool),
        }
        for name in OPTIONAL_COLUMNS:
            if (m := self.matrix(name)) is not None:
                out[name] = m
        return out

    def to_table(self) -> pa.Table:
        """The rows as Arrow columns (everything but `harmful`, which depends on a threshold)."""
        columns = {
            "id": pa.array(self.id, pa.string()),
            "utility": pa.array(self.utility, pa.float64()),
            "loss": pa.array(self.loss, pa.float64()),
            "tokens": pa.array(self.tokens, pa.int64()),
            "truncated": pa.array(self.truncated, pa.bool_()),
        }
        for name, kind in OPTIONAL_COLUMNS.items():
            if (m := self.matrix(name)) is not None:
                flat = pa.array(np.ascontiguousarray(m).reshape(-1), kind)
                columns[name] = pa.FixedSizeListArray.from_arrays(flat, m.shape[1])
        return pa.table(columns)


def as_matrix(values, n: int, dtype, name: str) -> np.ndarray | None:
    """`values` for n rows as an (n, width) array; None when absent or empty."""
    if values is None:
        return None
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.FixedSizeListArray):
        if values.null_count:
            raise ValueError(f"the {name!r} column has null rows")
        matrix = values.flatten().to_numpy(zero_copy_only=False).reshape(len(values), -1)
    elif isinstance(values, np.ndarray) and values.ndim == 2:
        matrix = values
    elif len(values) == 0:
        return None
    elif isinstance(values[0], np.ndarray) and values[0].ndim == 2:  # blocks (from vars())
        matrix = np.concatenate(list(values))
    else:  # rows: a list of lists, or an object array of 1-D arrays
        matrix = np.stack([np.asarray(row) for row in values])
    if matrix.ndim != 2 or len(matrix) != n:
        raise ValueError(f"the {name!r} column has {len(matrix)} rows for {n} ids")
    return np.asarray(matrix, dtype=dtype)


def columns_of(table: pa.Table) -> dict:
    """A score table's columns for `ScoreRows.add`: the scalar ones as lists, the optional
    ones as Arrow arrays (never as millions of Python floats)."""
    out: dict = {k: table.column(k).to_pylist() for k in SCALAR_COLUMNS}
    out |= {k: table.column(k) for k in OPTIONAL_COLUMNS if k in table.column_names}
    return out


def write_scores(rows: ScoreRows, path: Path, harmful_below: float, settings: dict) -> None:
    """Write the score table to `path` atomically (temp file in the same folder, then rename)."""
    table = rows.to_table()
    harmful = pa.array(np.asarray(rows.utility, dtype=np.float64) < harmful_below)
    table = table.add_column(SCHEMA.get_field_index("harmful"), "harmful", harmful)
    optional = [table.schema.field(k) for k in OPTIONAL_COLUMNS if k in table.column_names]
    schema = pa.schema([*SCHEMA, *optional])
    table = table.cast(schema.with_metadata({"stepsift": json.dumps(settings, sort_keys=True)}))
    atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp))


def read_scores(path: Path, exclude: Sequence[str] = ()) -> pa.Table:
    """Read a score file (all columns but `exclude`: a reader with no use for the 64-wide
    sketch need not pay for it) and check it has the columns selection needs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: score file not found")
    try:
        names = pq.read_schema(path).names
        table = pq.read_table(path, columns=[c for c in names if c not in exclude])
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{path}: not a readable Parquet score file ({e})") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: score file lacks column(s) {', '.join(missing)}")
    return table


def read_settings(path: Path) -> dict:
    """The settings a score file was produced with (empty if it has none)."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"stepsift")
    return json.loads(raw) if raw else {}


class PartStore:
    """Scores written as they are made, so an interrupted run resumes where it stopped.

    Beside the final file `OUT` lives a folder `OUT.parts/` holding a manifest (the
    fingerprint of the inputs and settings), the warmed-up proxy, and Parquet parts, each
    written atomically. A rerun with the same fingerprint skips the ids already in parts;
    `finish` merges the parts into `OUT` and removes the folder.
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.dir = self.out.with_name(self.out.name + ".parts")
        self._next = 0

    @property
    def proxy_dir(self) -> Path:
        return self.dir / "proxy"

    def open(self, fingerprint: str, overwrite: bool) -> None:
        """Start or resume; refuse a folder left by a run with other inputs or settings."""
        manifest = self.dir / "manifest.json"
        if self.dir.exists():
            found = (
                json.loads(manifest.read_text()).get("fingerprint") if manifest.is_file() else None
            )
            if found != fingerprint:
                if not overwrite:
                    raise ValueError(
                        f"{self.dir}: an unfinished run with other inputs or settings is here; "
                        "rerun it with its own settings to resume, or pass --overwrite"
                    )
                shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not manifest.is_file():
            atomic_write_text(manifest, json.dumps({"fingerprint": fingerprint}) + "\n")
        self._next = len(self._parts())

    def _parts(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.parquet"))

    def done(self) -> ScoreRows:
        """Everything scored so far, from the parts on disk."""
        rows = ScoreRows()
        for part in self._parts():
            rows.add(columns_of(pq.read_table(part)))
        return rows

    def write_part(self, rows: ScoreRows) -> None:
        if not len(rows):
            return
        table = rows.to_table()
        part = self.dir / f"part-{self._next:06d}.parquet"
        atomic_write(part, lambda tmp: pq.write_table(table, tmp))
        self._next += 1

    def finish(self, rows: ScoreRows, harmful_below: float, settings: dict) -> None:
        """Write `rows` (from `done()`) as the final score file and remove the parts."""
        write_scores(rows, self.out, harmful_below, settings)
        shutil.rmtree(self.dir)


# A score file's settings carry the SHA-256 of the candidate file it was made from, so
# `select` can trust that run's validation when the bytes are the same (select/fast.py).
DIGEST_KEY = "candidates_sha256"
REJECTED_KEY = "rejected_candidates"  # how many records of that file the run rejected


def file_digest(path: Path) -> str:
    """SHA-256 of a data file's bytes; of a table's shards, their names and bytes."""
    h = hashlib.sha256()
    files = data_files(path)
    for f in files:
        if len(files) > 1:
            h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def fingerprint(files: list[Path], settings: dict) -> str:
    """A hash of the input files' bytes and the settings that decide the scores."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
