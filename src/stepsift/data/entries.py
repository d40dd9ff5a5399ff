"""Stream a data file's records as raw entries: JSON text, parsed object, line and byte span.

Files are read in bounded chunks, never whole, so a pass over a pool of millions of
records holds one chunk at a time. Every entry carries its byte span in the file, so a
record can be read again later from its offset alone (`spans.SpanReader`).

A container-level fault (a JSON array with a syntax error, a pretty-printed single object
read as JSONL) is one entry with `fatal` set: the whole file is unusable, and readers report
that one problem instead of everything that follows it.
"""

from __future__ import annotations

import codecs
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .formats import type_name
from .record import Problem

BOM = b"\xef\xbb\xbf"
_WS = re.compile(r"[ \t\r\n]*")  # JSON's insignificant whitespace
_CHUNK = 1 << 20  # bytes read at a time; an element longer than this grows the buffer

# Python's json raises these besides JSONDecodeError: RecursionError for deep nesting,
# ValueError for an integer over sys.get_int_max_str_digits() digits.
JSON_ERRORS = (ValueError, RecursionError)


@dataclass
class Entry:
    """One line (JSONL) or array element (JSON array) before format parsing."""

    line: int  # 1-based line on which it starts
    raw: str  # its exact text (a JSONL line without its line break)
    obj: Any = None
    problem: Problem | None = None
    offset: int = -1  # byte offset of `raw` in the file
    length: int = 0  # byte length of `raw`
    fatal: bool = False  # the whole file is unusable (see the module docstring)
    row_group: int | None = None  # a Parquet/Arrow row: its row group; `line` is its row


def json_error(e: Exception) -> str:
    """A user-facing message for any exception in `JSON_ERRORS`."""
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


def _skip_bom(fh: IO[bytes]) -> int:
    """Position `fh` after a UTF-8 byte-order mark, if any; the offset records start from."""
    start = len(BOM) if fh.read(len(BOM)) == BOM else 0
    fh.seek(start)
    return start


def container_of(file: Path) -> str:
    """The container: "json" for a top-level array, else "jsonl". A first line that is a
    whole array (`[1, 2]`) followed by more lines is JSONL with a bad first record."""
    with open(file, "rb") as fh:
        _skip_bom(fh)
        for line in fh:
            stripped = line.strip(b" \t\r\n")
            if stripped:
                break
        else:
            return "jsonl"  # empty or blank: no records either way
        if not stripped.startswith(b"["):
            return "jsonl"
        rest = any(more.strip(b" \t\r\n") for more in fh)
    if not rest:
        return "json"
    try:
        json.loads(line.lstrip(b" \t\r\n").rstrip(b"\r\n").decode("utf-8"))
    except JSON_ERRORS:  # UnicodeDecodeError is a ValueError
        return "json"
    return "jsonl"


def iter_entries(file: Path, container: str) -> Iterator[Entry]:
    """Every entry of `file`, streamed, in file order."""
    return iter_json_array(file) if container == "json" else iter_jsonl(file)


def iter_jsonl(file: Path) -> Iterator[Entry]:
    with open(file, "rb") as fh:
        offset = _skip_bom(fh)
        seen_any = False
        for i, chunk in enumerate(fh):
            line, start = i + 1, offset
            offset += len(chunk)
            chunk = chunk.removesuffix(b"\n").removesuffix(b"\r")
            if not chunk.strip():
                continue  # blank lines are skipped; numbering stays true to the file
            first, seen_any = not seen_any, True
            entry, not_json = _jsonl_entry(file, line, chunk, start)
            if first and not_json and (whole := _single_object(file)) is not None:
                problem = Problem(file, line, "", whole, None, entry.raw)
                yield Entry(line, entry.raw, problem=problem, fatal=True)
                return
            yield entry


def _jsonl_entry(file: Path, line: int, chunk: bytes, offset: int) -> tuple[Entry, bool]:
    """The line's entry, and whether json could not decode it (not UTF-8 trouble)."""
    try:
        raw = chunk.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = chunk[e.start]
        msg = f"not valid UTF-8 (byte 0x{bad:02x} at column {e.start + 1}); save as UTF-8"
        text = chunk.decode("utf-8", "backslashreplace")
        return Entry(line, text, problem=Problem(file, line, "", msg, None, text)), False
    span = {"offset": offset, "length": len(chunk)}
    try:
        obj = json.loads(raw)
    except JSON_ERRORS as e:
        problem = Problem(file, line, "", json_error(e), None, raw)
        return Entry(line, raw, problem=problem, **span), isinstance(e, json.JSONDecodeError)
    if not isinstance(obj, dict):
        return Entry(line, raw, problem=_not_object(file, line, raw, obj), **span), False
    return Entry(line, raw, obj, **span), False


def _single_object(file: Path) -> str | None:
    """Explain a pretty-printed single object, which otherwise reads as many broken lines.
    Only reached when the first line is not JSON, so the whole read is the error path."""
    try:
        obj = json.loads(file.read_bytes().removeprefix(BOM))
    except JSON_ERRORS:
        return None
    if not isinstance(obj, dict):
        return None
    return "the file is one JSON object over several lines; expected JSONL or a JSON array"


class _Text:
    """A window of a file's text that knows the line, column and byte offset where it
    starts. It is read on in chunks and forgets what lies behind the reader, so a file of
    one long line (a minified array) streams too."""

    def __init__(self, fh: IO[bytes], file: Path, offset: int):
        self.fh, self.file = fh, file
        self.text = ""
        self.line = 1  # line of text[0]
        self.col0 = 0  # 0-based column of text[0] on its line
        self.byte = offset  # byte offset of text[0]
        self.eof = False
        self._cursor = (0, offset, 1)  # (char, byte, line), advanced for linear cost
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def more(self) -> None:
        """Append the next chunk (at least as much again as is held, so that re-decoding a
        long element stays linear); raise `_Fatal` naming the line of a non-UTF-8 byte."""
        data = self.fh.read(max(_CHUNK, len(self.text)))
        self.eof = not data
        try:  # the incremental decoder holds a character split between chunks
            self.text += self._decoder.decode(data, final=self.eof)
        except UnicodeDecodeError as e:
            line = self.line + self.text.count("\n") + e.object.count(b"\n", 0, e.start)
            msg = f"not valid UTF-8 (byte 0x{e.object[e.start]:02x}); save as UTF-8"
            raise _Fatal(Problem(self.file, line, "", msg)) from None

    def _advance(self, pos: int) -> tuple[int, int]:
        """(byte offset, line) of character `pos`; cheap when positions increase."""
        char, byte, line = self._cursor
        if pos < char:  # only on error paths
            char, byte, line = 0, self.byte, self.line
        piece = self.text[char:pos]
        byte += len(piece.encode("utf-8"))
        line += piece.count("\n")
        self._cursor = (pos, byte, line)
        return byte, line

    def byte_at(self, pos: int) -> int:
        return self._advance(pos)[0]

    def line_at(self, pos: int) -> int:
        return self._advance(pos)[1]

    def column(self, pos: int) -> int:
        """1-based column of `pos` on its line."""
        nl = self.text.rfind("\n", 0, pos)
        return pos - nl if nl >= 0 else self.col0 + pos + 1

    def drop_before(self, pos: int) -> int:
        """Forget the text before the line holding `pos` (before `pos` itself when that line
        is long) once there is much of it; return `pos` in the new window."""
        if pos < _CHUNK:
            return pos
        nl = self.text.rfind("\n", max(0, pos - _CHUNK), pos)
        cut = nl + 1 if nl >= 0 else pos  # whole lines keep error messages' source lines
        byte, line = self._advance(cut)
        self.col0 = 0 if nl >= 0 else self.col0 + cut
        if nl < 0 and "\n" in self.text[:cut]:
            self.col0 = cut - self.text.rfind("\n", 0, cut) - 1
        self.text, self.byte, self.line = self.text[cut:], byte, line
        self._cursor = (0, byte, line)
        return pos - cut

    def source_line(self, pos: int) -> str:
        """The held part of the line around `pos`, for error messages."""
        start = self.text.rfind("\n", 0, pos) + 1
        end = self.text.find("\n", pos)
        return self.text[start : end if end >= 0 else len(self.text)].removesuffix("\r")

    def skip_ws(self, pos: int) -> int:
        """The first non-whitespace position at or after `pos`, reading on as needed."""
        while True:
            pos = _WS.match(self.text, pos).end()
            if pos < len(self.text) or self.eof:
                return pos
            self.more()


class _Fatal(Exception):
    def __init__(self, problem: Problem):
        self.problem = problem


def iter_json_array(file: Path) -> Iterator[Entry]:
    """Elements of a top-level JSON array, each with its exact source text, start line and
    byte span. A syntax error anywhere ends the stream with one fatal entry."""
    with open(file, "rb") as fh:
        window = _Text(fh, file, _skip_bom(fh))
        try:
            yield from _array_elements(window)
        except _Fatal as f:
            yield Entry(f.problem.line, f.problem.raw or "", problem=f.problem, fatal=True)


def _array_elements(w: _Text) -> Iterator[Entry]:
    decoder = json.JSONDecoder()
    pos = w.skip_ws(0) + 1  # past "[" (container_of saw it)
    pos = w.skip_ws(pos)
    if pos < len(w.text) and w.text[pos] == "]":
        yield from _trailing(w, pos + 1)
        return
    while True:
        pos = w.drop_before(pos)
        obj, end = _decode_element(decoder, w, pos)
        raw = w.text[pos:end]
        line, offset = w.line_at(pos), w.byte_at(pos)
        length = w.byte_at(end) - offset
        if isinstance(obj, dict):
            yield Entry(line, raw, obj, offset=offset, length=length)
        else:
            problem = _not_object(w.file, line, raw, obj)
            yield Entry(line, raw, problem=problem, offset=offset, length=length)
        pos = w.skip_ws(end)
        if pos < len(w.text) and w.text[pos] == ",":
            pos = w.skip_ws(pos + 1)
            if pos < len(w.text) and w.text[pos] == "]":
                _syntax(w, pos, "Expecting value")  # a trailing comma, as json.loads says
            continue
        if pos < len(w.text) and w.text[pos] == "]":
            yield from _trailing(w, pos + 1)
            return
        _syntax(w, pos, "Expecting ',' delimiter")


def _decode_element(decoder: json.JSONDecoder, w: _Text, pos: int) -> tuple[Any, int]:
    """Decode the element at `pos`, reading on while it may just be cut by the window."""
    while True:
        try:
            obj, end = decoder.raw_decode(w.text, pos)
            if end < len(w.text) or w.eof:
                return obj, end
            w.more()  # a number that ends with the window may go on in the next chunk
        except json.JSONDecodeError as e:
            if w.eof or not _maybe_cut(e, len(w.text)):
                raw = w.source_line(e.pos)
                msg = f"not valid JSON: {e.msg} at column {w.column(e.pos)}"
                raise _Fatal(Problem(w.file, w.line_at(e.pos), "", msg, None, raw)) from None
            w.more()
        except JSON_ERRORS as e:  # no position given: name the element it happened in
            line, raw = w.line_at(pos), w.source_line(pos)
            raise _Fatal(Problem(w.file, line, "", json_error(e), None, raw)) from None


def _maybe_cut(e: json.JSONDecodeError, held: int) -> bool:
    """Whether a decode error may only mean the window ends inside the element: the
    decoder stops where the text runs out (a few characters back for a cut literal such
    as `tru` or an escape), except in a string, whose start it names."""
    return e.pos >= held - 16 or e.msg.startswith("Unterminated string")


def _trailing(w: _Text, pos: int) -> Iterator[Entry]:
    """After the closing bracket only whitespace may follow."""
    pos = w.skip_ws(pos)
    if pos < len(w.text):
        _syntax(w, pos, "Extra data")
    return iter(())


def _syntax(w: _Text, pos: int, what: str) -> None:
    if pos >= len(w.text) and not w.eof:
        w.more()
    raw = w.source_line(pos)
    msg = f"not valid JSON: {what} at column {w.column(pos)}"
    raise _Fatal(Problem(w.file, w.line_at(pos), "", msg, None, raw))
