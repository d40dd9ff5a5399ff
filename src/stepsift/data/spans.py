"""Read records back from their byte spans in a file a validating pass has indexed.

A `SpanReader` is small and picklable, so a worker process (a Ray actor) can be handed
one with the spans of its batch and read just those records, never the whole file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .entries import Entry
from .reader import EntryContext, _Collector, rebuild_record
from .record import Record


@dataclass(frozen=True)
class SpanReader:
    file: Path
    format: str  # the file's record format, as its validating pass found it
    base: Path  # where relative image paths resolve

    grouped = False  # any order reads alike: records are read one by one from their spans

    def resolved(self) -> SpanReader:
        """The same reader with absolute paths (for workers with another directory)."""
        return SpanReader(self.file.resolve(), self.format, self.base.resolve())

    def read(self, where: Sequence, lines: Sequence[int]) -> list[Record]:
        """The records whose JSON text lies at these (byte offset, length) spans, starting
        on these lines."""
        offsets, lengths = ([int(w[k]) for w in where] for k in (0, 1))
        out = []
        context = EntryContext(self.file, self.format, self.base, False, False, _Collector(0))
        with open(self.file, "rb") as fh:
            for offset, length, line in zip(offsets, lengths, lines, strict=True):
                fh.seek(int(offset))
                raw = fh.read(int(length)).decode("utf-8")
                entry = Entry(int(line), raw, json.loads(raw), offset=int(offset))
                out.append(rebuild_record(entry, context))
        return out
