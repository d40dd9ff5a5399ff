"""The report's plots, as PNG bytes (matplotlib's Agg canvas, no pyplot: no global backend
state and no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

HARMFUL = "#c0392b"
HELPFUL = "#2e7d32"
NEUTRAL = "#3465a4"
DPI = 100


@dataclass(frozen=True)
class Mark:
    """A point on the budget curve: keep the best `count` candidates."""

    label: str
    count: int
    x: float  # cumulative tokens there
    y: float  # cumulative utility there
    color: str


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def plain(text: str, limit: int = 40) -> str:
    """User text as a matplotlib label: cut short, and `$` escaped so a name is never
    parsed as mathtext (a malformed formula would make drawing fail)."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def utility_histogram(utility: np.ndarray, harmful: np.ndarray, threshold: float) -> bytes:
    """Utility counts, flagged-harmful candidates stacked in red, the threshold dashed.
    The x range leaves out the 0.5% most extreme values each side (said in the title) so
    a few outliers do not squash the rest into one bar."""
    lo, hi = (
        np.percentile(utility, [0.5, 99.5])
        if len(utility) >= 200
        else (
            utility.min(),
            utility.max(),
        )
    )
    lo, hi = min(lo, threshold), max(hi, threshold)
    if hi - lo <= 0:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, int(np.clip(np.sqrt(len(utility)) * 2, 10, 60)) + 1)
    outside = int(((utility < lo) | (utility > hi)).sum())
    fig = Figure(figsize=(8, 3.6))
    ax = fig.add_subplot()
    ax.hist(
        [utility[~harmful], utility[harmful]],
        bins=bins,
        stacked=True,
        color=[NEUTRAL, HARMFUL],
        label=["not flagged", "flagged harmful"],
    )
    ax.axvline(
        threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}"
    )
    share = harmful.mean() if len(harmful) else 0.0
    title = f"utility of {len(utility):,} candidates; harmful: {int(harmful.sum()):,} ({share:.1%})"
    if outside:
        title += f"; {outside:,} outside the range shown"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("one-step utility (anchor loss decrease)")
    ax.set_ylabel("candidates")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def budget_curve(
    cum_tokens: np.ndarray, cum_utility: np.ndarray, marks: Sequence[Mark], x_label: str
) -> bytes:
    """Cumulative utility against cumulative training cost, best candidates first."""
    fig = Figure(figsize=(8, 4.2))
    ax = fig.add_subplot()
    x = np.concatenate([[0.0], cum_tokens])
    y = np.concatenate([[0.0], cum_utility])
    ax.plot(x, y, color=NEUTRAL, linewidth=1.5)
    for m in marks:
        ax.axvline(m.x, color=m.color, linestyle=":", linewidth=1)
        ax.plot([m.x], [m.y], "o", color=m.color, label=f"{m.label}: {m.count:,} kept")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xlabel(x_label)
    ax.set_ylabel("cumulative utility")
    ax.set_title("cumulative utility of the best candidates against their cost", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def group_bars(
    names: Sequence[str], mean: np.ndarray, helped: np.ndarray, hurt: np.ndarray
) -> bytes:
    """Per anchor group: mean utility (left) and the share of candidates helping or hurting
    it (right)."""
    labels = [plain(n) for n in names]
    pos = np.arange(len(labels))[::-1]
    fig = Figure(figsize=(9, min(30.0, 1.2 + 0.35 * len(labels))))
    left, right = fig.subplots(1, 2, sharey=True)
    left.barh(pos, mean, color=[HELPFUL if m >= 0 else HARMFUL for m in mean])
    left.axvline(0, color="black", linewidth=0.5)
    left.set_yticks(pos, labels, fontsize=8)
    left.set_xlabel("mean utility towards the group")
    right.barh(pos, helped, color=HELPFUL, label="helped (utility > 0)")
    right.barh(pos, -hurt, color=HARMFUL, label="hurt (utility < 0)")
    right.axvline(0, color="black", linewidth=0.5)
    right.set_xlim(-1, 1)
    right.set_xticks([-1, -0.5, 0, 0.5, 1], ["100%", "50%", "0", "50%", "100%"])
    right.set_xlabel("share of candidates")
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _png(fig)
