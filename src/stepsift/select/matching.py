"""A score file and a candidate input must describe the same records, each once; then
`select` can choose among them."""

from __future__ import annotations

from pathlib import Path

from stepsift.select.decide import decide
from stepsift.select.harmful import Policy
from stepsift.select.keep import Keep, Selection
from stepsift.select.score_data import read_score_data


def decide_for(
    record_ids: list[str],
    candidates: Path,
    scores: Path,
    keep: Keep,
    drop_harmful: bool,
    policy: Policy | None,
) -> Selection:
    """Read the score file, check it scores exactly `record_ids` (the candidates' valid
    records), and choose among them."""
    data = read_score_data(Path(scores))
    check_ids_match(data.ids, record_ids, candidates, scores)
    return decide(data, keep, drop_harmful, policy)


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
