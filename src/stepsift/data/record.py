"""The one canonical record type that every input format is read into."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Source:
    """Where a record came from, for error messages and write-back."""

    file: Path
    line: int  # 1-based line on which the record starts

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Record:
    """A training sample in stepsift's canonical form.

    `raw` is the exact JSON text of the record as it stood in the input file, so a
    selection can be written back byte-for-byte in the input's own format.
    """

    id: str
    turns: tuple[Turn, ...]
    images: tuple[Path, ...]
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

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        what = f" field '{self.field}'" if self.field else ""
        rid = f" (id {self.record_id})" if self.record_id else ""
        return f"{where}{rid}:{what} {self.message}".replace(": ", ": ", 1)
