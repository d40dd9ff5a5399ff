"""The bench's outputs, written to `--out DIR` at the end of a run:

    results.json   one object per fine-tuning run: method, keep, protocol, seed, accuracy,
                   train_seconds, select_seconds, train_samples, wrong_share, target_share
                   (and noise, base_accuracy, steps, ...)
    summary.json   per noise rate: the base's accuracy, noise-detection figures, the judge,
                   and where the runner gives them the estimator audit and the proxy's
                   competence
    results.md     the paper-style table (mean and standard deviation over seeds), per noise
                   rate and protocol a paired-difference table (each method against full-SFT
                   and against random at its keep fraction: mean difference over seeds, 95%
                   t-interval, win/loss/tie; bench/stats.py), and the noise-detection tables
    pareto.png     accuracy against total compute (selection + training), per protocol

Total time = selection + training. Selection costs are charged as `runner.py` documents.
The oracle rows (oracle_*) read the hidden noise tags: they bound what selection can gain and
are not methods.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from stepsift.bench.stats import Interval, difference_to_constant, paired_difference, verdict
from stepsift.data.atomic import atomic_write_text

RESULT_FIELDS = (
    "method",
    "keep",
    "protocol",
    "seed",
    "accuracy",
    "train_seconds",
    "select_seconds",
    "train_samples",
    "wrong_share",
    "target_share",
)

# the tables' row order; methods not listed come after, in alphabetical order
METHOD_ORDER = (
    "full",
    "random",
    "oracle_clean_all",
    "oracle_clean",
    "oracle_target",
    "judge",
    "loss_filter",
    "less",
    "deita",
    "ifd",
    "high_loss",
    "ost",
    "stepsift",
    "ost_drop_harmful",
    "ost_diverse",
    "ost_auto",
)
NAN = float("nan")


def group_runs(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds of each (noise, protocol, method, keep)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["noise"], r["protocol"], r["method"], r["keep"])].append(r)
    out = []
    for (noise, protocol, method, keep), rs in groups.items():
        acc = np.array([r["accuracy"] for r in rs])
        train = np.array([r["train_seconds"] for r in rs])
        select = np.array([r["select_seconds"] for r in rs])
        out.append(
            {
                "noise": noise,
                "protocol": protocol,
                "method": method,
                "keep": keep,
                "n_seeds": len(rs),
                "accuracy": float(acc.mean()),
                "accuracy_sd": float(acc.std(ddof=1)) if len(rs) > 1 else float("nan"),
                "gain": float(acc.mean() - rs[0]["base_accuracy"]),
                "train_seconds": float(train.mean()),
                "select_seconds": float(select.mean()),
                "total_seconds": float(train.mean() + select.mean()),
                "train_samples": float(np.mean([r["train_samples"] for r in rs])),
                "wrong_share": _mean(rs, "wrong_share"),
                "target_share": _mean(rs, "target_share"),
                "redundant_share": _mean(rs, "redundant_share"),
            }
        )
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    out.sort(
        key=lambda g: (
            g["noise"], g["protocol"], order.get(g["method"], len(order)), g["method"], g["keep"]
        )
    )  # fmt: skip
    return out


def _mean(rows: list[dict], field: str) -> float:
    """Mean of a field over runs; nan when a run lacks it (older runs.jsonl lines)."""
    values = [r.get(field) for r in rows]
    return NAN if any(v is None for v in values) else float(np.mean(values))


FIXED_LABELS = {
    "full": "full",
    "judge": "judge",
    "ost_auto": "ost_auto (auto budget)",
    "oracle_clean_all": "oracle: all clean",
    "oracle_target": "oracle: clean target",
}


def label(g: dict) -> str:
    if g["method"] in FIXED_LABELS:
        return FIXED_LABELS[g["method"]]
    if g["method"] == "stepsift":
        return f"stepsift default {g['keep']:.0%}"
    if g["method"] in ("random", "oracle_clean", "loss_filter"):
        return f"{g['method']} {g['keep']:.0%}"
    return f"{g['method']} top-{g['keep']:.0%}"


def _sd(x: float) -> str:
    return "" if math.isnan(x) else f" ± {x * 100:.1f}"


def _share(x: float | None) -> str:
    return "" if x is None or math.isnan(x) else f"{x:.0%}"


def results_table(groups: list[dict], noise: float, protocol: str, base: float) -> str:
    rows = [g for g in groups if g["noise"] == noise and g["protocol"] == protocol]
    if not rows:
        return ""
    n_seeds = max(g["n_seeds"] for g in rows)
    lines = [
        f"Protocol {protocol} ({'same epochs' if protocol == 'A' else 'same steps as full'}), "
        f"noise {noise:.0%}, {n_seeds} seed(s); base accuracy {base * 100:.1f}",
        "",
        "| method | data kept | wrong in kept | target in kept | repeats in kept | accuracy "
        "| gain over base | training s | total s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in rows:
        lines.append(
            f"| {label(g)} | {g['keep']:.0%} ({g['train_samples']:.0f}) | "
            f"{_share(g['wrong_share'])} | {_share(g.get('target_share'))} | "
            f"{_share(g.get('redundant_share'))} | "
            f"{g['accuracy'] * 100:.1f}{_sd(g['accuracy_sd'])} | "
            f"{g['gain'] * 100:+.1f} | {g['train_seconds']:.0f} | {g['total_seconds']:.0f} |"
        )
    if any(g["method"].startswith("oracle") for g in rows):
        lines += ["", "Oracle rows read the hidden noise tags: they bound what selection can "
                  "gain and are not methods."]  # fmt: skip
    return "\n".join(lines)


def _interval(iv: Interval) -> str:
    """A difference in accuracy points with its interval: "+2.1 (+0.4 .. +3.8)"."""
    if iv.n == 0 or math.isnan(iv.mean):
        return ""
    if math.isnan(iv.low):
        return f"{iv.mean * 100:+.1f} (n={iv.n}, no interval)"
    return f"{iv.mean * 100:+.1f} ({iv.low * 100:+.1f} .. {iv.high * 100:+.1f})"


def _verdict(iv: Interval) -> str:
    return "" if iv.n == 0 else verdict(iv)


def paired_table(
    groups: list[dict], rows: list[dict], noise: float, protocol: str, base: float
) -> str:
    """Each method/keep row against full-SFT and against random at its keep fraction: the mean
    accuracy difference over seeds (runs paired by seed), its 95% t-interval and the verdict."""
    runs = [r for r in rows if float(r["noise"]) == noise and r["protocol"] == protocol]
    mine = [g for g in groups if g["noise"] == noise and g["protocol"] == protocol]
    if not runs or not mine:
        return ""
    fulls = [g for g in mine if g["method"] == "full"]
    randoms = {round(float(g["keep"]), 6): g for g in mine if g["method"] == "random"}
    lines = [
        f"Paired differences, protocol {protocol}, noise {noise:.0%}: accuracy points, mean "
        "over seeds (runs paired by seed) with 95% t-interval; win/loss only when the "
        "interval excludes 0.",
        "",
    ]
    full_key = (fulls[0]["method"], fulls[0]["keep"]) if fulls else None
    if full_key is not None:
        iv = difference_to_constant(runs, full_key, base)
        lines += [f"Full-SFT against base: {_interval(iv)}, {_verdict(iv)} (n={iv.n})", ""]
    lines += [
        "| method | vs full-SFT | verdict | vs random at same keep | verdict |",
        "|---|---|---|---|---|",
    ]
    for g in mine:
        key = (g["method"], g["keep"])
        if g["method"] == "full":
            continue
        cells = ["", "", "", ""]
        if full_key is not None:
            iv = paired_difference(runs, key, full_key)
            cells[:2] = [_interval(iv), _verdict(iv)]
        ref = randoms.get(round(float(g["keep"]), 6))
        if ref is not None and g["method"] != "random":
            iv = paired_difference(runs, key, (ref["method"], ref["keep"]))
            cells[2:] = [_interval(iv), _verdict(iv)]
        lines.append(f"| {label(g)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def audit_line(audit: dict) -> str:
    """How far the estimator OST scored with is from the exact utility on a random sample."""
    return (
        f"OST scored with {audit['estimator']}; audit: {audit['n']} random candidates scored "
        f"exactly, Spearman ρ {audit['spearman']:.3f}, top-20% overlap "
        f"{audit['top20_overlap']:.0%}"
    )


def proxy_line(proxy: dict) -> str:
    """The proxy's competence, from what the runner measured (each part where present)."""
    parts = []
    if proxy.get("start"):
        parts.append(f"{proxy['start']} start")
    if proxy.get("anchor_loss") is not None:
        parts.append(f"anchor loss {proxy['anchor_loss']:.3f}")
    if proxy.get("misread_auroc") is not None:
        parts.append(f"misread AUROC {proxy['misread_auroc']:.3f}")
    return "Proxy: " + ", ".join(parts) if parts else ""


def detection_table(det: dict) -> str:
    if det["wrong_share_pool"] == 0:
        return (
            "Noise detection: no wrong sample in the pool, so no AUROC; "
            f"OST `harmful` flags: {det['harmful_flagged']}."
        )
    types = sorted(next(iter(det["per_type"].values())))
    lines = [
        "Noise detection: AUROC of each ranking, clean above wrong (0.5 = chance). "
        f"{det['wrong_share_pool']:.0%} of the pool is wrong; near-duplicates are not wrong.",
        "",
        f"| ranking | all wrong | {' | '.join(types)} |",
        "|" + "---|" * (len(types) + 2),
    ]
    for name, auroc in det["auroc"].items():
        per = det["per_type"][name]
        lines.append(
            f"| {name} | {auroc:.3f} | " + " | ".join(f"{per[t]:.3f}" for t in types) + " |"
        )
    lines += [
        "",
        f"OST `harmful` flags: {det['harmful_flagged']}, of which wrong: "
        f"{det['harmful_precision']:.1%} (pool: {det['wrong_share_pool']:.1%})",
    ]
    return "\n".join(lines + diagnostics_lines(det))


def diagnostics_lines(det: dict) -> list[str]:
    """Harmful flags before and after calibration, anchor reliability, per-group utility."""
    out: list[str] = []
    rules = [
        ("harmful_negative", "utility < 0 (before calibration)"),
        ("harmful_calibrated", "calibrated: below 0 beyond chance, one-sided 0.05"),
        ("harmful_calibrated_bh", "calibrated, Benjamini-Hochberg FDR 0.05"),
        ("harmful_default", "`select`'s default (evidence: calibrated and a loss misfit)"),
    ]
    present = [(k, name) for k, name in rules if k in det]
    if present:
        out += [
            "",
            "Harmful flags against the injected noise (wrong = not clean, not a near-duplicate):",
            "",
            "| rule | flagged | precision | recall |",
            "|---|---|---|---|",
        ]
        for key, name in present:
            q = det[key]
            out.append(
                f"| {name} | {q['flagged']} | {_pct(q['precision'])} | {_pct(q['recall'])} |"
            )
    rel = det.get("reliability")
    if rel:
        out += [
            "",
            f"Anchor reliability ({rel['n_anchors']} anchors, {rel['n_splits']} random "
            f"split-halves of the folds): split-half Spearman {rel['rho_mean']:.3f} "
            f"(5-95%: {rel['rho_low']:.3f} .. {rel['rho_high']:.3f}), whole set "
            f"{rel['full_set_reliability']:.3f} (Spearman-Brown)"
            + (f"; warning: {rel['warning']}" if rel.get("warning") else ""),
        ]
    groups = det.get("group_utility")
    if groups:
        names = groups["groups"]
        out += [
            "",
            "Mean utility towards each anchor group (x 1e3), by noise type of the candidate:",
            "",
            "| candidates | " + " | ".join(names) + " |",
            "|---" * (len(names) + 1) + "|",
        ]
        for tag, values in groups["by_noise"].items():
            out.append(f"| {tag} | " + " | ".join(f"{v * 1e3:.3f}" for v in values) + " |")
    return out


def _pct(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1%}"


def sweep_table(groups: list[dict], context: dict, protocol: str) -> str:
    """Accuracy of each selector across the noise rates, beside the base and the share of
    wrong samples in the pool: where selection starts to pay."""
    levels = sorted(float(k) for k in context["levels"])
    rows = [g for g in groups if g["protocol"] == protocol]
    if len(levels) < 2 or not rows:
        return ""
    by_key: dict[str, dict[float, dict]] = {}
    for g in rows:
        by_key.setdefault(label(g), {})[g["noise"]] = g
    level = {n: context["levels"][f"{n:g}"] for n in levels}
    lines = [
        f"Noise sweep, protocol {protocol}: test accuracy (%) by noise rate",
        "",
        "| method | " + " | ".join(f"{n:.0%}" for n in levels) + " |",
        "|---" * (len(levels) + 1) + "|",
        "| base | " + " | ".join(f"{level[n]['base_accuracy'] * 100:.1f}" for n in levels) + " |",
        "| wrong in pool | "
        + " | ".join(f"{level[n]['detection']['wrong_share_pool']:.0%}" for n in levels)
        + " |",
    ]
    for name, per in by_key.items():
        cells = [
            f"{per[n]['accuracy'] * 100:.1f}{_sd(per[n]['accuracy_sd'])}" if n in per else ""
            for n in levels
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(groups: list[dict], context: dict, rows: list[dict] | None = None) -> str:
    """The results page; `rows` (the runs themselves) adds the paired-difference tables."""
    parts = ["# stepsift bench results", ""]
    if context.get("protocol_note"):
        parts += [f"Protocol: {context['protocol_note']}", ""]
    for protocol in ("A", "B"):
        table = sweep_table(groups, context, protocol)
        if table:
            parts += [table, ""]
    for noise_key, level in context["levels"].items():
        noise = float(noise_key)
        for protocol in ("A", "B"):
            table = results_table(groups, noise, protocol, level["base_accuracy"])
            if table:
                parts += [table, ""]
            paired = paired_table(groups, rows or [], noise, protocol, level["base_accuracy"])
            if paired:
                parts += [paired, ""]
        if level.get("audit"):
            parts += [audit_line(level["audit"]), ""]
        line = proxy_line(level["proxy"]) if level.get("proxy") else ""
        if line:
            parts += [line, ""]
        parts += [detection_table(level["detection"]), ""]
    judge = context.get("judge")
    if judge:
        parts.append(
            f"Judge: target architecture fine-tuned on {judge['settings']['n_train']} clean "
            f"problems of its own ({judge['train_seconds']:.0f}s, not charged); test accuracy "
            f"{judge['test_accuracy'] * 100:.1f}. Its inference over the pool is charged."
        )
    m = context["machine"]
    parts += [
        "",
        f"Machine: {m['platform']}, {m['processor']}, torch {m['torch']}, "
        f"{m['threads']} threads. This invocation: {context['seconds'] / 60:.1f} min "
        "(finished runs and cached stages are not redone).",
    ]
    return "\n".join(parts) + "\n"


def pareto_plot(groups: list[dict], context: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    protocols = sorted({g["protocol"] for g in groups})
    noise = float(next(iter(context["levels"])))
    fig, axes = plt.subplots(1, len(protocols), figsize=(6 * len(protocols), 4.5), squeeze=False)
    for ax, protocol in zip(axes[0], protocols, strict=True):
        rows = [g for g in groups if g["protocol"] == protocol and g["noise"] == noise]
        for method in dict.fromkeys(g["method"] for g in rows):
            pts = sorted((g for g in rows if g["method"] == method), key=lambda g: g["keep"])
            x = [g["total_seconds"] for g in pts]
            y = [g["accuracy"] * 100 for g in pts]
            ax.plot(x, y, "o-" if len(pts) > 1 else "o", label=method)
            for g in pts:
                if method in ("ost", "stepsift", "random"):
                    ax.annotate(
                        f"{g['keep']:.0%}",
                        (g["total_seconds"], g["accuracy"] * 100),
                        fontsize=7,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
        base = context["levels"][f"{noise:g}"]["base_accuracy"] * 100
        ax.axhline(base, color="grey", linestyle=":", label="base")
        ax.set_xlabel("total compute: selection + training (s)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"protocol {protocol}, noise {noise:.0%}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(cfg: Any, rows: list[dict], context: dict) -> str:
    """Write results.json, summary.json, results.md and pareto.png; return the Markdown."""
    out = Path(cfg.out)
    rows = sorted(rows, key=lambda r: r["key"])
    atomic_write_text(out / "results.json", json.dumps(rows, indent=1) + "\n")
    atomic_write_text(out / "summary.json", json.dumps(context, indent=1) + "\n")
    groups = group_runs(rows)
    text = markdown(groups, context, rows)
    atomic_write_text(out / "results.md", text)
    if groups:
        pareto_plot(groups, context, out / "pareto.png")
    print(text)
    return text
