"""Write a selection back in its input's own container, byte-for-byte per record."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

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
    _atomic_write(Path(out_path), text)
    return len(raws)


def write_rejected(problems: Iterable[Problem], out_path: str | os.PathLike[str]) -> int:
    """Write one JSONL line per rejected record (not per problem), so that scored plus
    rejected adds up to the input: {"file", "line", "id", "field", "problem", "problems",
    "raw"}. `field` and `problem` are the first problem's; `problems` lists them all.

    `raw` is kept as a string because the rejected text may not be valid JSON.
    """
    by_record: dict[tuple[str, int], list[Problem]] = {}
    for p in problems:
        by_record.setdefault((str(p.file), p.line), []).append(p)
    lines = [
        json.dumps(
            {
                "file": file,
                "line": line,
                "id": found[0].record_id,
                "field": found[0].field,
                "problem": "; ".join(p.message for p in found),
                "problems": [{"field": p.field, "message": p.message} for p in found],
                "raw": found[0].raw,
            },
            ensure_ascii=False,
        )
        for (file, line), found in by_record.items()
    ]
    _atomic_write(Path(out_path), "".join(line + "\n" for line in lines))
    return len(lines)


def _atomic_write(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide permissions, as a plain open() would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))  # binary: no newline translation on any platform
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
