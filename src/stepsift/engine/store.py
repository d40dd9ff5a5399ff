"""The score store: one Parquet file of per-candidate scores, written atomically, and the
resumable parts it is assembled from while a run is going.

This module is the only writer of score files. Columns:
  id (string), utility (float64), loss (float64), harmful (bool), tokens (int64),
  truncated (bool). The run's settings travel in the file's metadata under "stepsift".
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

    def add(self, columns: Mapping[str, Sequence]) -> None:
        """Append rows given as columns by name: a Parquet part's `to_pydict()`, a Ray
        batch, or another ScoreRows' `vars()`."""
        self.extend(*(columns[k] for k in ("id", "utility", "loss", "tokens", "truncated")))

    def __len__(self) -> int:
        return len(self.id)

    def to_table(self) -> pa.Table:
        """The rows as Arrow columns (everything but `harmful`, which depends on a threshold)."""
        return pa.table(
            {
                "id": pa.array(self.id, pa.string()),
                "utility": pa.array(self.utility, pa.float64()),
                "loss": pa.array(self.loss, pa.float64()),
                "tokens": pa.array(self.tokens, pa.int64()),
                "truncated": pa.array(self.truncated, pa.bool_()),
            }
        )


def write_scores(rows: ScoreRows, path: Path, harmful_below: float, settings: dict) -> None:
    """Write the score table to `path` atomically (temp file in the same folder, then rename)."""
    table = rows.to_table()
    harmful = pa.array(np.asarray(rows.utility, dtype=np.float64) < harmful_below)
    table = table.add_column(SCHEMA.get_field_index("harmful"), "harmful", harmful)
    table = table.cast(SCHEMA.with_metadata({"stepsift": json.dumps(settings, sort_keys=True)}))
    atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp))


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
            rows.add(pq.read_table(part).to_pydict())
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
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
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
