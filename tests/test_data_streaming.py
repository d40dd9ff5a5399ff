"""The streamed reader and the on-disk pool index agree with reading a file whole.

The reader's window (`entries._CHUNK`) is shrunk to a few bytes so that every record,
string, number and multi-byte character in these files straddles a chunk boundary.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import stepsift.data.entries as entries
from stepsift.data import read_records
from stepsift.data.index import LazyRecords, index_records


def chat(i: int, note: str = "") -> dict:
    obj = {
        "id": f"r{i:03d}",
        "messages": [
            {"role": "user", "content": f"question {i} ünï ✓ 数学 " + "x" * (i % 7)},
            {"role": "assistant", "content": f"answer {-1234567890123 * i} {note}"},
        ],
    }
    if i % 3 == 0:
        obj["score"] = -98765.4321e-3 * i  # numbers cut by a chunk boundary must read whole
    return obj


def write_variants(folder: Path) -> dict[str, Path]:
    records = [chat(i) for i in range(40)]
    files = {
        "jsonl": folder / "a.jsonl",
        "minified": folder / "b.json",  # one line: json.dump's default
        "pretty": folder / "c.json",
        "bom_crlf": folder / "d.jsonl",
    }
    files["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    files["minified"].write_text(json.dumps(records, ensure_ascii=False), "utf-8")
    files["pretty"].write_text(json.dumps(records, ensure_ascii=False, indent=2), "utf-8")
    body = "".join(json.dumps(r, ensure_ascii=False) + "\r\n\r\n" for r in records)
    files["bom_crlf"].write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    return files


@pytest.fixture(params=[3, 11, 1 << 20], ids=["chunk3", "chunk11", "chunk1M"])
def chunk(request, monkeypatch) -> int:
    monkeypatch.setattr(entries, "_CHUNK", request.param)
    return request.param


@pytest.mark.parametrize("variant", ["jsonl", "minified", "pretty", "bom_crlf"])
def test_index_reads_back_what_a_whole_read_gives(tmp_path, chunk, variant) -> None:
    path = write_variants(tmp_path)[variant]
    whole = read_records(path)
    assert whole.problems == [] and len(whole.records) == 40
    index = index_records(path)
    assert len(index) == 40 and index.problems == []
    # every record read back from its byte span is the one the whole read made, raw text
    # (byte-exact write-back depends on it), lines and metadata included
    back = index.load(range(len(index)))
    assert back == whole.records
    assert [r.metadata for r in back] == [r.metadata for r in whole.records]
    # the warm-up's view: records by position, one at a time
    lazy = LazyRecords(index)
    assert [lazy[i] for i in (39, 0, 17)] == [whole.records[i] for i in (39, 0, 17)]


def test_length_order_is_text_size_then_id(tmp_path) -> None:
    path = write_variants(tmp_path)["jsonl"]
    index = index_records(path)
    records = read_records(path).records
    expected = sorted(records, key=lambda r: (sum(len(t.text) for t in r.turns), r.id))
    assert index.id_list(index.length_order()) == [r.id for r in expected]


def test_index_keeps_the_same_problems_and_leaves_bad_records_out(tmp_path, chunk) -> None:
    Image.new("RGB", (4, 4), "red").save(tmp_path / "ok.png")
    good = chat(1)
    lines = [
        json.dumps(good),
        '{"id": "broken", "messages": [',
        json.dumps({**chat(2), "images": ["missing.png"]}),
        json.dumps(good),  # a duplicate id
        json.dumps(chat(3)),
        "[1, 2]",
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    whole = read_records(path)
    index = index_records(path)
    assert index.problems == whole.problems
    assert sorted(p.line for p in index.problems) == [2, 3, 4, 6]
    assert index.id_list(range(len(index))) == ["r001", "r003"]
    assert index.load([1]) == [whole.records[1]]


def test_json_array_syntax_error_is_one_problem_even_past_many_chunks(tmp_path, chunk) -> None:
    records = [chat(i) for i in range(30)]
    text = json.dumps(records, indent=1)
    between = "},\n {"  # drop the comma between the 21st and 22nd records
    cut = [i for i in range(len(text)) if text.startswith(between, i)][20]
    text = text[:cut] + "}\n {" + text[cut + len(between) :]
    path = tmp_path / "broken.json"
    path.write_text(text, "utf-8")
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    result = read_records(path)
    (problem,) = result.problems
    assert result.records == []
    assert problem.line == expected.value.lineno
    assert f"{expected.value.msg} at column {expected.value.colno}" in problem.message
    assert index_records(path).problems == result.problems


def test_a_number_cut_by_the_window_is_read_whole(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(entries, "_CHUNK", 4)
    path = tmp_path / "n.json"
    path.write_text('[-100000000000000, 3.25e-7, {"prompt": "p", "response": "r"}]')
    result = read_records(path)
    assert [p.line for p in result.problems] == [1, 1]
    assert all("expected a JSON object, got" in p.message for p in result.problems)
    assert [r.raw for r in result.records] == ['{"prompt": "p", "response": "r"}']
