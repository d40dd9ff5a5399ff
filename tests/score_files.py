"""Score files with the optional issue-7 columns (fold_utility, sketch), written with pyarrow
as `stepsift score` writes them, plus a matching JSONL pool, for selection tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def fixed_list(matrix: np.ndarray, value: pa.DataType) -> pa.FixedSizeListArray:
    matrix = np.asarray(matrix)
    flat = pa.array(matrix.reshape(-1), value)
    return pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])


def write_score_file(
    path: Path,
    utility: np.ndarray,
    tokens: np.ndarray | None = None,
    fold_utility: np.ndarray | None = None,
    fold_sizes: list[int] | None = None,
    sketch: np.ndarray | None = None,
    ids: list[str] | None = None,
    settings: dict | None = None,
    group_utility: np.ndarray | None = None,
    groups: dict[str, int] | None = None,  # name -> anchors in the group, in column order
) -> list[str]:
    """Write a score file; returns its ids."""
    n = len(utility)
    ids = ids or [f"r{i:05d}" for i in range(n)]
    columns = {
        "id": pa.array(ids, pa.string()),
        "utility": pa.array(np.asarray(utility, np.float64)),
        "loss": pa.array(np.ones(n)),
        "harmful": pa.array(np.asarray(utility) < 0),
        "tokens": pa.array(
            np.asarray(tokens if tokens is not None else np.full(n, 10)), pa.int64()
        ),
        "truncated": pa.array(np.zeros(n, dtype=bool)),
    }
    meta = {"harmful_below": 0.0, **(settings or {})}
    if fold_utility is not None:
        columns["fold_utility"] = fixed_list(fold_utility, pa.float64())
        meta["anchor_fold_sizes"] = list(fold_sizes or [10] * fold_utility.shape[1])
    if group_utility is not None:
        columns["group_utility"] = fixed_list(group_utility, pa.float64())
        meta["anchor_groups"] = list(groups)
        meta["anchor_group_sizes"] = list(groups.values())
    if sketch is not None:
        columns["sketch"] = fixed_list(sketch, pa.float32())
        meta.update(sketch_dim=int(sketch.shape[1]), sketch_of="gradient")
    table = pa.table(columns).replace_schema_metadata({"stepsift": json.dumps(meta)})
    pq.write_table(table, path)
    return ids


def write_pool(path: Path, ids: list[str]) -> None:
    """A plain prompt/response JSONL pool with these ids (what `select` writes back)."""
    with open(path, "w", encoding="utf-8") as f:
        for i in ids:
            f.write(json.dumps({"id": i, "prompt": f"q {i}", "response": f"a {i}"}) + "\n")
