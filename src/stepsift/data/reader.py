"""Read a JSONL or JSON-array data file into `Record`s, collecting every problem found
(`inputs.read_records` reads Parquet/Arrow tables too).

Data errors never raise: each one becomes a `Problem` naming file, line and field, and the
record it belongs to is left out. Callers decide what to do (usually raise
`DataValidationError` before any model work).
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .entries import Entry, container_of, iter_entries
from .formats import (
    ImageRef,
    detect_format,
    image_path_issue,
    parse_record,
    record_id,
    short_repr,
    unknown_format_message,
)
from .images import EmbeddedImage, ImageSource, check_image
from .record import Problem, Record, Source, location


@dataclass
class ReadResult:
    records: list[Record]
    problems: list[Problem]
    format: str  # the file's record format, e.g. "llava"; "unknown" if none was recognised
    container: str  # "jsonl", "json", or for a table "parquet" / "arrow"
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
        lines.append(f"{location(p.file, p.line, p.row_group)}{rid}:{where} {p.message}")
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    return "\n".join(lines)


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


def read_json_records(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    check_images: bool = True,
    max_problems: int | None = None,
) -> ReadResult:
    """Read and validate every record of a JSONL or JSON-array file, all held in memory.

    Relative image paths resolve against `image_root`, else the data file's folder, and must
    not climb out of it with `..`; absolute paths are taken as given.
    With `check_images`, every image must exist and be decodable by PIL.
    (`index.index_records` validates the same way but keeps only where each record is.)
    """
    records: list[Record] = []
    out = _Collector(max_problems)
    scan = scan_file(Path(path), image_root, check_images, out)
    for _, record in scan.valid():
        records.append(record)
    return ReadResult(records, out.problems, scan.format, scan.container, scan.truncated)


@dataclass
class FileScan:
    """One validating pass over a data file, streamed: `valid()` yields each good record
    with its entry (line and byte span) and sends every problem to the collector."""

    file: Path
    container: str
    format: str  # the file's record format; "unknown" if none was recognised
    base: Path  # where relative image paths resolve
    explicit_root: bool
    check_images: bool
    out: _Collector
    fatal: Problem | None  # the container itself is unusable: this is its one problem
    truncated: bool = False  # set when `valid()` stopped at the collector's limit

    def valid(self) -> Iterator[tuple[Entry, Record]]:
        if self.fatal is not None:
            self.out.add(self.fatal)
            return
        context = EntryContext(self.file, self.format, self.base, self.explicit_root,
                               self.check_images, self.out)  # fmt: skip
        for entry in iter_entries(self.file, self.container):
            if self.out.full:
                self.truncated = True
                return
            record = read_entry(entry, context)
            if record is not None:
                yield entry, record


@dataclass
class EntryContext:
    """What validating one entry needs besides the entry: its file, the file's format, where
    images resolve, and what the pass has seen so far (ids, checked images, problems). A
    table of several shards shares one (`replace` the file and id prefix per shard)."""

    file: Path
    format: str
    base: Path
    explicit_root: bool
    check_images: bool
    out: _Collector
    id_prefix: str = ""  # default ids are f"{id_prefix}:{line}"; "" means the file's stem
    first_seen: dict[str, str] = field(default_factory=dict)  # id -> where it was first used
    image_errors: _RecentImages = field(default_factory=lambda: _RecentImages())

    def where(self, entry: Entry) -> str:
        if entry.row_group is None:
            return f"line {entry.line}"
        return location(self.file, entry.line, entry.row_group)


class _RecentImages(OrderedDict):
    """The check results of the images seen last: a bounded cache, so a pool of millions
    of distinct images does not hold a result for each (one seen again after it fell out
    is checked again, a few milliseconds)."""

    limit = 8192

    def __setitem__(self, key: Path, value: str | None) -> None:
        super().__setitem__(key, value)
        if len(self) > self.limit:
            self.popitem(last=False)


def scan_file(
    file: Path,
    image_root: str | os.PathLike[str] | None,
    check_images: bool,
    out: _Collector,
) -> FileScan:
    """Find the file's container and record format (a first streamed pass: the format is
    the majority of the file's records', so it is known only once all were seen)."""
    file = Path(file)
    container = container_of(file)  # a missing/unreadable file is no data error: it raises
    counts: Counter[str] = Counter()
    fatal = None
    seen_any = False
    for entry in iter_entries(file, container):
        seen_any = True
        if entry.fatal:
            fatal, counts = entry.problem, Counter()
            break
        if isinstance(entry.obj, dict) and (fmt := detect_format(entry.obj)):
            counts[fmt] += 1
    if not seen_any:
        fatal = Problem(file, 1, "", "no records in the file")
    base = Path(image_root) if image_root is not None else file.parent
    return FileScan(
        file, container, _majority(counts), base, image_root is not None, check_images, out, fatal
    )


def read_entry(entry: Entry, ctx: EntryContext) -> Record | None:
    """The entry's record, or None with every problem it has sent to `ctx.out`."""
    if entry.problem is not None:
        ctx.out.add(entry.problem)
        return None
    obj, file = entry.obj, ctx.file
    rid, _ = record_id(obj)
    found: list[str] = []  # counted here: the collector may be full and drop problems

    def problem(field_name: str, message: str) -> None:
        found.append(message)
        ctx.out.add(Problem(file, entry.line, field_name, message, rid, entry.raw, entry.row_group))

    if rid is not None:
        if rid in ctx.first_seen:
            problem("id", f"duplicate id {short_repr(rid)}: first used on {ctx.first_seen[rid]}")
        else:
            ctx.first_seen[rid] = ctx.where(entry)
    fmt = detect_format(obj)
    if fmt == "sharegpt" and ctx.format == "openai":
        fmt = "openai"  # string content is valid OpenAI-style too; one text-only row is fine
    if fmt is None:
        problem("", unknown_format_message(obj))
        return None
    if fmt != ctx.format:
        problem("", f"record is in {fmt!r} format but the file is {ctx.format!r}; use one format")
        return None

    parsed = parse_record(obj, fmt)
    for issue in parsed.issues:
        problem(issue.field, issue.message)
    images: list[ImageSource] = []
    for ref in parsed.images:
        if ref.data is not None:  # embedded in a Parquet/Arrow row: nothing to resolve
            image = _embedded(ref, entry, ctx)
            images.append(image)
            if ctx.check_images and (why := check_image(image)):
                problem(ref.field, why)
            continue
        base = ctx.base
        resolved = base / ref.path  # an absolute ref.path replaces base
        images.append(resolved)
        if image_path_issue(ref.path):
            continue  # already an issue (empty, URL, NUL, ...): not a path to look up
        if _climbs_out(ref.path):
            # Policy: a relative path must stay inside the image root; `..` is checked on the
            # path as written, since the data file controls it. Absolute paths are explicit and
            # allowed, and symlinks under the root are followed: they are the user's own
            # layout (e.g. LLaVA's playground/data/coco -> /datasets/coco).
            what = "the image root" if ctx.explicit_root else "the data file's folder"
            problem(
                ref.field,
                f"relative image path {short_repr(ref.path)} climbs out of {what} {base} "
                "with '..'; give an image root that contains the images, or an absolute path",
            )
            continue
        if ctx.check_images:
            if resolved not in ctx.image_errors:
                ctx.image_errors[resolved] = check_image(resolved)
            if ctx.image_errors[resolved]:
                problem(ref.field, ctx.image_errors[resolved])
    if found:
        return None
    return _record(obj, rid, parsed, images, entry, ctx, fmt)


def _record(
    obj: dict, rid: str | None, parsed, images: list, entry: Entry, ctx: EntryContext, fmt: str
) -> Record:
    prefix = ctx.id_prefix or ctx.file.stem
    return Record(
        id=rid if rid is not None else f"{prefix}:{entry.line}",
        turns=tuple(parsed.turns),
        images=tuple(images),
        source=Source(ctx.file, entry.line, entry.row_group),
        format=fmt,
        raw=entry.raw,
        metadata=parsed.metadata,
    )


def rebuild_record(entry: Entry, ctx: EntryContext) -> Record:
    """The `Record` of an entry that a validating pass already accepted (no checks again:
    used to read a record back from where the pass found it)."""
    rid, _ = record_id(entry.obj)
    parsed = parse_record(entry.obj, ctx.format)
    images = [
        _embedded(ref, entry, ctx) if ref.data is not None else ctx.base / ref.path
        for ref in parsed.images
    ]
    return _record(entry.obj, rid, parsed, images, entry, ctx, ctx.format)


def _embedded(ref: ImageRef, entry: Entry, ctx: EntryContext) -> EmbeddedImage:
    """An image stored in the row, named by where it is (for messages)."""
    where = f"{location(ctx.file, entry.line, entry.row_group)}, column {ref.field}"
    return EmbeddedImage(ref.data, where)


def _majority(counts: Counter[str]) -> str:
    """The majority format of the file's objects (first seen wins a tie)."""
    if "openai" in counts and "sharegpt" in counts:
        counts["openai"] += counts.pop("sharegpt")
    return counts.most_common(1)[0][0] if counts else "unknown"


def _climbs_out(path: str) -> bool:
    """Whether a relative image path leaves its root through `..` (as written, not on disk)."""
    if os.path.isabs(path):
        return False
    first = os.path.normpath(path).split(os.sep, 1)[0]
    return first == os.pardir
