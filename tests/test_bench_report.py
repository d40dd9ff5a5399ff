"""bench/report.py on hand-made runs of 3 seeds: the paired-difference table's numbers and
verdicts, the new columns and labels, the audit and proxy lines, and old rows without
`target_share`."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from stepsift.bench.report import RESULT_FIELDS, group_runs, label, markdown, write_reports

BASE = 0.50
# accuracy by seed 0, 1, 2; hand-computed differences in the test below
ACCURACY = {
    ("full", 1.0): (0.60, 0.62, 0.64),
    ("random", 0.2): (0.55, 0.56, 0.60),
    ("ost", 0.2): (0.66, 0.66, 0.70),
    ("loss_filter", 0.2): (0.61, 0.62, 0.66),
    ("oracle_clean_all", 0.6): (0.70, 0.71, 0.75),
}


def fake_rows() -> list[dict]:
    rows = []
    for (method, keep), accs in ACCURACY.items():
        for seed, acc in enumerate(accs):
            row = {
                "key": f"0.4|{method}|{keep}|A|{seed}",
                "noise": 0.4,
                "protocol": "A",
                "method": method,
                "keep": keep,
                "seed": seed,
                "accuracy": acc,
                "base_accuracy": BASE,
                "train_seconds": 10.0,
                "select_seconds": 1.0,
                "train_samples": round(keep * 100),
                "wrong_share": 0.0 if method.startswith("oracle") else 0.4,
                "target_share": 0.5,
            }
            if method == "loss_filter":
                del row["target_share"]  # an old run: the field came later
            rows.append(row)
    # one seed only: a difference without an interval
    rows.append({**rows[-1], "key": "0.4|ifd|0.2|A|0", "method": "ifd", "keep": 0.2,
                 "seed": 0, "accuracy": 0.58})  # fmt: skip
    return rows


def context(**level_extra) -> dict:
    level = {
        "base_accuracy": BASE,
        "detection": {"wrong_share_pool": 0, "harmful_flagged": 0},
        **level_extra,
    }
    return {
        "machine": {"platform": "test", "processor": "cpu", "torch": "x", "threads": 2},
        "seconds": 60.0,
        "levels": {"0.4": level},
    }


def paired_rows(md: str) -> dict[str, list[str]]:
    """The paired table's cells by method label."""
    start = md.index("| method | vs full-SFT |")
    out = {}
    for line in md[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = cells[1:]
    return out


def test_paired_table_numbers_and_verdicts() -> None:
    rows = fake_rows()
    md = markdown(group_runs(rows), context(), rows)
    assert "Paired differences, protocol A, noise 40%" in md
    # full - base per seed: 0.10, 0.12, 0.14; mean 12, half-width 4.303 * 2 / sqrt 3 = 4.97
    assert "Full-SFT against base: +12.0 (+7.0 .. +17.0), win (n=3)" in md
    table = paired_rows(md)
    assert "full" not in table  # no row against itself
    # random - full: -5, -6, -4 -> -5 -+ 2.48
    assert table["random 20%"] == ["-5.0 (-7.5 .. -2.5)", "loss", "", ""]
    # ost - full: +6, +4, +6 -> 5.33 -+ 2.87; ost - random: +11, +10, +10 -> 10.33 -+ 1.43
    assert table["ost top-20%"] == ["+5.3 (+2.5 .. +8.2)", "win", "+10.3 (+8.9 .. +11.8)", "win"]
    # loss_filter - full: +1, 0, +2 -> 1 -+ 2.48 (a tie); - random: +6 on every seed
    assert table["loss_filter 20%"] == ["+1.0 (-1.5 .. +3.5)", "tie", "+6.0 (+6.0 .. +6.0)",
                                        "win"]  # fmt: skip
    # no random run at 60%: no second comparison
    assert table["oracle: all clean"] == ["+10.0 (+7.5 .. +12.5)", "win", "", ""]
    # one seed: the difference, no interval, a tie
    assert table["ifd top-20%"] == ["-2.0 (n=1, no interval)", "tie", "+3.0 (n=1, no interval)",
                                    "tie"]  # fmt: skip
    assert "Paired differences, protocol B" not in md


def test_table_columns_labels_order_and_old_rows() -> None:
    rows = fake_rows()
    groups = group_runs(rows)
    assert [g["method"] for g in groups] == [
        "full", "random", "oracle_clean_all", "loss_filter", "ifd", "ost"
    ]  # fmt: skip
    by = {g["method"]: g for g in groups}
    assert by["ost"]["target_share"] == 0.5 and by["ost"]["wrong_share"] == pytest.approx(0.4)
    assert by["loss_filter"]["target_share"] != by["loss_filter"]["target_share"]  # nan
    md = markdown(groups, context(), rows)
    assert "| wrong in kept | target in kept | repeats in kept |" in md
    assert "| oracle: all clean | 60% (60) | 0% | 50% |  |" in md
    assert "| loss_filter 20% | 20% (20) | 40% |  |  |" in md  # no target share: blank
    assert "Oracle rows read the hidden noise tags" in md
    labels = {
        "oracle_clean": "oracle_clean 20%",
        "oracle_target": "oracle: clean target",
        "less": "less top-20%",
        "judge": "judge",
    }
    for method, text in labels.items():
        assert label({"method": method, "keep": 0.2}) == text


def test_audit_proxy_and_protocol_lines() -> None:
    rows = fake_rows()
    audit = {"estimator": "first-order", "n": 64, "spearman": 0.9123, "top20_overlap": 0.75}
    ctx = context(audit=audit, proxy={"start": "pretrained", "anchor_loss": 1.2345,
                                      "misread_auroc": None})  # fmt: skip
    ctx["protocol_note"] = "same steps as full-SFT for every subset"
    md = markdown(group_runs(rows), ctx, rows)
    assert "Protocol: same steps as full-SFT for every subset" in md.split("\n\n")[1]
    assert (
        "OST scored with first-order; audit: 64 random candidates scored exactly, "
        "Spearman ρ 0.912, top-20% overlap 75%"
    ) in md
    assert "Proxy: pretrained start, anchor loss 1.234" in md and "misread" not in md
    ctx["levels"]["0.4"]["proxy"] = {"start": "scratch", "anchor_loss": 2.0, "misread_auroc": 0.8}
    assert "Proxy: scratch start, anchor loss 2.000, misread AUROC 0.800" in markdown(
        group_runs(rows), ctx, rows
    )
    plain = markdown(group_runs(rows), context(), rows)
    assert "audit:" not in plain and "Proxy:" not in plain and "Protocol:" not in plain


def test_write_reports_writes_the_paired_table(tmp_path: Path) -> None:
    rows = fake_rows()
    text = write_reports(SimpleNamespace(out=tmp_path), rows, context())
    assert (tmp_path / "results.md").read_text() == text
    assert "Full-SFT against base: +12.0 (+7.0 .. +17.0), win (n=3)" in text
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved) == len(rows)
    assert all(set(RESULT_FIELDS) - {"target_share"} <= set(r) for r in saved)
    assert {"wrong_share", "target_share"} <= set(RESULT_FIELDS)
