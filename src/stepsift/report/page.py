"""The report as one self-contained HTML page: inline CSS, plots and images as `data:`
URIs, no script, nothing fetched. Every string that comes from a user file (ids, text,
paths, group names, settings) goes through `html.escape`."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stepsift.data import Record
from stepsift.engine.audit import AUDIT_WARN_BELOW
from stepsift.report.analysis import AnchorReliability, Budget, GroupRow
from stepsift.report.embed import Embedded, png_uri
from stepsift.report.gather import ReportData

MAX_TURN_CHARS = 2000  # a record's turn can be megabytes; the page shows its start
MAX_TURNS = 12  # and a conversation can have thousands of turns
MAX_VALUE_CHARS = 500  # a settings value likewise

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 16px 24px; color: #1d1d1d; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 1.6em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.plot { max-width: 100%; height: auto; display: block; }
figure { margin: 8px 0; }
figcaption { color: #555; font-size: 0.8em; }
.pair { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.pair > figure { flex: 0 1 720px; }
.pair > div { flex: 1 1 320px; }
.absent { color: #555; font-style: italic; }
.warning { background: #fff3cd; border: 1px solid #e0b000; padding: 8px 12px; }
.ok { background: #e8f5e9; border: 1px solid #81c784; padding: 8px 12px; }
.notes li { color: #6d4c00; }
.rule { font-size: 0.85em; color: #333; }
.samples { display: grid; grid-template-columns: repeat(auto-fill, minmax(270px, 1fr));
           gap: 12px; }
.sample { border: 1px solid #ccc; border-radius: 6px; padding: 8px 12px; overflow: hidden; }
.sample.flagged { border-left: 5px solid #c0392b; }
.sample h3 { font-size: 1em; margin: 0 0 4px 0; word-break: break-all; }
.sample .stats { font-size: 0.85em; color: #333; margin: 0 0 6px 0; }
.sample .source { font-size: 0.8em; color: #666; word-break: break-all; }
.sample img { image-rendering: pixelated; border: 1px solid #eee; margin: 2px 4px 2px 0; }
.turn { margin: 4px 0; }
.role { font-size: 0.75em; font-weight: bold; text-transform: uppercase; color: #555; }
.turn pre { white-space: pre-wrap; word-break: break-word; margin: 2px 0;
            font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.85em;
            background: #f6f6f6; padding: 4px 6px; }
.turn.assistant pre { background: #eef4fb; }
.groups-of { font-size: 0.8em; color: #333; margin: 4px 0 0 0; }
.pos { color: #2e7d32; } .neg { color: #c0392b; }
.problem { color: #a00; font-size: 0.85em; word-break: break-all; }
.settings td:first-child { white-space: nowrap; font-family: ui-monospace, monospace; }
.settings td { word-break: break-all; font-size: 0.9em; }
"""

# the figures first (can the anchors be trusted, what do the groups say), then examples
SECTIONS = (
    ("distribution", "Utility distribution"),
    ("budget", "Budget curve"),
    ("reliability", "Anchor reliability"),
    ("groups", "Per-group breakdown"),
    ("harmful", "Most harmful samples"),
    ("useful", "Most useful samples"),
    ("settings", "Run settings"),
)


@dataclass(frozen=True)
class SampleView:
    row: int  # row of the score file
    rank: int  # 1 = the highest utility
    record: Record | None  # None: not a valid record of the candidate file
    images: list[Embedded | str]  # an image, or why it cannot be shown
    images_left_out: int = 0  # images of the record beyond the ones shown


@dataclass(frozen=True)
class PageInput:
    data: ReportData
    candidates: Path
    budget: Budget
    groups: list[GroupRow] | None
    reliability: AnchorReliability | None
    harmful: list[SampleView]
    useful: list[SampleView]
    plots: dict[str, bytes]  # plot file name -> PNG
    notes: list[str]


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else "not measurable"


def pct(x: float) -> str:
    return f"{x:.1%}"


class Num(str):
    """A table cell holding a figure (right-aligned)."""


def _table(header: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    """A table from already-escaped cells."""
    header = list(header)
    head = "".join(f"<th>{h}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for c in row:
            if isinstance(c, Num):
                cells.append(f'<td class="num">{c}</td>')
            else:
                cells.append(f"<td>{c}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cls_attr = f' class="{cls}"' if cls else ""
    head_row = f"<tr>{head}</tr>" if any(header) else ""  # a key/value table has no header
    return f"<table{cls_attr}>{head_row}{''.join(body)}</table>"


def _plot(p: PageInput, name: str, alt: str) -> str:
    return (
        f'<figure><img class="plot" src="{png_uri(p.plots[name])}" alt="{e(alt)}" '
        f'data-file="{e(name)}"><figcaption>also written as <code>{e(name)}</code>'
        "</figcaption></figure>"
    )


def _pair(left: str, right: str) -> str:
    """A plot and its table side by side (stacked on a narrow window)."""
    return f'<div class="pair">{left}<div>{right}</div></div>'


def _summary(p: PageInput) -> str:
    d = p.data
    s = d.settings
    parts = [
        f"{d.n:,} candidates",
        f"{int(d.harmful.sum()):,} flagged harmful ({pct(d.harmful.mean())})",
        f"method {e(s.get('method', 'unknown'))}",
        f"proxy {e(s.get('proxy', 'unknown'))}",
        f"{e(s.get('n_anchors', '?'))} anchors",
    ]
    return (
        f"<p>Score file <code>{e(d.path)}</code>, candidates <code>{e(p.candidates)}</code>: "
        + ", ".join(parts)
        + ".</p>"
        + _audit(s)
    )


def _audit(s: dict) -> str:
    """How far a fast method's ranking is from exact's on this run (engine/audit.py)."""
    method = s.get("method", "exact")
    audit = s.get("audit")
    if method == "exact":
        return ""
    if not audit:
        return (
            f'<p class="warning">Method {e(method)} is an approximation and this file has no '
            "audit against exact (scored with <code>--audit 0</code>, or by an older "
            "stepsift): how faithfully it ranks on this data is unknown.</p>"
        )
    rho = audit["spearman"]
    cls = "" if rho >= AUDIT_WARN_BELOW else ' class="warning"'
    verdict = (
        ""
        if rho >= AUDIT_WARN_BELOW
        else (
            f" That is under {AUDIT_WARN_BELOW}: the ranking is not exact's; "
            "consider <code>--method exact</code>."
        )
    )
    return (
        f"<p{cls}>Audit: {audit['n']:,} random candidates scored again with "
        f"{e(audit['method'])} agree with {e(method)}'s ranking to Spearman ρ {rho:.3f}, "
        f"top-20% overlap {pct(audit['top20_overlap'])}.{verdict}</p>"
    )


def _distribution(p: PageInput) -> str:
    u = p.data.utility
    q = np.percentile(u, [0, 5, 50, 95, 100])
    threshold = p.data.settings.get("harmful_below", 0.0)
    rows = [
        ["candidates", Num(f"{p.data.n:,}")],
        ["min / 5% / median / 95% / max", Num(" / ".join(num(x) for x in q))],
        ["mean", Num(f"{num(float(u.mean()))}")],
        ["the score run's harmful threshold", Num(f"utility < {e(threshold)}")],
        ["flagged harmful", Num(f"{int(p.data.harmful.sum()):,} ({pct(p.data.harmful.mean())})")],
    ]
    rule = f'<p class="rule">{e(p.data.harmful_rule)} (as <code>select</code> flags them)</p>'
    return _pair(
        _plot(p, "utility_distribution.png", "histogram of utilities"),
        _table(["", ""], rows) + rule,
    )


def _budget(p: PageInput) -> str:
    b = p.budget
    n = p.data.n
    total = b.total_cost
    peak = float(np.max(b.curve.cum_utility)) if len(b.curve.cum_utility) else 0.0
    rows = []
    for m in b.marks:
        cost = [Num(f"{m.x:,.0f}"), Num(pct(m.x / total) if total else "-")]
        rows.append(
            [e(m.label), Num(f"{m.count:,}"), Num(pct(m.count / n))]
            + (cost if b.unit == "tokens" else [])  # else cost is the count: said once
            + [Num(num(m.y)), Num(pct(m.y / peak) if peak > 0 else "-")]
        )
    header = ["cut", "candidates kept", "of the pool"]
    if b.unit == "tokens":
        header += ["tokens kept", "of all tokens"]
    header += ["cumulative utility", "of the curve's peak"]
    return (
        _plot(p, "budget_curve.png", "cumulative utility against cumulative cost")
        + _table(header, rows)
        + f"<p>Candidates best first; x: {e(b.x_label)}, y: cumulative utility. "
        "<b>auto</b> is the cut <code>select --keep auto</code> makes: "
        f"{e(b.auto.reason)}.</p>"
    )


def _turns(record: Record) -> str:
    out = []
    for t in record.turns[:MAX_TURNS]:
        text = t.text
        if len(text) > MAX_TURN_CHARS:
            text = text[:MAX_TURN_CHARS] + f"\n… ({len(t.text):,} characters in all)"
        role = t.role if t.role in ("system", "user", "assistant") else "other"
        out.append(
            f'<div class="turn {role}"><span class="role">{e(t.role)}</span>'
            f"<pre>{e(text)}</pre></div>"
        )
    if len(record.turns) > MAX_TURNS:
        more = len(record.turns) - MAX_TURNS
        out.append(f'<p class="absent">… and {more:,} more turn(s), not shown</p>')
    return "".join(out)


def _images(view: SampleView, rid: str) -> str:
    out = []
    for k, img in enumerate(view.images, start=1):
        if isinstance(img, Embedded):
            out.append(
                f'<img class="sample-image" src="{img.uri}" width="{img.width}" '
                f'height="{img.height}" alt="image {k} of {e(rid)}">'
            )
        else:
            out.append(f'<p class="problem">image {k} not shown: {e(img)}</p>')
    if view.images_left_out:
        out.append(f'<p class="absent">… and {view.images_left_out:,} more image(s)</p>')
    return f'<div class="images">{"".join(out)}</div>' if out else ""


def _sample_groups(p: PageInput, row: int) -> str:
    """The sample's utility towards each anchor group, on one line."""
    g = p.data.groups
    if g is None:
        return ""
    parts = []
    for k, name in enumerate(g.names):
        u = float(g.utility[row, k])
        parts.append(f'{e(name)} <span class="{"pos" if u >= 0 else "neg"}">{num(u)}</span>')
    return f'<p class="groups-of">per anchor group: {" · ".join(parts)}</p>'


def _sample(p: PageInput, view: SampleView) -> str:
    d = p.data
    rid = d.ids[view.row]
    flagged = bool(d.harmful[view.row])
    stats = [f"utility <b>{num(float(d.utility[view.row]))}</b>"]
    if d.loss is not None:
        stats.append(f"loss {num(float(d.loss[view.row]))}")
    if d.tokens is not None:
        stats.append(f"{int(d.tokens[view.row]):,} tokens")
    if flagged:
        stats.append("<b>flagged harmful</b>")
    if d.truncated is not None and d.truncated[view.row]:
        stats.append("truncated by the proxy")
    if view.record is None:
        body = '<p class="problem">not a valid record of the candidate file</p>'
        source = ""
    else:
        body = _images(view, rid) + _turns(view.record)
        source = f'<p class="source">{e(view.record.source)}</p>'
    return (
        f'<article class="sample{" flagged" if flagged else ""}" data-id="{e(rid)}">'
        f"<h3>#{view.rank:,} of {d.n:,} · {e(rid)}</h3>"
        f'<p class="stats">{" · ".join(stats)}</p>{source}{body}{_sample_groups(p, view.row)}'
        "</article>"
    )


def _samples(p: PageInput, views: list[SampleView], empty: str) -> str:
    if not views:
        return f'<p class="absent">{e(empty)}</p>'
    return '<div class="samples">' + "".join(_sample(p, v) for v in views) + "</div>"


def _harmful(p: PageInput) -> str:
    n_flagged = int(p.data.harmful.sum())
    lead = (
        f"<p>{len(p.harmful)} of the {n_flagged:,} candidates flagged harmful (their step "
        "makes the anchor loss worse), lowest utility first.</p>"
        if p.harmful
        else ""
    )
    rule = f'<p class="rule">Rule: {e(p.data.harmful_rule)}.</p>'
    return lead + rule + _samples(p, p.harmful, "No candidate is flagged harmful.")


def _useful(p: PageInput) -> str:
    lead = f"<p>The {len(p.useful)} highest-utility candidate(s), best first.</p>"
    return lead + _samples(p, p.useful, "No candidates.")


def _groups(p: PageInput) -> str:
    if p.groups is None:
        return (
            '<p class="absent">Not available: this score file has no <code>group_utility'
            "</code> column. It is written when the anchors carry a group field (default "
            "<code>group</code>, see <code>score --anchor-group-field</code>), or when "
            "<code>score</code> finds groups among anchors without one (<code>--anchor-groups "
            "auto</code>, the default).</p>" + _no_groups_found(p)
        )
    found = bool(p.data.settings.get("anchor_groups_found"))
    has_kept = any(r.kept is not None for r in p.groups)
    rows = [
        [
            e(r.name),
            *([e(r.example or "-")] if found else []),
            Num(f"{r.size:,}") if r.size is not None else Num("-"),
            Num(f"{num(r.mean)}"),
            Num(f"{pct(r.helped)}"),
            Num(f"{pct(r.hurt)}"),
            *([Num(f"{r.kept:,}" if r.kept is not None else "-")] if has_kept else []),
        ]
        for r in p.groups
    ]
    header = [
        "anchor group",
        *(["an anchor in it"] if found else []),
        "anchors",
        "mean utility",
        "candidates helping it",
        "hurting it",
        *(["taken for it by select --keep 20%"] if has_kept else []),
    ]
    lead = (
        "<p>The anchors carry no group field, so <code>score</code> found these groups: "
        "anchors that the same candidates help, clustered (score file metadata "
        "<code>anchor_groups_found</code> lists every member).</p>"
        if found
        else ""
    )
    return (
        lead
        + "<p>Each candidate's utility towards each group of anchors: which skills the pool "
        "helps and which it hurts.</p>"
        + _table(header, rows)
        + _plot(p, "groups.png", "per-group mean utility and shares helped and hurt")
    )


def _no_groups_found(p: PageInput) -> str:
    found = p.data.settings.get("anchor_groups_found") or {}
    if not found or found.get("k"):
        return ""
    return f"<p>Groups were looked for and none kept: {e(str(found.get('reason', '')))}.</p>"


def _reliability(p: PageInput) -> str:
    r = p.reliability
    if r is None:
        return (
            '<p class="absent">Not available: this score file has no <code>fold_utility</code> '
            "column (with its <code>anchor_fold_sizes</code>). It is written by "
            "<code>score --anchor-folds K</code> (on by default).</p>"
        )
    f = r.figure
    rows = [
        ["Spearman correlation between the two halves' rankings (mean)", Num(f"{num(f.rho_mean)}")],
        [
            "its 5th to 95th percentile over the splits (half-size sets, not corrected)",
            Num(f"{num(f.rho_low)} .. {num(f.rho_high)}"),
        ],
        [
            "reliability of the whole anchor set (Spearman-Brown)",
            Num(f"{num(f.full_set_reliability)}"),
        ],
        ["anchors", Num(f"{f.n_anchors:,}")],
        ["random half splits", Num(f"{f.n_splits:,}")],
    ]
    negative = f"{int((p.data.utility < 0).sum()):,}"
    if r.n_harmful_beyond_chance is None:
        calibrated = Num(f"needs 2+ anchor folds ({negative} with utility < 0)")
    else:
        calibrated = Num(f"{r.n_harmful_beyond_chance:,} (of {negative} with utility < 0)")
    rows.append(["candidates harmful beyond chance (one-sided t test, 5%)", calibrated])
    verdict = (
        f'<p class="warning"><b>Warning:</b> {e(f.warning)}</p>'
        if f.warning
        else '<p class="ok">No warning: the anchor set is large enough and its two halves '
        "rank the candidates consistently.</p>"
    )
    return (
        "<p>The anchors are split in two halves many times; how well the halves agree on "
        "the ranking says whether the anchor set is large and clean enough to trust.</p>"
        + verdict
        + _table(["", ""], rows)
    )


def _value(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + f"… ({len(text):,} characters)"
    return e(text)


def _settings(p: PageInput) -> str:
    s = p.data.settings
    if not s:
        return '<p class="absent">The score file records no settings.</p>'
    rows = [[e(k), _value(v)] for k, v in sorted(s.items(), key=lambda kv: str(kv[0]))]
    return "<p>As recorded in the score file's metadata.</p>" + _table(
        ["setting", "value"], rows, "settings"
    )


def render(p: PageInput) -> str:
    """The whole page."""
    bodies = {
        "distribution": _distribution,
        "budget": _budget,
        "harmful": _harmful,
        "useful": _useful,
        "groups": _groups,
        "reliability": _reliability,
        "settings": _settings,
    }
    nav = "".join(f'<a href="#{sid}">{e(title)}</a>' for sid, title in SECTIONS)
    sections = "".join(
        f'<section id="{sid}"><h2>{e(title)}</h2>{bodies[sid](p)}</section>'
        for sid, title in SECTIONS
    )
    notes = ""
    if p.notes:
        items = "".join(f"<li>{e(n)}</li>" for n in p.notes)
        notes = f'<section id="notes"><h2>Notes</h2><ul class="notes">{items}</ul></section>'
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>stepsift report: {e(p.data.path.name)}</title><style>{CSS}</style></head>"
        f'<body><header id="summary"><h1>stepsift report</h1>{_summary(p)}'
        f"<nav>{nav}</nav></header>{notes}{sections}</body></html>\n"
    )
