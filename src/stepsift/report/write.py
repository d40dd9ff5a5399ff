"""`stepsift report`: read the scores, compute the figures, draw the plots, write the page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stepsift.data.atomic import atomic_write, atomic_write_text
from stepsift.report import plots
from stepsift.report.analysis import anchor_reliability, budget, group_rows
from stepsift.report.embed import embed_image
from stepsift.report.gather import pick_samples, read_report_data, read_shown_records
from stepsift.report.page import PageInput, SampleView, render

PAGE_NAME = "report.html"
DEFAULT_TOP = 10
MAX_IMAGES = 6  # per sample: a record may list thousands, each would be embedded


@dataclass(frozen=True)
class ReportFiles:
    page: Path
    plots: list[Path]
    notes: list[str]  # what the page says is absent or partial

    def lines(self) -> list[str]:
        return [
            f"wrote {self.page} (self-contained) and {len(self.plots)} plot(s) beside it",
            *(f"note: {n}" for n in self.notes),
        ]


def write_report(
    scores: Path,
    candidates: Path,
    out: Path,
    top: int = DEFAULT_TOP,
    image_root: Path | None = None,
) -> ReportFiles:
    """Write `OUT/report.html` and its plots (PNG) for a score file and its candidates.

    `top`: how many of the most harmful and of the most useful samples to show.
    `image_root`: where relative image paths resolve, as for `score`.
    """
    if top < 1:
        raise ValueError(f"--top {top}: show at least one sample of each kind")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: --out must be a folder (the page and its plots go in it)")
    data = read_report_data(Path(scores))
    shown = pick_samples(data, top)
    records, record_notes = read_shown_records(
        Path(candidates), data, shown.harmful + shown.useful, image_root
    )
    order = data.order
    rank_of = np.empty(data.n, dtype=np.int64)
    rank_of[order] = np.arange(1, data.n + 1)

    def view(row: int) -> SampleView:
        record = records.get(data.ids[row])
        paths = record.images if record is not None else ()
        images = [embed_image(p) for p in paths[:MAX_IMAGES]]
        return SampleView(row, int(rank_of[row]), record, images, len(paths[MAX_IMAGES:]))

    curve = budget(data)
    groups = group_rows(data)
    reliability = anchor_reliability(data)
    threshold = data.settings.get("harmful_below", 0.0)
    pngs = {
        "utility_distribution.png": plots.utility_histogram(
            data.utility, data.harmful, float(threshold) if _is_number(threshold) else 0.0
        ),
        "budget_curve.png": plots.budget_curve(
            curve.curve.cum_tokens,
            curve.curve.cum_utility,
            curve.marks,
            curve.x_label,
        ),
    }
    if groups is not None:
        pngs["groups.png"] = plots.group_bars(
            [g.name for g in groups],
            np.array([g.mean for g in groups]),
            np.array([g.helped for g in groups]),
            np.array([g.hurt for g in groups]),
        )
    notes = data.notes + record_notes
    page = render(
        PageInput(
            data=data,
            candidates=Path(candidates),
            budget=curve,
            groups=groups,
            reliability=reliability,
            harmful=[view(i) for i in shown.harmful],
            useful=[view(i) for i in shown.useful],
            plots=pngs,
            notes=notes,
        )
    )
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, png in pngs.items():
        path = out / name
        atomic_write(path, lambda tmp, png=png: Path(tmp).write_bytes(png))
        written.append(path)
    atomic_write_text(out / PAGE_NAME, page)
    return ReportFiles(out / PAGE_NAME, written, notes)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)
