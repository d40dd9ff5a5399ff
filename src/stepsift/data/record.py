"""The one canonical record type that every input format is read into."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .images import ImageSource

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Turn:
    """One message of a conversation.

    `text` has the format's image placeholders (`<image>`) removed; the images of a
    record are kept, in order, in `Record.images`. `supervised` says whether the
    turn's tokens count in the training loss (assistant turns, unless the input
    marked them otherwise, e.g. ms-swift's `"loss": false`).
    """

    role: str
    text: str
    supervised: bool = False


def location(file: Path, line: int, row_group: int | None) -> str:
    """`file:line` for JSON input; `file: row group G, row R` for Parquet/Arrow input."""
    if row_group is None:
        return f"{file}:{line}" if line > 0 else str(file)  # line 0: the file as a whole
    return f"{file}: row group {row_group}, row {line}"


@dataclass(frozen=True)
class Source:
    """Where a record came from, for error messages and write-back."""

    file: Path
    line: int  # 1-based line on which the record starts; in a table, the 0-based row
    row_group: int | None = None  # the Parquet row group (Arrow record batch) of a table row

    def __str__(self) -> str:
        return location(self.file, self.line, self.row_group)


@dataclass(frozen=True)
class Record:
    """A training sample in stepsift's canonical form.

    `raw` is the exact JSON text of the record as it stood in the input file, so a
    selection can be written back byte-for-byte in the input's own format.
    """

    id: str
    turns: tuple[Turn, ...]
    images: tuple[ImageSource, ...]  # files, or images embedded in a Parquet/Arrow row
    source: Source
    format: str
    raw: str
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def supervised_turns(self) -> tuple[Turn, ...]:
        return tuple(t for t in self.turns if t.supervised)


@dataclass(frozen=True)
class Problem:
    """Something wrong with one record (or one line) of an input file."""

    file: Path
    line: int
    field: str  # the offending field, e.g. "conversations[1].value", or "" for the whole line
    message: str
    record_id: str | None = None
    raw: str | None = None
    row_group: int | None = None  # set for a Parquet/Arrow row; `line` is then its row

    def __str__(self) -> str:
        where = location(self.file, self.line, self.row_group)
        kind = "field" if self.row_group is None else "column"
        what = f" {kind} '{self.field}'" if self.field else ""
        rid = f" (id {self.record_id})" if self.record_id else ""
        return f"{where}{rid}:{what} {self.message}".replace(": ", ": ", 1)
