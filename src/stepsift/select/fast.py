"""`select` without re-reading every record, when it is safe.

The full path reads and validates the whole candidate file again (so that with
`--skip-invalid` exactly the records `score` rejected are left out). When the score file
records the SHA-256 of the candidate bytes it was made from and the file still has those
bytes, that validation has already been done: the scored ids are the valid records. Then
`select` ranks from the score file and streams the candidate file once, parsing each line
only to learn its id, and holds nothing but the ids and the kept lines. JSONL only: a
JSON array has no line to stream, so it takes the full path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from stepsift.data import is_table
from stepsift.data.atomic import atomic_write_text
from stepsift.data.formats import record_id
from stepsift.engine.store import (
    DIGEST_KEY,
    REJECTED_KEY,
    file_digest,
    read_scores,
    read_settings,
)
from stepsift.select.decide import decide
from stepsift.select.harmful import Policy
from stepsift.select.keep import Keep, Selection
from stepsift.select.score_data import score_data

BOM = b"\xef\xbb\xbf"


def jsonl_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line, as the reader sees it: BOM dropped,
    CR before LF dropped. Undecodable lines are skipped: they were rejected when scored."""
    with open(path, "rb") as f:
        for number, chunk in enumerate(f, start=1):
            if number == 1:
                chunk = chunk.removeprefix(BOM)
            chunk = chunk.removesuffix(b"\n").removesuffix(b"\r")
            if chunk.strip():
                try:
                    yield number, chunk.decode("utf-8")
                except UnicodeDecodeError:
                    continue


def is_jsonl(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(1 << 16).removeprefix(BOM).lstrip(b" \t\r\n")
    return not head.startswith(b"[")


def fast_select(
    candidates: Path,
    scores: Path,
    keep: Keep,
    out: Path,
    drop_harmful: bool = False,
    order: str = "input",
    skip_invalid: bool = False,
    policy: Policy | None = None,
) -> Selection | None:
    """Select as `select` does, when the score file vouches for these exact candidate bytes;
    None when it cannot (then take the full path). A file with records the scoring run
    rejected takes the full path unless `skip_invalid`: that path names them and refuses."""
    candidates, scores = Path(candidates), Path(scores)
    settings = read_settings(scores) if scores.is_file() else {}
    expected, rejected = settings.get(DIGEST_KEY), settings.get(REJECTED_KEY)
    if not expected or rejected is None or (rejected and not skip_invalid):
        return None
    if is_table(candidates) or not candidates.is_file() or not is_jsonl(candidates):
        return None
    if file_digest(candidates) != expected:
        return None
    data = score_data(read_scores(scores), scores, settings)
    ids = data.ids
    if len(set(ids)) != len(ids):
        return None  # the full path names the doubled id
    selection = decide(data, keep, drop_harmful, policy)  # the full path's own decision
    kept = set(selection.kept_ids)
    scored, found = set(ids), 0
    lines: dict[str, str] = {}
    for number, text in jsonl_lines(candidates):
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            continue  # rejected when scored
        if not isinstance(obj, dict):
            continue
        rid, _ = record_id(obj)
        rid = rid if rid is not None else f"{candidates.stem}:{number}"
        found += rid in scored
        if rid in kept:
            lines.setdefault(rid, text)  # a later duplicate was rejected when scored
    if found != len(scored):
        return None  # the full path names what does not match
    ordered = list(lines.values()) if order == "input" else [lines[i] for i in selection.kept_ids]
    atomic_write_text(Path(out), "".join(line + "\n" for line in ordered))
    return selection
