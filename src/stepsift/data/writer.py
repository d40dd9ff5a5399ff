"""Write a selection back in its input's own container, byte-for-byte per record."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from .atomic import atomic_write_text
from .record import Problem, Record

CONTAINERS = ("jsonl", "json")


def write_records(
    records: Iterable[Record], out_path: str | os.PathLike[str], *, container: str = "jsonl"
) -> int:
    """Write each record's `raw` text unchanged; return how many were written.

    `container` should be the input's (`ReadResult.container`): "jsonl" writes one raw per
    line, "json" writes a JSON array. Every field of every record survives as it was.
    """
    raws = [r.raw for r in records]
    if container == "jsonl":
        for raw in raws:
            if "\n" in raw:  # only JSON-array input can hold multi-line records
                raise ValueError("a record spans several lines; write it with container='json'")
        text = "".join(raw + "\n" for raw in raws)
    elif container == "json":
        text = "[\n" + ",\n".join(raws) + "\n]\n"
    else:
        raise ValueError(f"unknown container {container!r}; expected one of {CONTAINERS}")
    atomic_write_text(Path(out_path), text)
    return len(raws)


def write_rejected(problems: Iterable[Problem], out_path: str | os.PathLike[str]) -> int:
    """Write one JSONL line per rejected record (not per problem), so that scored plus
    rejected adds up to the input: {"file", "line", "id", "field", "problem", "problems",
    "raw"}, plus "row_group" for a Parquet/Arrow row (whose "line" is then its 0-based row,
    and "raw" the row as JSON with embedded bytes summarised). `field` and `problem` are
    the first problem's; `problems` lists them all.

    `raw` is kept as a string because the rejected text may not be valid JSON.
    """
    by_record: dict[tuple[str, int | None, int], list[Problem]] = {}
    for p in problems:
        by_record.setdefault((str(p.file), p.row_group, p.line), []).append(p)
    lines = [
        json.dumps(
            {
                "file": file,
                "line": line,
                **({} if group is None else {"row_group": group}),
                "id": found[0].record_id,
                "field": found[0].field,
                "problem": "; ".join(p.message for p in found),
                "problems": [{"field": p.field, "message": p.message} for p in found],
                "raw": found[0].raw,
            },
            ensure_ascii=False,
        )
        for (file, group, line), found in by_record.items()
    ]
    atomic_write_text(Path(out_path), "".join(line + "\n" for line in lines))
    return len(lines)
