"""A score file and a candidate input must describe the same records, each once."""

from __future__ import annotations

from pathlib import Path


def check_ids_match(
    score_ids: list[str], record_ids: list[str], candidates: Path, scores: Path
) -> None:
    """Scores and candidates must describe the same records, each once."""
    seen: set[str] = set()
    doubled = [i for i in score_ids if i in seen or seen.add(i)]
    if doubled:
        raise ValueError(
            f"{scores}: {len(doubled)} id(s) scored more than once, e.g. {doubled[0]!r}"
        )
    records = set(record_ids)
    unknown = [i for i in score_ids if i not in records]
    unscored = [i for i in record_ids if i not in seen]
    if unknown:
        raise ValueError(
            f"{scores}: {len(unknown)} scored id(s) are not in {candidates}, e.g. {unknown[0]!r} "
            "(were the scores made from another file?)"
        )
    if unscored:
        raise ValueError(
            f"{candidates}: {len(unscored)} record(s) have no score in {scores}, "
            f"e.g. {unscored[0]!r}"
        )
