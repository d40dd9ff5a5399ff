"""Read a JSONL or JSON-array data file into `Record`s, collecting every problem found.

Data errors never raise: each one becomes a `Problem` naming file, line and field, and the
record it belongs to is left out. Callers decide what to do (usually raise
`DataValidationError` before any model work).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .formats import (
    detect_format,
    image_path_issue,
    parse_record,
    record_id,
    short_repr,
    type_name,
    unknown_format_message,
)
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

    Relative image paths resolve against `image_root`, else the data file's folder, and must
    not climb out of it with `..`; absolute paths are taken as given.
    With `check_images`, every image must exist and be decodable by PIL.
    """
    file = Path(path)
    data = file.read_bytes()  # a missing/unreadable file is not a data error: let it raise
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    container = _container(data)
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
        record = _read_entry(
            entry,
            file,
            fmt,
            base,
            image_root is not None,
            check_images,
            image_errors,
            first_line,
            out,
        )
        if record is not None:
            records.append(record)
    return ReadResult(records, out.problems, fmt, container)


def _read_entry(
    entry: _Entry,
    file: Path,
    file_fmt: str,
    base: Path,
    explicit_root: bool,
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
            problem("id", f"duplicate id {short_repr(rid)}: first used on line {first_line[rid]}")
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
        if image_path_issue(ref.path):
            continue  # already an issue (empty, URL, NUL, ...): not a path to look up
        if _climbs_out(ref.path):
            # Policy: a relative path must stay inside the image root; `..` is checked on the
            # path as written, since the data file controls it. Absolute paths are explicit and
            # allowed, and symlinks under the root are followed: they are the user's own
            # layout (e.g. LLaVA's playground/data/coco -> /datasets/coco).
            where = f"the image root {base}" if explicit_root else f"the data file's folder {base}"
            problem(
                ref.field,
                f"relative image path {short_repr(ref.path)} climbs out of {where} with '..'; "
                "give an image root that contains the images, or an absolute path",
            )
            continue
        if check_images:
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


def _container(data: bytes) -> str:
    """The container: "json" for a top-level array, else "jsonl". A first line that is a
    whole array (`[1, 2]`) followed by more lines is JSONL with a bad first record."""
    stripped = data.lstrip(b" \t\r\n")
    if not stripped.startswith(b"["):
        return "jsonl"
    first, _, rest = stripped.partition(b"\n")
    if not rest.strip():
        return "json"
    try:
        json.loads(first.decode("utf-8"))
    except _JSON_ERRORS:  # UnicodeDecodeError is a ValueError
        return "json"
    return "jsonl"


def _climbs_out(path: str) -> bool:
    """Whether a relative image path leaves its root through `..` (as written, not on disk)."""
    if os.path.isabs(path):
        return False
    first = os.path.normpath(path).split(os.sep, 1)[0]
    return first == os.pardir


# Python's json raises these besides JSONDecodeError: RecursionError for deep nesting,
# ValueError for an integer over sys.get_int_max_str_digits() digits.
_JSON_ERRORS = (ValueError, RecursionError)


def _json_error(e: Exception) -> str:
    """A user-facing message for any exception in `_JSON_ERRORS`."""
    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON: {e.msg} at column {e.colno}"
    if isinstance(e, RecursionError):
        return "JSON nested too deeply to read (arrays/objects inside each other)"
    if "digits" in str(e):  # "Exceeds the limit (4300 digits) for integer string conversion"
        limit = getattr(sys, "get_int_max_str_digits", lambda: 4300)()  # Python >= 3.10.7
        return f"a number is too long to read (over {limit} digits)"
    return f"not valid JSON: {e}"


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
        except _JSON_ERRORS as e:
            if not entries and isinstance(e, json.JSONDecodeError):
                whole = _single_object(data)
                if whole is not None:
                    return [_Entry(line, raw, problem=Problem(file, line, "", whole, None, raw))]
            msg = _json_error(e)
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
    except _JSON_ERRORS:
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
        msg = _json_error(e)
        raw = text.split("\n")[e.lineno - 1].removesuffix("\r")
        return [_Entry(e.lineno, raw, problem=Problem(file, e.lineno, "", msg, None, raw))]
    except _JSON_ERRORS as e:  # no position given: name the element it happened in
        line, raw = _failing_element(text)
        return [_Entry(line, raw, problem=Problem(file, line, "", _json_error(e), None, raw))]
    decoder = json.JSONDecoder()
    entries: list[_Entry] = []
    pos = _WS.match(text, text.index("[") + 1).end()
    line, counted = 1, 0  # lines are counted on from the previous element: linear, not O(n^2)
    while text[pos] != "]":
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            obj, end = decoder.raw_decode(text, pos)
        except _JSON_ERRORS as e:  # json.loads took it whole, so only a stack limit is left
            raw = text[pos:].split("\n", 1)[0].removesuffix("\r")
            return [_Entry(line, raw, problem=Problem(file, line, "", _json_error(e), None, raw))]
        raw = text[pos:end]
        if isinstance(obj, dict):
            entries.append(_Entry(line, raw, obj))
        else:
            entries.append(_Entry(line, raw, problem=_not_object(file, line, raw, obj)))
        pos = _WS.match(text, end).end()
        if text[pos] == ",":
            pos = _WS.match(text, pos + 1).end()
    return entries


def _failing_element(text: str) -> tuple[int, str]:
    """Start line and first source line of the array element that json cannot parse."""
    decoder = json.JSONDecoder()
    pos = _WS.match(text, text.index("[") + 1).end()
    while pos < len(text) and text[pos] != "]":
        try:
            _, end = decoder.raw_decode(text, pos)
        except _JSON_ERRORS:
            break
        pos = _WS.match(text, end).end()
        if pos < len(text) and text[pos] == ",":
            pos = _WS.match(text, pos + 1).end()
    line = text.count("\n", 0, pos) + 1
    raw = text[pos:].split("\n", 1)[0].removesuffix("\r")
    return line, raw
