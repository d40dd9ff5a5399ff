"""From scores to a subset: keep the top records by utility, written back unchanged.

`select` reads the candidates and the score file, lets `decide` (`select/decide.py`)
choose, and writes the chosen records byte-for-byte in the input's own format; when the
score file vouches for the candidate file's exact bytes it streams instead
(`select/fast.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stepsift.data import Record, is_table, read_records, write_records
from stepsift.select.fast import fast_select
from stepsift.select.harmful import Policy
from stepsift.select.keep import Keep, Selection, requested
from stepsift.select.matching import decide_for
from stepsift.select.table import select_table


@dataclass
class Plan:
    """A selection decided but not yet written: the records to write, in order."""

    selection: Selection
    records: list[Record]
    container: str  # the input's container, "jsonl" or "json"


def plan_selection(
    candidates: Path,
    scores: Path,
    keep: Keep | str,
    drop_harmful: bool = False,
    skip_invalid: bool = False,
    order: str = "input",
    image_root: Path | None = None,
    policy: Policy | None = None,
) -> Plan:
    """Everything `select` does except writing: read, validate, choose, order."""
    keep = requested(keep, order)
    read = read_records(Path(candidates), image_root)
    if not skip_invalid:
        read.raise_for_problems()
    ids = [r.id for r in read.records]
    selection = decide_for(ids, candidates, scores, keep, drop_harmful, policy)
    by_id = {r.id: r for r in read.records}
    if order == "utility":
        chosen = [by_id[i] for i in selection.kept_ids]
    else:
        kept = set(selection.kept_ids)
        chosen = [r for r in read.records if r.id in kept]
    return Plan(selection, chosen, read.container)


def select(
    candidates: Path,
    scores: Path,
    keep: Keep | str,
    out: Path,
    drop_harmful: bool = False,
    skip_invalid: bool = False,
    order: str = "input",
    image_root: Path | None = None,
    policy: Policy | None = None,
) -> Selection:
    """Write the chosen records of `candidates`, byte-for-byte, in the input's own format.

    `keep` is a fraction, a count, a token budget or `auto` (`parse_keep`); `policy` says
    how harmful flags are made and whether the selection is set-wise (`Policy`).
    Parquet/Arrow input (a file, shards, a glob or a `save_to_disk` folder) is written
    as one Parquet file of the kept rows, unchanged (`select/table.py`).
    `order` is "input" (the file's order) or "utility" (best first; with
    `policy.diverse`, the order the greedy chose them). Records are validated
    as `score` validated them (images included, resolved against `image_root`), so that with
    `skip_invalid` the same records are left out; when the score file vouches for these
    exact JSONL bytes, that validation is trusted and the file is only streamed
    (`select/fast.py`).
    """
    keep = requested(keep, order)
    if is_table(candidates):
        return select_table(
            Path(candidates), Path(scores), keep, Path(out), drop_harmful, skip_invalid, order,
            image_root, policy,
        )  # fmt: skip
    fast = fast_select(
        Path(candidates), Path(scores), keep, Path(out), drop_harmful, order, skip_invalid, policy
    )
    if fast is not None:
        return fast
    plan = plan_selection(
        candidates, scores, keep, drop_harmful, skip_invalid, order, image_root, policy
    )
    write_records(plan.records, Path(out), container=plan.container)
    return plan.selection
