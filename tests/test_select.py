"""Selection: --keep parsing, top-k choice, and byte-for-byte write-back from a score file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from stepsift.data import DataValidationError
from stepsift.engine.store import ScoreRows, write_scores
from stepsift.select.decide import choose
from stepsift.select.keep import Keep, parse_keep
from stepsift.select.topk import select

# --- parse_keep -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "fraction", "count"),
    [
        ("20%", 0.2, None),
        (" 20% ", 0.2, None),
        ("0.2", 0.2, None),
        (".2", 0.2, None),
        ("12.5%", 0.125, None),
        ("100%", 1.0, None),
        ("1.0", 1.0, None),
        ("5000", None, 5000),
        ("1", None, 1),
    ],
)
def test_parse_keep_accepts_percent_fraction_and_count(spec, fraction, count) -> None:
    """'20%' and '0.2' are the same fraction; a bare integer is a count."""
    keep = parse_keep(spec)
    assert keep.count == count
    if fraction is None:
        assert keep.fraction is None
    else:
        assert keep.fraction == pytest.approx(fraction, abs=1e-12)


@pytest.mark.parametrize("spec", ["", "abc", "-5", "-20%", "20 %", "1e3", "0.2.1", "5k", "2.5"])
def test_parse_keep_rejects_garbage_with_a_clear_message(spec: str) -> None:
    """Anything that is not a percentage, fraction or count raises, quoting the value."""
    with pytest.raises(
        ValueError, match=r"--keep .*percentage \(20%\).*fraction \(0\.2\).*count"
    ) as e:
        parse_keep(spec)
    assert repr(spec) in str(e.value)


@pytest.mark.parametrize("spec", ["0%", "0.0", "150%", "100.5%"])
def test_parse_keep_rejects_fractions_outside_0_to_100_percent(spec: str) -> None:
    """A fraction of 0 or above 100% is refused with a message naming the valid range."""
    with pytest.raises(ValueError, match=r"must be in \(0, 100%\]") as e:
        parse_keep(spec)
    assert repr(spec) in str(e.value)


def test_parse_keep_rejects_a_zero_count() -> None:
    """'--keep 0' would silently write an empty selection; it must be refused like '0%'."""
    with pytest.raises(ValueError):
        parse_keep("0")


def test_keep_size_is_the_floor_of_the_fraction_for_every_pool_size() -> None:
    """keep p% of n is exactly floor(p * n / 100), free of float error (e.g. 29% of 100)."""
    for p in (1, 7, 10, 20, 29, 33, 57, 99, 100):
        keep = parse_keep(f"{p}%")
        for n in range(0, 1201):
            assert keep.size(n) == p * n // 100, (p, n)
    assert parse_keep("0.2").size(1000) == 200
    assert parse_keep("5000").size(1200) == 1200  # a count never exceeds the pool
    assert parse_keep("7").size(1200) == 7


# --- choose ------------------------------------------------------------------------------


def test_choose_keeps_the_top_floor_fraction_by_utility() -> None:
    """With 24 candidates, 20% keeps the 4 highest utilities (floor of 4.8)."""
    rng = np.random.default_rng(3)
    ids = [f"r{i:02d}" for i in range(24)]
    utility = rng.normal(size=24)
    sel = choose(ids, utility, np.zeros(24, bool), parse_keep("20%"))
    expected = [ids[i] for i in np.argsort(-utility)[:4]]
    assert sel.kept_ids == expected
    assert sel.n_target == 4 and sel.n_candidates == 24
    assert sel.utility_max == pytest.approx(utility.max())
    assert sel.utility_min == pytest.approx(np.sort(utility)[-4])


def test_choose_breaks_ties_by_id() -> None:
    """Equal utilities are ranked by id ascending, whatever the input order."""
    ids = ["d", "b", "e", "a", "c", "f"]
    utility = np.array([1.0, 2.0, 1.0, 1.0, 2.0, 0.5])
    sel = choose(ids, utility, np.zeros(6, bool), Keep(count=4))
    assert sel.kept_ids == ["b", "c", "a", "d"]
    # the same set, reversed input order: same answer
    sel2 = choose(ids[::-1], utility[::-1].copy(), np.zeros(6, bool), Keep(count=4))
    assert sel2.kept_ids == sel.kept_ids


def test_choose_drop_harmful_removes_them_and_reports_the_count() -> None:
    """--drop-harmful keeps none of the harmful records of the top, and says how many left."""
    ids = [f"x{i}" for i in range(10)]
    utility = np.arange(10, 0, -1, dtype=float)  # x0 best ... x9 worst
    harmful = np.zeros(10, bool)
    harmful[[1, 3, 8]] = True
    plain = choose(ids, utility, harmful, Keep(count=5))
    assert plain.kept_ids == ["x0", "x1", "x2", "x3", "x4"]
    assert plain.n_dropped_harmful == 0
    sel = choose(ids, utility, harmful, Keep(count=5), drop_harmful=True)
    assert sel.kept_ids == ["x0", "x2", "x4"]
    assert sel.n_dropped_harmful == 2
    assert sel.n_harmful == 3
    assert sel.utility_min == 6.0 and sel.utility_max == 10.0
    assert "dropped as harmful: 2" in "\n".join(sel.lines())
    assert sel.lines()[0] == "kept 3 of 10 candidates (target 5)"


def test_choose_with_nothing_kept_has_no_utility_range() -> None:
    """Keeping zero records reports NaN bounds and prints no utility range line."""
    sel = choose(["a", "b"], np.array([1.0, 2.0]), np.array([True, True]), Keep(count=2), True)
    assert sel.kept_ids == [] and sel.n_dropped_harmful == 2
    assert math.isnan(sel.utility_min) and math.isnan(sel.utility_max)
    assert not any("utility range" in line for line in sel.lines())


# --- select on real files ----------------------------------------------------------------


# Odd spacing, key order, unicode and escapes on purpose: a re-serialiser would change them.
def _plain_line(i: int) -> str:
    pad = " " * (i % 3)
    return (
        f'{{"id":{pad}"r{i:02d}",  "prompt": "caf\u00e9 \\u00e9 q{i}", '
        f'"response":"a{i}" ,"extra": {{"z": {i}.50, "a": [1e3,  2]}}}}'
    )


def write_scores_for(
    path: Path, ids: list[str], utility: list[float], harmful_below: float = 0.0
) -> Path:
    rows = ScoreRows()
    n = len(ids)
    rows.extend(ids, utility, [1.0] * n, [10] * n, [False] * n)
    write_scores(rows, path, harmful_below, {"test": True})
    return path


@pytest.fixture
def pool(tmp_path: Path) -> tuple[Path, list[str], list[str], np.ndarray]:
    """A 24-record JSONL file, its lines, ids, and a score file with known utilities."""
    lines = [_plain_line(i) for i in range(24)]
    ids = [f"r{i:02d}" for i in range(24)]
    src = tmp_path / "pool.jsonl"
    src.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    utility = np.random.default_rng(7).permutation(24).astype(float) - 5.0  # distinct, some < 0
    order = np.random.default_rng(8).permutation(24)  # score rows in another order
    write_scores_for(tmp_path / "s.parquet", [ids[i] for i in order], list(utility[order]))
    return src, lines, ids, utility


def test_select_jsonl_writes_the_top_20_percent_byte_for_byte(tmp_path: Path, pool) -> None:
    """The output holds exactly the top floor(20% of 24) = 4 lines, each identical to its input."""
    src, lines, ids, utility = pool
    out = tmp_path / "out" / "sel.jsonl"
    sel = select(src, tmp_path / "s.parquet", "20%", out)
    top = set(np.argsort(-utility)[:4].tolist())
    expected = [lines[i] for i in range(24) if i in top]  # input order
    assert out.read_bytes() == ("\n".join(expected) + "\n").encode("utf-8")
    assert sorted(sel.kept_ids) == sorted(ids[i] for i in top)
    assert sel.utility_max == 18.0 and sel.utility_min == 15.0


def test_select_order_utility_writes_best_first(tmp_path: Path, pool) -> None:
    """--order utility writes the kept lines best first; the default keeps the input order."""
    src, lines, _, utility = pool
    by_utility = tmp_path / "u.jsonl"
    by_input = tmp_path / "i.jsonl"
    select(src, tmp_path / "s.parquet", "6", by_utility, order="utility")
    select(src, tmp_path / "s.parquet", "6", by_input, order="input")
    best = np.argsort(-utility)[:6].tolist()
    assert by_utility.read_text(encoding="utf-8").splitlines() == [lines[i] for i in best]
    assert by_input.read_text(encoding="utf-8").splitlines() == [lines[i] for i in sorted(best)]
    assert best != sorted(best)  # the two orders really differ for this data
    with pytest.raises(ValueError, match="unknown order"):
        select(src, tmp_path / "s.parquet", "6", tmp_path / "x.jsonl", order="random")


def test_select_drop_harmful_on_a_score_file(tmp_path: Path) -> None:
    """The harmful column of the score file decides what --drop-harmful removes."""
    ids = ["a", "b", "c", "d"]
    src = tmp_path / "p.jsonl"
    src.write_text(
        "".join(json.dumps({"id": i, "prompt": "q", "response": "r"}) + "\n" for i in ids)
    )
    # harmful_below=2.5 marks a (1.0) and b (2.0) harmful
    write_scores_for(tmp_path / "s.parquet", ids, [1.0, 2.0, 3.0, 4.0], harmful_below=2.5)
    out = tmp_path / "o.jsonl"
    sel = select(src, tmp_path / "s.parquet", "3", out, drop_harmful=True)
    assert sel.kept_ids == ["d", "c"] and sel.n_dropped_harmful == 1 and sel.n_harmful == 2
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["c", "d"]


def test_select_json_array_keeps_each_element_text(tmp_path: Path) -> None:
    """For a JSON-array input the output is a JSON array of the input elements' exact text."""
    elements = [
        '{\n    "id": "e0",\n    "prompt": "zero",\n    "response": "0"\n  }',
        '{"id": "e1", "prompt": "one, with ] and }", "response":  "1"}',
        '{ "response": "2", "prompt": "two \\u00e9",\n "id": "e2", "x": [1.50, 2e3] }',
        '{"id":"e3","prompt":"three","response":"3"}',
        '{"id": "e4",  "prompt": "four", "response": "4", "meta": {"b": 1, "a": 2}}',
    ]
    src = tmp_path / "pool.json"
    src.write_text("  [\n  " + " ,\n\n  ".join(elements) + "\n]\n", encoding="utf-8")
    write_scores_for(tmp_path / "s.parquet", ["e4", "e3", "e2", "e1", "e0"], [0, 5, 4, 1, 3])
    out = tmp_path / "sel.json"
    select(src, tmp_path / "s.parquet", "60%", out)  # 3 of 5: e3, e2, e0
    text = out.read_text(encoding="utf-8")
    kept = json.loads(text)
    assert isinstance(kept, list) and [k["id"] for k in kept] == ["e0", "e2", "e3"]
    for element in (elements[0], elements[2], elements[3]):
        assert element in text
    for element in (elements[1], elements[4]):
        assert element not in text


def test_select_score_for_an_unknown_id_is_refused(tmp_path: Path, pool) -> None:
    """A score whose id is not in the candidates names that id and suggests another file."""
    src, _, ids, utility = pool
    write_scores_for(tmp_path / "bad.parquet", [*ids, "ghost"], [*utility, 1.0])
    out = tmp_path / "o.jsonl"
    with pytest.raises(ValueError, match=r"1 scored id\(s\) are not in .*'ghost'.*another file"):
        select(src, tmp_path / "bad.parquet", "20%", out)
    assert not out.exists()


def test_select_candidate_without_a_score_is_refused(tmp_path: Path, pool) -> None:
    """A candidate with no score is named, with the count of unscored records."""
    src, _, ids, utility = pool
    write_scores_for(tmp_path / "bad.parquet", ids[:-2], list(utility[:-2]))
    with pytest.raises(ValueError, match=r"2 record\(s\) have no score in .*'r22'"):
        select(src, tmp_path / "bad.parquet", "20%", tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()


def test_select_doubled_score_id_is_refused(tmp_path: Path, pool) -> None:
    """An id scored twice is named rather than silently counted twice."""
    src, _, ids, utility = pool
    write_scores_for(tmp_path / "bad.parquet", [*ids, "r05"], [*utility, 99.0])
    with pytest.raises(ValueError, match=r"1 id\(s\) scored more than once, e\.g\. 'r05'"):
        select(src, tmp_path / "bad.parquet", "20%", tmp_path / "o.jsonl")


def test_select_doubled_candidate_id_is_refused(tmp_path: Path, pool) -> None:
    """A candidate file with the same id twice is invalid input naming both lines."""
    src, lines, _, _ = pool
    src.write_text("\n".join([*lines, lines[3]]) + "\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"pool\.jsonl:25.*duplicate id 'r03'.*line 4"):
        select(src, tmp_path / "s.parquet", "20%", tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()
