"""The score store: one Parquet file of per-candidate scores, written atomically.

This module is the only writer of score files. Columns:
  id (string), utility (float64), loss (float64), harmful (bool), tokens (int64),
  truncated (bool). The run's settings travel in the file's metadata under "stepsift".
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

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


@dataclass
class ScoreRows:
    """Scores accumulated in memory as plain columns (a few bytes per candidate)."""

    id: list[str] = field(default_factory=list)
    utility: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)

    def extend(self, ids, utility, loss, tokens, truncated) -> None:
        self.id.extend(ids)
        self.utility.extend(float(u) for u in utility)
        self.loss.extend(float(x) for x in loss)
        self.tokens.extend(int(t) for t in tokens)
        self.truncated.extend(bool(t) for t in truncated)

    def __len__(self) -> int:
        return len(self.id)


def write_scores(rows: ScoreRows, path: Path, harmful_below: float, settings: dict) -> None:
    """Write the score table to `path` atomically (temp file in the same folder, then rename)."""
    utility = np.asarray(rows.utility, dtype=np.float64)
    table = pa.Table.from_arrays(
        [
            pa.array(rows.id, pa.string()),
            pa.array(utility),
            pa.array(np.asarray(rows.loss, dtype=np.float64)),
            pa.array(utility < harmful_below),
            pa.array(np.asarray(rows.tokens, dtype=np.int64)),
            pa.array(rows.truncated, pa.bool_()),
        ],
        schema=SCHEMA.with_metadata({"stepsift": json.dumps(settings, sort_keys=True)}),
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_scores(path: Path) -> pa.Table:
    """Read a score file and check it has the columns selection needs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: score file not found")
    try:
        table = pq.read_table(path)
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
