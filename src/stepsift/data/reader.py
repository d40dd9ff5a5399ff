"""Read a JSONL or JSON-array data file into `Record`s, collecting every problem found.

Data errors never raise: each one becomes a `Problem` naming file, line and field, and the
record it belongs to is left out. Callers decide what to do (usually raise
`DataValidationError` before any model work).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .formats import detect_format, parse_record, record_id, type_name, unknown_format_message
from .images import check_image
from .record import Problem, Record, Source

_WS = re.compile(r"[ \t\r\n]*")  # JSON's insignificant whitespace
_BOM = b"\xef\xbb\xbf"


@dataclass
class ReadResult:
    records: list[Record]
    problems: list[Problem]
    format: str  # the file's record format, e.g. "llava"; "unknown" if none was recognised
    container: str  # "jsonl" or "json"
    truncated: bool = False  # True when reading stopped at `max_problems`

    def raise_for_problems(self) -> None:
        if self.problems:
            raise DataValidationError(self.problems)


class DataValidationError(Exception):
    """The input data has problems; `problems` lists them all (or up to `max_problems`)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        super().__init__(f"{n} problem(s) in the input data:\n{format_problems(self.problems)}")


def format_problems(problems: list[Problem], limit: int = 20) -> str:
    """One problem per line, `file:line (id X): field: message`, then '... and N more'."""
    lines = []
    for p in problems[:limit]:
        rid = f" (id {p.record_id})" if p.record_id else ""
        where = f" {p.field}:" if p.field else ""
        lines.append(f"{p.file}:{p.line}{rid}:{where} {p.message}")
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    return "\n".join(lines)


@dataclass
class _Entry:
    """One line (JSONL) or array element (JSON) before format parsing."""

    line: int
    raw: str
    obj: Any = None
    problem: Problem | None = None


class _Collector:
    def __init__(self, limit: int | None) -> None:
        self.problems: list[Problem] = []
        self.limit = limit

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.problems) >= self.limit

    def add(self, problem: Problem) -> None:
        if not self.full:
            self.problems.append(problem)


def read_records(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    check_images: bool = True,
    max_problems: int | None = None,
) -> ReadResult:
    """Read and validate every record of a JSONL or JSON-array file.

    Relative image paths resolve against `image_root`, else the data file's folder.
    With `check_images`, every image must exist and be decodable by PIL.
    """
    file = Path(path)
    data = file.read_bytes()  # a missing/unreadable file is not a data error: let it raise
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    container = "json" if data.lstrip(b" \t\r\n").startswith(b"[") else "jsonl"
    split = _split_json if container == "json" else _split_jsonl
    entries = split(data, file)
    out = _Collector(max_problems)
    if not entries:
        out.add(Problem(file, 1, "", "no records in the file"))
        return ReadResult([], out.problems, "unknown", container)

    fmt = _file_format(entries)
    base = Path(image_root) if image_root is not None else file.parent
    image_errors: dict[Path, str | None] = {}  # datasets reuse images: check each once
    first_line: dict[str, int] = {}
    records: list[Record] = []
    for entry in entries:
        if out.full:
            return ReadResult(records, out.problems, fmt, container, truncated=True)
        record = _read_entry(entry, file, fmt, base, check_images, image_errors, first_line, out)
        if record is not None:
            records.append(record)
    return ReadResult(records, out.problems, fmt, container)


def _read_entry(
    entry: _Entry,
    file: Path,
    file_fmt: str,
    base: Path,
    check_images: bool,
    image_errors: dict[Path, str | None],
    first_line: dict[str, int],
    out: _Collector,
) -> Record | None:
    if entry.problem is not None:
        out.add(entry.problem)
        return None
    obj = entry.obj
    rid, _ = record_id(obj)
    found: list[str] = []  # counted here: the collector may be full and drop problems

    def problem(field_name: str, message: str) -> None:
        found.append(message)
        out.add(Problem(file, entry.line, field_name, message, rid, entry.raw))

    if rid is not None:
        if rid in first_line:
            problem("id", f"duplicate id {rid!r}: first used on line {first_line[rid]}")
        else:
            first_line[rid] = entry.line
    fmt = detect_format(obj)
    if fmt == "sharegpt" and file_fmt == "openai":
        fmt = "openai"  # string content is valid OpenAI-style too; one text-only row is fine
    if fmt is None:
        problem("", unknown_format_message(obj))
        return None
    if fmt != file_fmt:
        problem("", f"record is in {fmt!r} format but the file is {file_fmt!r}; use one format")
        return None

    parsed = parse_record(obj, fmt)
    for issue in parsed.issues:
        problem(issue.field, issue.message)
    images: list[Path] = []
    for ref in parsed.images:
        resolved = base / ref.path  # an absolute ref.path replaces base
        images.append(resolved)
        if check_images and ref.path.strip():
            if resolved not in image_errors:
                image_errors[resolved] = check_image(resolved)
            if image_errors[resolved]:
                problem(ref.field, image_errors[resolved])
    if found:
        return None
    return Record(
        id=rid if rid is not None else f"{file.stem}:{entry.line}",
        turns=tuple(parsed.turns),
        images=tuple(images),
        source=Source(file, entry.line),
        format=fmt,
        raw=entry.raw,
        metadata=parsed.metadata,
    )


def _file_format(entries: list[_Entry]) -> str:
    """The majority format of the file's objects (first seen wins a tie)."""
    counts = Counter(
        fmt for e in entries if isinstance(e.obj, dict) and (fmt := detect_format(e.obj))
    )
    if "openai" in counts and "sharegpt" in counts:
        counts["openai"] += counts.pop("sharegpt")
    return counts.most_common(1)[0][0] if counts else "unknown"


def _not_object(file: Path, line: int, raw: str, obj: Any) -> Problem:
    return Problem(file, line, "", f"expected a JSON object, got {type_name(obj)}", None, raw)


def _split_jsonl(data: bytes, file: Path) -> list[_Entry]:
    entries: list[_Entry] = []
    for i, chunk in enumerate(data.split(b"\n")):
        line = i + 1
        chunk = chunk.removesuffix(b"\r")
        if not chunk.strip():
            continue  # blank lines are skipped; numbering stays true to the file
        try:
            raw = chunk.decode("utf-8")
        except UnicodeDecodeError as e:
            bad = chunk[e.start]
            msg = f"not valid UTF-8 (byte 0x{bad:02x} at column {e.start + 1}); save as UTF-8"
            raw_text = chunk.decode("utf-8", "backslashreplace")
            entries.append(
                _Entry(line, raw_text, problem=Problem(file, line, "", msg, None, raw_text))
            )
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            if not entries:
                whole = _single_object(data)
                if whole is not None:
                    return [_Entry(line, raw, problem=Problem(file, line, "", whole, None, raw))]
            msg = f"not valid JSON: {e.msg} at column {e.colno}"
            entries.append(_Entry(line, raw, problem=Problem(file, line, "", msg, None, raw)))
            continue
        if isinstance(obj, dict):
            entries.append(_Entry(line, raw, obj))
        else:
            entries.append(_Entry(line, raw, problem=_not_object(file, line, raw, obj)))
    return entries


def _single_object(data: bytes) -> str | None:
    """Explain a pretty-printed single object, which otherwise reads as many broken lines."""
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    return "the file is one JSON object over several lines; expected JSONL or a JSON array"


def _split_json(data: bytes, file: Path) -> list[_Entry]:
    """Elements of a top-level JSON array, each with its exact source text and start line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        msg = f"not valid UTF-8 (byte 0x{data[e.start]:02x}); save as UTF-8"
        return [_Entry(line, "", problem=Problem(file, line, "", msg))]
    try:
        json.loads(text)  # validate the whole container first: one syntax error, one problem
    except json.JSONDecodeError as e:
        msg = f"not valid JSON: {e.msg} at column {e.colno}"
        raw = text.split("\n")[e.lineno - 1].removesuffix("\r")
        return [_Entry(e.lineno, raw, problem=Problem(file, e.lineno, "", msg, None, raw))]
    decoder = json.JSONDecoder()
    entries: list[_Entry] = []
    pos = _WS.match(text, text.index("[") + 1).end()
    while text[pos] != "]":
        obj, end = decoder.raw_decode(text, pos)
        raw = text[pos:end]
        line = text.count("\n", 0, pos) + 1
        if isinstance(obj, dict):
            entries.append(_Entry(line, raw, obj))
        else:
            entries.append(_Entry(line, raw, problem=_not_object(file, line, raw, obj)))
        pos = _WS.match(text, end).end()
        if text[pos] == ",":
            pos = _WS.match(text, pos + 1).end()
    return entries
