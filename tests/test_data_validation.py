"""Every data defect becomes a Problem with the right line and field; none is skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from stepsift.data import (
    MAX_IMAGE_PIXELS,
    DataValidationError,
    Problem,
    check_image,
    format_problems,
    read_records,
)


def make_png(path: Path, size: tuple[int, int] = (4, 4)) -> Path:
    Image.new("RGB", size, "blue").save(path)
    return path


def llava(rid: str, image: str | None = None, **extra) -> dict:
    obj: dict = {"id": rid}
    if image is not None:
        obj["image"] = image
    q = "<image>\nQ" if image is not None else "Q"
    obj["conversations"] = [{"from": "human", "value": q}, {"from": "gpt", "value": "A"}]
    obj.update(extra)
    return obj


def write_lines(path: Path, lines: list[str | dict]) -> Path:
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


def by_line(problems: list[Problem]) -> dict[int, list[Problem]]:
    out: dict[int, list[Problem]] = {}
    for p in problems:
        out.setdefault(p.line, []).append(p)
    return out


def test_all_problems_collected_with_lines_and_fields(tmp_path: Path) -> None:
    make_png(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    f = write_lines(
        tmp_path / "d.jsonl",
        [
            llava("a", "ok.png"),  # 1: fine
            '{"id": "b", "conversations": [',  # 2: broken JSON
            llava("c", "missing.png"),  # 3: missing image
            llava("d", "broken.png"),  # 4: unreadable image
            {"id": "e", "conversations": [{"from": "human", "value": "only a question"}]},  # 5
            llava("a"),  # 6: duplicate id of line 1
            {
                "id": "g",
                "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": 3}],
            },
            {
                "id": "h",
                "image": "ok.png",
                "conversations": [  # 8: 2 placeholders, 1 image
                    {"from": "human", "value": "<image> vs <image>"},
                    {"from": "gpt", "value": "A"},
                ],
            },
            {"question": "?", "answer": "!"},  # 9: unknown format
            "[1, 2]",  # 10: not an object
            {"id": "k", "conversations": "human: hi"},  # 11: conversations not a list
            {
                "id": "l",
                "conversations": [{"from": "bot", "value": "x"}, {"from": "gpt", "value": "A"}],
            },
            llava("m", "ok.png"),  # 13: fine
        ],
    )
    result = read_records(f)
    assert [r.id for r in result.records] == ["a", "m"]
    got = {
        line: [(p.field, p.message) for p in ps] for line, ps in by_line(result.problems).items()
    }
    assert sorted(got) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]

    ((field, msg),) = got[2]
    assert field == "" and msg.startswith("not valid JSON") and "column" in msg
    ((field, msg),) = got[3]
    assert field == "image" and "not found" in msg and str(tmp_path / "missing.png") in msg
    ((field, msg),) = got[4]
    assert field == "image" and "cannot open image" in msg
    ((field, msg),) = got[5]
    assert field == "conversations" and "no assistant turn" in msg
    ((field, msg),) = got[6]
    assert field == "id" and "duplicate id 'a'" in msg and "line 1" in msg
    ((field, msg),) = got[7]
    assert field == "conversations[1].value" and "expected a string, got integer" in msg
    ((field, msg),) = got[8]
    assert field == "image" and "2 <image> placeholder(s)" in msg and "1 image(s)" in msg
    ((field, msg),) = got[9]
    assert field == "" and "unknown record format" in msg
    assert "'question', 'answer'" in msg and "llava" in msg and "alpaca" in msg
    ((field, msg),) = got[10]
    assert field == "" and "expected a JSON object, got array" in msg
    ((field, msg),) = got[11]
    assert field == "conversations" and "got string" in msg
    ((field, msg),) = got[12]
    assert field == "conversations[0].from" and "unknown role 'bot'" in msg

    # Problems carry the record's id and its exact raw text for the rejects file.
    p3 = by_line(result.problems)[3][0]
    assert p3.record_id == "c" and p3.raw == f.read_text().splitlines()[2]


def test_several_problems_in_one_record_are_all_reported(tmp_path: Path) -> None:
    f = write_lines(
        tmp_path / "d.jsonl",
        [
            {
                "images": ["x.png", "y.png"],
                "conversations": [
                    {"from": "human", "value": 1},
                    {"from": "robot", "value": "A"},
                    "not a turn",
                ],
            }
        ],
    )
    fields = sorted(p.field for p in read_records(f).problems)
    assert fields == [
        "conversations[0].value",
        "conversations[1].from",
        "conversations[2]",
        "images[0]",
        "images[1]",
    ]


def test_images_without_placeholders_are_accepted(tmp_path: Path) -> None:
    make_png(tmp_path / "a.png")
    obj = {
        "id": "x",
        "image": "a.png",
        "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}],
    }
    result = read_records(write_lines(tmp_path / "d.jsonl", [obj]))
    assert result.problems == [] and result.records[0].images == (tmp_path / "a.png",)


def test_placeholders_without_images_is_a_problem(tmp_path: Path) -> None:
    obj = {
        "messages": [{"role": "user", "content": "<image>Q"}, {"role": "assistant", "content": "A"}]
    }
    (p,) = read_records(write_lines(tmp_path / "d.jsonl", [obj])).problems
    assert p.field == "messages" and "1 <image> placeholder(s)" in p.message


def test_sharegpt_all_loss_false_means_nothing_supervised(tmp_path: Path) -> None:
    obj = {
        "messages": [
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A", "loss": False},
        ]
    }
    (p,) = read_records(write_lines(tmp_path / "d.jsonl", [obj])).problems
    assert p.field == "messages" and "no supervised turn" in p.message


def test_openai_image_part_with_no_path_left(tmp_path: Path) -> None:
    obj = {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "video"}]},
            {"role": "assistant", "content": [{"type": "text", "text": 5}]},
        ]
    }
    fields = {
        p.field: p.message for p in read_records(write_lines(tmp_path / "d.jsonl", [obj])).problems
    }
    assert "has no path" in fields["messages[0].content[0]"]
    assert "unsupported content part type 'video'" in fields["messages[0].content[1].type"]
    assert "expected a string" in fields["messages[1].content[0].text"]


def test_openai_unused_listed_images(tmp_path: Path) -> None:
    for n in ("a.png", "b.png"):
        make_png(tmp_path / n)
    obj = {
        "images": ["a.png", "b.png"],
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A"}]},
        ],
    }
    (p,) = read_records(write_lines(tmp_path / "d.jsonl", [obj])).problems
    assert p.field == "images" and "2 image(s) listed but only 1" in p.message


def test_plain_missing_and_mistyped_fields(tmp_path: Path) -> None:
    f = write_lines(tmp_path / "d.jsonl", [{"prompt": "p"}, {"prompt": ["p"], "response": "r"}])
    got = [(p.line, p.field, p.message) for p in read_records(f).problems]
    assert got == [(1, "response", "missing"), (2, "prompt", "expected a string, got array")]


def test_mixed_formats_flag_the_odd_records(tmp_path: Path) -> None:
    f = write_lines(
        tmp_path / "d.jsonl",
        [llava("1"), {"instruction": "i", "output": "o"}, llava("3")],
    )
    result = read_records(f)
    assert result.format == "llava" and [r.id for r in result.records] == ["1", "3"]
    (p,) = result.problems
    assert p.line == 2 and "'alpaca' format but the file is 'llava'" in p.message


def test_json_array_syntax_error_is_one_problem_at_its_line(tmp_path: Path) -> None:
    f = tmp_path / "d.json"
    f.write_text('[\n  {"prompt": "p", "response": "r"},\n  {"prompt": "p" "response": "r"}\n]\n')
    result = read_records(f)
    assert result.container == "json" and result.records == []
    (p,) = result.problems
    assert p.line == 3 and "not valid JSON" in p.message and "column 18" in p.message
    assert p.raw == '  {"prompt": "p" "response": "r"}'


def test_json_array_element_problems_use_element_start_lines(tmp_path: Path) -> None:
    f = tmp_path / "d.json"
    f.write_text(
        '[\n  {"prompt": "p", "response": "r"},\n  "oops",\n  {"prompt": "p",\n   "response": 1}\n]'
    )
    result = read_records(f)
    assert [r.source.line for r in result.records] == [2]
    assert [(p.line, p.field) for p in result.problems] == [(3, ""), (4, "response")]
    assert result.problems[0].raw == '"oops"'


@pytest.mark.parametrize("content", ["", "\n  \n", "[]", " [ \n ] "])
def test_empty_file_is_a_problem(tmp_path: Path, content: str) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text(content)
    result = read_records(f)
    assert result.records == []
    (p,) = result.problems
    assert "no records" in p.message


def test_non_utf8_lines_are_problems_naming_the_line(tmp_path: Path) -> None:
    good = json.dumps({"prompt": "p", "response": "r"}).encode()
    bad = '{"prompt": "caf\u00e9", "response": "r"}'.encode("latin-1")
    f = tmp_path / "d.jsonl"
    f.write_bytes(good + b"\n" + bad + b"\n" + good + b"\n")
    result = read_records(f)
    assert len(result.records) == 2
    (p,) = result.problems
    assert p.line == 2 and "not valid UTF-8" in p.message and "0xe9" in p.message

    j = tmp_path / "d.json"
    j.write_bytes(b"[\n" + good + b",\n" + bad + b"\n]")
    (p,) = read_records(j).problems
    assert p.line == 3 and "not valid UTF-8" in p.message


def test_pretty_printed_single_object_is_explained(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"prompt": "p", "response": "r"}, indent=2))
    (p,) = read_records(f).problems
    assert p.line == 1 and "one JSON object over several lines" in p.message


def test_max_problems_stops_collecting(tmp_path: Path) -> None:
    f = write_lines(tmp_path / "d.jsonl", ["{bad"] * 10)
    result = read_records(f, max_problems=3)
    assert [p.line for p in result.problems] == [1, 2, 3] and result.truncated
    assert len(read_records(f).problems) == 10


def test_check_images_false_skips_file_checks(tmp_path: Path) -> None:
    f = write_lines(tmp_path / "d.jsonl", [llava("a", "nowhere.png")])
    result = read_records(f, check_images=False)
    assert result.problems == [] and result.records[0].images == (tmp_path / "nowhere.png",)


def test_check_image_cases(tmp_path: Path) -> None:
    assert check_image(make_png(tmp_path / "ok.png")) is None
    assert "not found" in check_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty (0 bytes)" in check_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("hello")
    assert "cannot open image" in check_image(tmp_path / "text.png")
    good = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(good[: len(good) // 2])
    assert check_image(tmp_path / "trunc.png") is not None
    # A bomb: 8000x7000 = 56M pixels of one colour compresses to a small PNG.
    Image.new("1", (8000, 7000)).save(tmp_path / "bomb.png")
    assert 8000 * 7000 > MAX_IMAGE_PIXELS
    assert "too large" in check_image(tmp_path / "bomb.png")


def test_data_validation_error_lists_first_20(tmp_path: Path) -> None:
    f = write_lines(tmp_path / "d.jsonl", ["{bad"] * 25)
    problems = read_records(f).problems
    err = DataValidationError(problems)
    assert err.problems == problems
    lines = str(err).splitlines()
    assert lines[0].startswith("25 problem(s)")
    assert lines[1].startswith(f"{f}:1: not valid JSON")
    assert lines[20].startswith(f"{f}:20:") and lines[21] == "... and 5 more"
    assert len(lines) == 22
    p = Problem(f, 4, "conversations[1].value", "expected a string", "x7")
    assert format_problems([p]) == f"{f}:4 (id x7): conversations[1].value: expected a string"
    with pytest.raises(DataValidationError):
        read_records(f).raise_for_problems()
