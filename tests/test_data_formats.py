"""Each input format reads into the right canonical Record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from stepsift.data import Turn, detect_format, load_image, read_records


def make_png(path: Path, size: tuple[int, int] = (8, 6), color: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_jsonl(path: Path, objs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return path


def read_ok(path: Path, **kw):
    result = read_records(path, **kw)
    assert result.problems == [], [str(p) for p in result.problems]
    return result


def test_llava_turns_roles_images_and_ids(tmp_path: Path) -> None:
    make_png(tmp_path / "img" / "a.png")
    make_png(tmp_path / "img" / "b.png")
    f = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {
                "id": "r1",
                "image": "img/a.png",
                "conversations": [
                    {"from": "system", "value": "Be brief."},
                    {"from": "human", "value": "<image>\nWhat colour?"},
                    {"from": "gpt", "value": "Red."},
                    {"from": "user", "value": "Sure?"},
                    {"from": "assistant", "value": "Yes."},
                ],
            },
            {
                "id": 7,
                "images": ["img/a.png", "img/b.png"],
                "conversations": [
                    {"from": "human", "value": "Compare <image> and\n<image>"},
                    {"from": "gpt", "value": "Same size."},
                ],
            },
        ],
    )
    result = read_ok(f)
    assert (result.format, result.container) == ("llava", "jsonl")
    r1, r2 = result.records
    assert r1.id == "r1" and r2.id == "7"
    assert r1.turns == (
        Turn("system", "Be brief.", False),
        Turn("user", "What colour?", False),
        Turn("assistant", "Red.", True),
        Turn("user", "Sure?", False),
        Turn("assistant", "Yes.", True),
    )
    assert r1.images == (tmp_path / "img" / "a.png",)
    assert r2.turns[0].text == "Compare  and"
    assert r2.images == (tmp_path / "img" / "a.png", tmp_path / "img" / "b.png")
    assert [r.source.line for r in result.records] == [1, 2]
    assert r1.raw == f.read_text().splitlines()[0]
    assert len(r1.supervised_turns) == 2


def test_sharegpt_messages_and_swift_loss_false(tmp_path: Path) -> None:
    make_png(tmp_path / "x.png")
    f = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "<image>Describe."},
                    {"role": "assistant", "content": "draft", "loss": False},
                    {"role": "user", "content": "Again"},
                    {"role": "assistant", "content": "A red square."},
                ],
                "images": ["x.png"],
            }
        ],
    )
    (rec,) = read_ok(f).records
    assert rec.format == "sharegpt"
    assert [t.role for t in rec.turns] == ["user", "assistant", "user", "assistant"]
    assert [t.supervised for t in rec.turns] == [False, False, False, True]
    assert rec.turns[0].text == "Describe."
    assert rec.images == (tmp_path / "x.png",)
    assert rec.id == "d:1"  # no id field: file stem and line


def test_sharegpt_accepts_image_key_and_images_without_placeholders(tmp_path: Path) -> None:
    make_png(tmp_path / "x.png")
    f = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "What is it?"},
                    {"role": "assistant", "content": "A square."},
                ],
                "image": "x.png",
            }
        ],
    )
    (rec,) = read_ok(f).records
    assert rec.images == (tmp_path / "x.png",)
    assert rec.turns[0].text == "What is it?"


def test_openai_parts_take_paths_from_images_list_in_order(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        make_png(tmp_path / name)
    f = write_jsonl(
        tmp_path / "hf.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "sys"},
                    {
                        "role": "user",
                        "content": [
                            {"type": "image"},
                            {"type": "text", "text": "Left, "},
                            {"type": "image_url", "image_url": {"url": "c.png"}},
                            {"type": "image", "image": None, "text": None},
                            {"type": "text", "text": "right?"},
                        ],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": "Both red."}]},
                ],
                "images": ["a.png", "b.png"],
            },
            {  # text-only rows with string content belong to the same openai file
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                ]
            },
        ],
    )
    result = read_ok(f)
    assert result.format == "openai"
    rec, text_only = result.records
    assert rec.turns == (
        Turn("system", "sys"),
        Turn("user", "Left, right?"),
        Turn("assistant", "Both red.", True),
    )
    assert rec.images == (tmp_path / "a.png", tmp_path / "c.png", tmp_path / "b.png")
    assert text_only.format == "openai" and text_only.turns[1].supervised


def test_detect_format_string_vs_parts() -> None:
    assert detect_format({"messages": [{"role": "user", "content": "x"}]}) == "sharegpt"
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}
    assert detect_format(parts) == "openai"
    assert detect_format({"conversations": []}) == "llava"
    assert detect_format({"prompt": "p", "response": "r"}) == "plain"
    assert detect_format({"instruction": "i", "output": "o"}) == "alpaca"
    assert detect_format({"question": "q"}) is None


def test_plain_with_system_and_image_list(tmp_path: Path) -> None:
    make_png(tmp_path / "p.png")
    f = write_jsonl(
        tmp_path / "plain.jsonl",
        [{"prompt": "<image>\nWhat?", "response": "Red.", "system": "S", "images": ["p.png"]}],
    )
    (rec,) = read_ok(f).records
    assert rec.format == "plain"
    assert rec.turns == (
        Turn("system", "S"),
        Turn("user", "What?"),
        Turn("assistant", "Red.", True),
    )
    assert rec.images == (tmp_path / "p.png",)


def test_alpaca_joins_instruction_and_input(tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "alp.jsonl",
        [
            {"instruction": "Translate", "input": "bonjour", "output": "hello"},
            {"instruction": "Say hi", "input": "", "output": "hi"},
        ],
    )
    result = read_ok(f)
    assert result.format == "alpaca"
    a, b = result.records
    assert a.turns == (Turn("user", "Translate\n\nbonjour"), Turn("assistant", "hello", True))
    assert b.turns[0].text == "Say hi"
    assert a.images == ()


def test_json_array_raw_spans_and_start_lines(tmp_path: Path) -> None:
    make_png(tmp_path / "a.png")
    text = (
        "[\n"
        '  {"id": "a", "image": "a.png",\n'
        '   "conversations": [{"from": "human", "value": "<image>\\nQ"},\n'
        '                     {"from": "gpt", "value": "A, with [brackets] and, commas"}]},\n'
        '  {"id": "b", "conversations": [{"from": "human", "value": "Q2"},'
        ' {"from": "gpt", "value": "A2"}]}\n'
        "]\n"
    )
    f = tmp_path / "data.json"
    f.write_text(text, encoding="utf-8")
    result = read_ok(f)
    assert result.container == "json" and result.format == "llava"
    a, b = result.records
    assert (a.source.line, b.source.line) == (2, 5)
    assert a.raw == text[text.index('{"id": "a"') : text.index("]},\n") + 2]
    assert a.raw.endswith('commas"}]}')
    assert b.raw == text.splitlines()[4].strip()
    assert json.loads(a.raw)["id"] == "a"
    assert a.turns[0].text == "Q" and a.images == (tmp_path / "a.png",)


def test_image_root_and_absolute_paths(tmp_path: Path) -> None:
    root = tmp_path / "images"
    make_png(root / "rel.png")
    absolute = make_png(tmp_path / "elsewhere" / "abs.png")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    f = write_jsonl(
        data_dir / "d.jsonl",
        [
            {
                "images": ["rel.png", str(absolute)],
                "conversations": [
                    {"from": "human", "value": "<image><image>Q"},
                    {"from": "gpt", "value": "A"},
                ],
            }
        ],
    )
    (rec,) = read_ok(f, image_root=root).records
    assert rec.images == (root / "rel.png", absolute)
    # Without image_root, the relative path resolves against the data file's folder.
    problems = read_records(f).problems
    assert len(problems) == 1 and str(data_dir / "rel.png") in problems[0].message


def test_metadata_keeps_unknown_top_level_fields(tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "bench.jsonl",
        [
            {
                "id": "q1",
                "meta": {"answer": "B", "split": ["val", 3]},
                "source": "mmmu",
                "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}],
            }
        ],
    )
    (rec,) = read_ok(f).records
    assert rec.metadata == {"meta": {"answer": "B", "split": ["val", 3]}, "source": "mmmu"}


def test_blank_lines_skipped_but_line_numbers_true(tmp_path: Path) -> None:
    row = json.dumps({"prompt": "p", "response": "r"})
    row2 = json.dumps({"prompt": "p2", "response": "r2"})
    f = tmp_path / "b.jsonl"
    f.write_text(f"\n{row}\n\n   \n{row2}\r\n", encoding="utf-8")
    result = read_ok(f)
    assert [r.source.line for r in result.records] == [2, 5]
    assert [r.id for r in result.records] == ["b:2", "b:5"]
    assert result.records[1].raw == row2  # without "\r\n"


def test_load_image_returns_fully_loaded_rgb(tmp_path: Path) -> None:
    p = tmp_path / "rgba.png"
    Image.new("RGBA", (5, 4), (0, 255, 0, 128)).save(p)
    im = load_image(p)
    assert im.mode == "RGB" and im.size == (5, 4)
    assert im.getpixel((0, 0)) == (0, 255, 0)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(OSError, match="bad.png"):
        load_image(bad)
