"""`select` on Parquet/Arrow input: the kept rows written to one Parquet file, unchanged.

The candidates are validated as `score` validated them (streamed, one row group at a time:
`data.index_records`), so with `--skip-invalid` the same rows are left out; the kept rows
are then copied by Arrow from their row groups (`data.table_writer`), images still
embedded and the schema, `datasets` metadata included, the input's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stepsift.data import RecordIndex, index_records
from stepsift.data.table_writer import write_table_rows
from stepsift.select.harmful import Policy
from stepsift.select.keep import Keep, Selection, requested
from stepsift.select.matching import decide_for

TABLE_SUFFIX = ".parquet"


@dataclass
class TablePlan:
    """A selection decided but not yet written: the kept rows, in output order."""

    selection: Selection
    index: RecordIndex
    positions: np.ndarray  # the kept rows' positions in `index`, in the order to write


def plan_table_selection(
    candidates: Path,
    scores: Path,
    keep: Keep | str,
    drop_harmful: bool = False,
    skip_invalid: bool = False,
    order: str = "input",
    image_root: Path | None = None,
    policy: Policy | None = None,
) -> TablePlan:
    """Everything `select` on a table does except writing: index, choose, order."""
    keep = requested(keep, order)
    index = index_records(candidates, image_root)
    if not skip_invalid:
        index.raise_for_problems()
    selection = decide_for(index.ids.to_pylist(), candidates, scores, keep, drop_harmful, policy)
    kept = pa.array(selection.kept_ids, pa.string())
    positions = pc.index_in(kept, value_set=index.ids).to_numpy(zero_copy_only=False)
    positions = positions.astype(np.int64)
    if order == "input":
        positions = np.sort(positions)  # the index holds rows in the table's order
    return TablePlan(selection, index, positions)


def check_table_out(out: Path) -> None:
    if Path(out).suffix != TABLE_SUFFIX:
        raise ValueError(
            f"--out {out}: a Parquet/Arrow input's selection is written as Parquet; "
            f"name the output *{TABLE_SUFFIX}"
        )


def write_plan(plan: TablePlan, out: Path) -> int:
    p = plan.positions
    return write_table_rows(plan.index.reader.table, plan.index.where[p], plan.index.lines[p], out)


def select_table(
    candidates: Path,
    scores: Path,
    keep: Keep,
    out: Path,
    drop_harmful: bool = False,
    skip_invalid: bool = False,
    order: str = "input",
    image_root: Path | None = None,
    policy: Policy | None = None,
) -> Selection:
    """`select` for a table: the kept rows to the Parquet file `out`."""
    check_table_out(out)
    plan = plan_table_selection(
        candidates, scores, keep, drop_harmful, skip_invalid, order, image_root, policy
    )
    write_plan(plan, out)
    return plan.selection
