"""Selections are written back in the input's container, each record byte-for-byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepsift.data import read_records, write_records, write_rejected

# Odd spacing, key order, unicode and escapes on purpose: a re-serialiser would change them.
JSONL_ROWS = [
    '{"id": 1,  "conversations": [{"from": "human", "value": "caf\u00e9 \\u00e9"},'
    ' {"from": "gpt", "value": "A"}], "meta": {"z": 1, "a": [1.50, 2e3]}}',
    '{"conversations":[{"from":"human","value":"Q2"},{"from":"gpt","value":"A2"}],"id":"two"}',
    '{ "id" : "3", "conversations" : [ {"from": "human", "value": "\\ud83d\\ude00"},'
    ' {"from": "gpt", "value": "\U0001f600"} ] }',
]

JSON_TEXT = """[
    {
        "prompt": "first",
        "response": "one",
        "extra": {"keep": [1, 2,   3]}
    },
  {"prompt": "second", "response": "two"}   ,
    {"prompt": "third, with ] and }",
     "response": "three"}
]
"""


def test_jsonl_round_trip_of_a_subset_is_byte_identical(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(("\n".join(JSONL_ROWS) + "\n").encode("utf-8"))
    result = read_records(src)
    assert result.problems == [] and result.container == "jsonl"
    subset = [result.records[0], result.records[2]]
    out = tmp_path / "out" / "sel.jsonl"
    assert write_records(subset, out, container=result.container) == 2
    data = out.read_bytes()
    assert data == (JSONL_ROWS[0] + "\n" + JSONL_ROWS[2] + "\n").encode("utf-8")
    assert [json.loads(line)["id"] for line in data.decode().splitlines()] == [1, "3"]
    again = read_records(out)
    assert [r.raw for r in again.records] == [JSONL_ROWS[0], JSONL_ROWS[2]]


def test_json_array_round_trip_of_a_subset(tmp_path: Path) -> None:
    src = tmp_path / "in.json"
    src.write_text(JSON_TEXT, encoding="utf-8")
    result = read_records(src)
    assert result.problems == [] and result.container == "json"
    first, _, third = result.records
    out = tmp_path / "sel.json"
    write_records([first, third], out, container="json")
    written = out.read_text(encoding="utf-8")
    assert first.raw in written and third.raw in written and first.raw in JSON_TEXT
    assert written == "[\n" + first.raw + ",\n" + third.raw + "\n]\n"
    parsed = json.loads(written)
    assert [o["prompt"] for o in parsed] == ["first", "third, with ] and }"]
    assert parsed[0]["extra"] == {"keep": [1, 2, 3]}
    again = read_records(out)
    assert [r.raw for r in again.records] == [first.raw, third.raw]
    assert [r.source.line for r in again.records] == [2, 2 + first.raw.count("\n") + 1]


def test_write_replaces_existing_file_and_leaves_no_temp(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(JSONL_ROWS) + "\n", encoding="utf-8")
    records = read_records(src).records
    out = tmp_path / "sel.jsonl"
    out.write_text("old content that must go\n" * 100)
    write_records(records[:1], out)
    assert out.read_text(encoding="utf-8") == JSONL_ROWS[0] + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "sel.jsonl"]


def test_multiline_record_cannot_go_to_jsonl(tmp_path: Path) -> None:
    src = tmp_path / "in.json"
    src.write_text(JSON_TEXT, encoding="utf-8")
    records = read_records(src).records
    out = tmp_path / "x.jsonl"
    with pytest.raises(ValueError, match="container='json'"):
        write_records(records, out, container="jsonl")
    with pytest.raises(ValueError, match="unknown container"):
        write_records(records, out, container="parquet")
    assert not out.exists()


def test_write_rejected_keeps_raw_text_even_when_not_json(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        JSONL_ROWS[1]
        + "\n"
        + '{"id": "x", "conversations": [\n'
        + '{"id": "y", "conversations": [{"from": "human", "value": 1}, {"from": "bot"}]}\n',
        encoding="utf-8",
    )
    result = read_records(src)
    out = tmp_path / "rejected.jsonl"
    assert len(result.problems) == 4
    # one line per rejected record: the record on line 3 has three problems
    assert write_rejected(result.problems, out) == 2
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    keys = {"file", "line", "id", "field", "problem", "problems", "raw"}
    assert [set(r) for r in rows] == [keys] * 2
    assert rows[0]["line"] == 2 and rows[0]["raw"] == '{"id": "x", "conversations": ['
    assert rows[0]["id"] is None and rows[0]["problem"].startswith("not valid JSON")
    assert (rows[1]["line"], rows[1]["id"]) == (3, "y")
    assert {p["field"] for p in rows[1]["problems"]} == {
        "conversations[0].value",
        "conversations[1].from",
        "conversations[1].value",
    }
    assert rows[1]["problem"] == "; ".join(p["message"] for p in rows[1]["problems"])
    assert all(r["file"] == str(src) for r in rows)
