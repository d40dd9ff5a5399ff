"""Hostile input never crashes the readers, hangs them, or vanishes silently (issue 6).

Every input line (JSONL) or array element (JSON) ends up either as a `Record` or as at least
one `Problem` naming file, line and field; the only exception a caller sees is
`DataValidationError`, from `raise_for_problems()`.

Image-path policy (tested at the end of this file):
- a relative image path resolves against the image root (default: the data file's folder)
  and must not climb out of it with `..`: that is a Problem naming the field;
- an absolute path is explicit and allowed wherever it points;
- symlinks under the root are followed, even to outside it: they are the user's own layout
  (e.g. LLaVA's `playground/data/coco -> /datasets/coco`), not something a data file sets.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import signal
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from stepsift.data import (
    ROLES,
    DataValidationError,
    ReadResult,
    check_image,
    format_problems,
    load_image,
    read_records,
    write_rejected,
)

BOM = b"\xef\xbb\xbf"
# A message must stay readable whatever the input: no 10 MB values echoed back.
MAX_MESSAGE = 2000
# Every field name a Problem may start with, besides the record's own keys.
KNOWN_FIELDS = {
    "",
    "id",
    "conversations",
    "messages",
    "image",
    "images",
    "prompt",
    "response",
    "system",
    "instruction",
    "input",
    "output",
}

FAST = settings(max_examples=60, deadline=None)


@pytest.fixture(autouse=True)
def hang_guard() -> Iterator[None]:
    """Fail, rather than hang the suite, if one test runs for over a minute (e.g. a FIFO)."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError("test hung: over 60 s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(60)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the data files written by the tests and two good images."""
    d = tmp_path_factory.mktemp("hostile")
    Image.new("RGB", (4, 4), "red").save(d / "a.png")
    Image.new("RGB", (4, 4), "blue").save(d / "b.png")
    return d


# ---- checking a read ------------------------------------------------------------------------


def read_checked(path: Path, **kw: Any) -> ReadResult:
    """read_records, plus what must hold for any input at all."""
    result = read_records(path, **kw)
    for p in result.problems:
        assert p.file == path and p.line >= 1, p
        assert isinstance(p.field, str) and isinstance(p.message, str) and p.message
        assert len(p.message) < MAX_MESSAGE, p.message[:200]
    for r in result.records:
        assert r.source.file == path and r.source.line >= 1
        r.id.encode("utf-8")  # Arrow/Parquet need valid Unicode
        for t in r.turns:
            assert t.role in ROLES and isinstance(t.text, str)
            t.text.encode("utf-8")  # a tokenizer fails on an unpaired surrogate
    assert not {r.source.line for r in result.records} & {p.line for p in result.problems}
    # What callers do with problems must not crash either.
    format_problems(result.problems)
    write_rejected(result.problems, path.with_suffix(".rejected.jsonl"))
    if result.problems:
        with pytest.raises(DataValidationError):
            result.raise_for_problems()
    else:
        result.raise_for_problems()
    return result


def nonblank_lines(data: bytes) -> set[int]:
    body = data.removeprefix(BOM)
    return {i + 1 for i, c in enumerate(body.split(b"\n")) if c.removesuffix(b"\r").strip()}


def assert_accounted(data: bytes, result: ReadResult) -> None:
    """No silent skip: every line/element is a record or has a problem."""
    rec_lines = [r.source.line for r in result.records]
    prob_lines = {p.line for p in result.problems}
    if not result.records and not result.problems:
        raise AssertionError("nothing came out of the file: a silent skip")
    if result.container == "jsonl":
        expected = nonblank_lines(data)
        if not expected:
            assert len(result.problems) == 1 and "no records" in result.problems[0].message
            return
        if any("one JSON object over several lines" in p.message for p in result.problems):
            assert len(result.problems) == 1 and not result.records
            return
        assert len(rec_lines) == len(set(rec_lines))
        assert set(rec_lines) | prob_lines == expected
        return
    try:
        elements = json.loads(data.removeprefix(BOM).decode("utf-8"))
    except (ValueError, RecursionError):  # a broken container is one problem, no records
        assert not result.records and len(result.problems) == 1
        return
    if not elements:
        assert len(result.problems) == 1 and "no records" in result.problems[0].message
        return
    assert len(result.records) <= len(elements)
    assert len(result.records) == len(elements) or result.problems


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---- strategies -----------------------------------------------------------------------------

ODD_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "\ud800",  # unpaired surrogate (json.dumps writes it as the escape \ud800)
        "a\udc80b",
        "\x00",
        "<image>",
        "<image>\n<image>",
        "../a.png",
        "/dev/zero",
        "a.png",
        "http://x/y.png",
        "human",
        "gpt",
        "assistant",
        "image",
        "text",
        "\u2028",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | ODD_STRINGS
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6) | ODD_STRINGS, inner, max_size=4)
    ),
    max_leaves=12,
)

VALID_RECORDS: list[dict[str, Any]] = [
    {
        "id": "llava",
        "image": "a.png",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat?"},
            {"from": "gpt", "value": "Red."},
        ],
    },
    {
        "id": 7,
        "images": ["a.png", "b.png"],
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "<image><image>Compare."},
            {"role": "assistant", "content": "Same.", "loss": True},
        ],
    },
    {
        "images": ["a.png"],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "image", "image": "b.png"},
                    {"type": "image_url", "image_url": {"url": "file://a.png"}},
                    {"type": "text", "text": "Q"},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "A"}]},
        ],
    },
    {"id": "plain", "system": "s", "prompt": "p", "response": "r", "image": "a.png"},
    {"instruction": "i", "input": "x", "output": "o", "extra": {"k": [1, 2]}},
]


def value_paths(obj: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path into a JSON value: () for the value itself, then keys/indices."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from value_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from value_paths(v, (*prefix, i))


def mutate(obj: Any, path: tuple, value: Any, delete: bool) -> Any:
    if not path:
        return value
    out = copy.deepcopy(obj)
    parent = out
    for k in path[:-1]:
        parent = parent[k]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


@st.composite
def hostile_records(draw: st.DrawFn) -> Any:
    """A valid record of some format with one value (any depth, incl. the whole record)
    replaced by arbitrary JSON, or one key/element deleted."""
    base = draw(st.sampled_from(VALID_RECORDS))
    path = draw(st.sampled_from(list(value_paths(base))))
    delete = bool(path) and draw(st.booleans())
    return mutate(base, path, None if delete else draw(JSON_VALUES), delete)


def check_fields(objs: list[Any], result: ReadResult, first_line: int = 1) -> None:
    """Each problem's field starts with a key known to the formats or present in its record."""
    for p in result.problems:
        top = re.match(r"[^.\[]*", p.field)[0]
        obj = objs[p.line - first_line]
        assert top in KNOWN_FIELDS or (isinstance(obj, dict) and top in obj), p


# ---- whole files of garbage -----------------------------------------------------------------

JSONISH = st.lists(
    st.sampled_from(
        [
            b"{",
            b"}",
            b"[",
            b"]",
            b'"',
            b":",
            b",",
            b" ",
            b"\n",
            b"\r\n",
            b"\x00",
            b"\xff",
            b"\xc3",
            b"\xa9",
            BOM,
            b"NaN",
            b"1e999",
            b"-",
            b"0",
            b"\\u",
            b"\\ud800",
            b'"prompt"',
            b'"response"',
            b'"conversations"',
            b'"messages"',
            b'"image"',
            b'"a.png"',
            b"null",
            b"true",
        ]  # fmt: skip
    ),
    max_size=60,
).map(b"".join)


@FAST
@given(data=st.binary(max_size=3000) | JSONISH, name=st.sampled_from(["d.jsonl", "d.json"]))
def test_random_bytes_as_the_whole_file(root: Path, data: bytes, name: str) -> None:
    f = write(root / name, data)
    assert_accounted(data, read_checked(f, image_root=root))


@pytest.mark.parametrize(
    "data",
    [
        b"\x00" * 1000,
        b"\x00\n" * 10,
        BOM,
        BOM + b"\n\n",
        b"\xff\xfe" + '{"prompt": "p", "response": "r"}\n'.encode("utf-16-le"),  # UTF-16
        b"\r\r\r",
        b"[",
        b"]",
        b"[\x00]",
        b"{}",
        b"[{}]",
        b"null",
        b'[null, 1, "s", []]',
        b'{"prompt": "p", "response": "r"}\r{"prompt": "p", "response": "r"}',  # old Mac CR
    ],
)
def test_garbage_files(root: Path, data: bytes) -> None:
    f = write(root / "g.jsonl", data)
    assert_accounted(data, read_checked(f, image_root=root))


def jsonl(objs: list[Any]) -> bytes:
    return "".join(json.dumps(o) + "\n" for o in objs).encode("utf-8")


def json_array(objs: list[Any]) -> bytes:
    """One element per line, so element i starts on line i + 2."""
    return ("[\n" + ",\n".join(json.dumps(o) for o in objs) + "\n]\n").encode("utf-8")


GOOD = [  # one format, so that losing any line leaves a file of one format
    VALID_RECORDS[3],
    {"prompt": "caf\u00e9 \u2603", "response": "r"},
    {"id": 3, "prompt": "p", "response": "\U0001f600", "image": "b.png"},
]


@FAST
@given(
    line=st.integers(0, len(GOOD) - 1),
    at=st.floats(0, 1),
    bad=st.sampled_from([b"\xff", b"\xc3", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8"]),
)
def test_non_utf8_bytes_inside_valid_jsonl(root: Path, line: int, at: float, bad: bytes) -> None:
    lines = jsonl(GOOD).split(b"\n")
    cut = int(at * len(lines[line]))
    lines[line] = lines[line][:cut] + bad + lines[line][cut:]
    data = b"\n".join(lines)
    result = read_checked(write(root / "u.jsonl", data), image_root=root)
    assert_accounted(data, result)
    (p,) = result.problems
    assert p.line == line + 1 and p.field == "" and "not valid UTF-8" in p.message
    assert len(result.records) == len(GOOD) - 1


@FAST
@given(
    bom=st.booleans(),
    newline=st.sampled_from([b"\n", b"\r\n"]),
    blank=st.lists(st.integers(0, 3), max_size=3),
    container=st.sampled_from(["jsonl", "json"]),
)
def test_bom_crlf_and_blank_lines(
    root: Path, bom: bool, newline: bytes, blank: list[int], container: str
) -> None:
    rows = [json.dumps(o).encode() for o in GOOD]
    for i in sorted(blank, reverse=True):
        rows.insert(i, b"   " if container == "jsonl" else b"")
    if container == "json":
        body = b"[" + newline + (b"," + newline).join(r for r in rows if r) + newline + b"]"
    else:
        body = newline.join(rows) + newline
    data = (BOM if bom else b"") + body
    result = read_checked(write(root / "c.jsonl", data), image_root=root)
    assert result.problems == [] and len(result.records) == len(GOOD)
    assert result.container == container
    assert all("\r" not in t.text for r in result.records for t in r.turns)
    if container == "jsonl":
        assert {r.source.line for r in result.records} == nonblank_lines(data)
    else:
        assert [r.source.line for r in result.records] == [2, 3, 4]


@FAST
@given(at=st.floats(0, 1), container=st.sampled_from(["jsonl", "json", "pretty"]))
def test_truncated_file(root: Path, at: float, container: str) -> None:
    if container == "jsonl":
        full = jsonl(GOOD)
    elif container == "json":
        full = json_array(GOOD)
    else:
        full = json.dumps(GOOD, indent=2, ensure_ascii=False).encode("utf-8")
    data = full[: int(at * len(full))]
    result = read_checked(write(root / "t.jsonl", data), image_root=root)
    assert_accounted(data, result)
    if container == "jsonl":  # the complete lines before the cut all read
        assert len(result.records) >= data.count(b"\n")
    elif data.strip() != full.strip():  # a cut array is one problem, never a partial read
        assert not result.records and len(result.problems) == 1


# ---- valid JSON, wrong contents -------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(objs=st.lists(hostile_records(), min_size=1, max_size=4))
def test_wrong_types_in_every_field_jsonl(root: Path, objs: list[Any]) -> None:
    data = jsonl(objs)
    result = read_checked(write(root / "w.jsonl", data), image_root=root)
    assert_accounted(data, result)
    check_fields(objs, result)


@settings(max_examples=150, deadline=None)
@given(objs=st.lists(hostile_records() | JSON_VALUES, min_size=1, max_size=4))
def test_wrong_types_and_non_objects_json_array(root: Path, objs: list[Any]) -> None:
    data = json_array(objs)
    result = read_checked(write(root / "w.json", data), image_root=root)
    assert_accounted(data, result)
    assert {r.source.line for r in result.records} | {p.line for p in result.problems} == set(
        range(2, len(objs) + 2)
    )
    check_fields(objs, result, first_line=2)


@FAST
@given(value=JSON_VALUES)
def test_top_level_values_that_are_not_objects(root: Path, value: Any) -> None:
    assume(not isinstance(value, dict))
    data = jsonl([value, GOOD[1]])
    result = read_checked(write(root / "n.jsonl", data), image_root=root)
    assert [r.source.line for r in result.records] == [2]
    (p,) = result.problems
    assert p.line == 1 and p.field == "" and "expected a JSON object" in p.message


@pytest.mark.parametrize("container", ["jsonl", "json"])
@pytest.mark.parametrize("depth", [10, 400, 990, 1200, 100_000])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deeply_nested_json(root: Path, container: str, depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    deep = opener * depth + "1" + closer * depth
    line = '{"prompt": "p", "response": "r", "meta": ' + deep + "}"
    text = f"[\n{line}\n]" if container == "json" else line + "\n"
    data = text.encode()
    result = read_checked(write(root / "deep.jsonl", data), image_root=root)
    assert_accounted(data, result)
    for p in result.problems:  # too deep for Python's parser here: a clear problem
        assert p.line == (2 if container == "json" else 1)
        assert "nested too deeply" in p.message


@pytest.mark.parametrize(
    "line, field, message",
    [
        ('{"prompt": "p", "response": "r", "score": NaN, "w": -Infinity}', None, None),
        ('{"prompt": NaN, "response": "r"}', "prompt", "expected a string, got number"),
        ('{"id": Infinity, "prompt": "p", "response": "r"}', "id", "got number"),
        (
            '{"messages": [{"role": "user", "content": "q"}, '
            '{"role": "assistant", "content": "a", "loss": NaN}]}',
            "messages[1].loss",
            "expected true/false, got number",
        ),
        ('{"prompt": "p", "response": "r", "n": 1e999}', None, None),  # inf, kept in metadata
        ('{"id": ' + "9" * 4000 + ', "prompt": "p", "response": "r"}', None, None),
        ('{"prompt": "p", "response": "r", "n": ' + "9" * 5000 + "}", "", "too long to read"),
        ('{"prompt": "p", "response": "r", "n": -' + "1" * 100_000 + "}", "", "too long"),
        ('{"prompt": "p\\ud800", "response": "r"}', "prompt", "unpaired surrogate \\ud800"),
        ('{"id": "\\udfff", "prompt": "p", "response": "r"}', "id", "unpaired surrogate"),
        ('{"prompt": "p", "response": "r", "image": "a\\u0000.png"}', "image", "NUL"),
    ],
)
@pytest.mark.parametrize("container", ["jsonl", "json"])
def test_special_literals_and_numbers(
    root: Path, line: str, field: str | None, message: str | None, container: str
) -> None:
    text = f"[\n{line}\n]" if container == "json" else line + "\n"
    data = text.encode()
    result = read_checked(write(root / "lit.jsonl", data), image_root=root)
    assert_accounted(data, result)
    if field is None:
        assert result.problems == [] and len(result.records) == 1
    else:
        assert not result.records
        assert any(p.field == field and message in p.message for p in result.problems)


BIG = "x" * 10_000_000


@pytest.mark.parametrize(
    "objs, problems",
    [
        # A long answer is fine; a 10 MB id too, but its duplicate is not.
        (
            [
                {"prompt": "p", "response": BIG},
                {"id": BIG, "prompt": "p", "response": "r"},
                {"id": BIG, "prompt": "p", "response": "r"},
            ],
            {(3, "id")},
        ),
        ([{"prompt": "p", "response": "r", "image": BIG}], {(1, "image")}),
        ([{BIG: 1}], {(1, "")}),
        (
            [{"messages": [{"role": BIG, "content": "q"}, {"role": "assistant", "content": "a"}]}],
            {(1, "messages[0].role")},
        ),
        (
            [{"messages": [{"role": "user", "content": [{"type": BIG}]}]}],
            {(1, "messages[0].content[0].type")},
        ),
    ],
    ids=["text-and-id", "image-path", "key", "role", "part-type"],
)
def test_huge_strings(root: Path, objs: list[Any], problems: set[tuple[int, str]]) -> None:
    """10 MB values are read (or rejected) quickly, and never echoed back in a message."""
    data = jsonl(objs)
    start = time.perf_counter()
    result = read_checked(write(root / "big.jsonl", data), image_root=root)
    assert time.perf_counter() - start < 30
    assert_accounted(data, result)
    assert {(p.line, p.field) for p in result.problems} == problems
    for r in result.records:
        assert r.turns[-1].text in ("r", BIG)


def test_json_array_reading_is_linear(root: Path) -> None:
    """Element start lines were counted from the file's start for every element: O(n^2)."""
    n, pad = 6000, " " * 6000
    text = "[" + ",".join('\n{"prompt": "p", "response": "r"}' + pad for _ in range(n)) + "\n]"
    f = write(root / "linear.json", text.encode())
    start = time.perf_counter()
    result = read_checked(f, check_images=False)
    assert time.perf_counter() - start < 10  # was about a minute; now well under a second
    assert result.problems == [] and [r.source.line for r in result.records] == list(
        range(2, n + 2)
    )


# ---- images ---------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header (with a correct CRC) claims width x height pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def image_bytes(fmt: str, size: tuple[int, int] = (32, 24)) -> bytes:
    im = Image.effect_noise(size, 60).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def read_one_image(root: Path, ref: Any, **kw: Any) -> ReadResult:
    obj = {"prompt": "p", "response": "r", "image": ref}
    data = jsonl([obj])
    result = read_checked(write(root / "img.jsonl", data), **kw)
    assert_accounted(data, result)
    return result


def image_problem(root: Path, ref: str, **kw: Any) -> str:
    result = read_one_image(root, ref, **kw)
    (p,) = result.problems
    assert p.field == "image" and p.line == 1
    return p.message


def test_bad_image_files(root: Path) -> None:
    imgs = root / "imgs"
    imgs.mkdir(exist_ok=True)
    (imgs / "text.png").write_text("I am not an image\n")
    (imgs / "random.jpg").write_bytes(os.urandom(5000))
    (imgs / "empty.png").write_bytes(b"")
    (imgs / "giant.png").write_bytes(png_claiming(100_000, 100_000))
    (imgs / "wide.png").write_bytes(png_claiming(2**31 - 1, 1))
    (imgs / "zero.png").write_bytes(png_claiming(0, 0))
    (imgs / "a_dir.png").mkdir(exist_ok=True)
    if not (imgs / "fifo.png").exists():
        os.mkfifo(imgs / "fifo.png")  # opening it would block forever
    if not (imgs / "loop.png").is_symlink():
        (imgs / "loop.png").symlink_to(imgs / "loop.png")
    cases = {
        "text.png": "cannot open image",
        "random.jpg": "cannot open image",
        "empty.png": "empty (0 bytes)",
        "giant.png": "too large: 10,000,000,000 pixels",
        "wide.png": "too large",
        "zero.png": "cannot open image",
        "a_dir.png": "not a file",
        "fifo.png": "not a file",
        "/dev/zero": "not a file",
        "loop.png": "cannot read image file",
        "missing.png": "not found",
        "x" * 5000 + ".png": "cannot read image file",
    }
    for ref, expected in cases.items():
        assert expected in image_problem(imgs, ref, image_root=imgs), ref


@FAST
@given(fmt=st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]), at=st.floats(0, 1))
def test_truncated_images_fail_the_check_not_the_run(root: Path, fmt: str, at: float) -> None:
    """Whatever passes check_image must load later: a cut file is caught up front
    (only a cut that loses nothing but the trailer, e.g. PNG's IEND, may pass)."""
    full = image_bytes(fmt)
    f = write(root / f"cut.{fmt.lower()}", full[: int(at * len(full))])
    why = check_image(f)
    if why is None:
        assert load_image(f).size == (32, 24)
    else:
        assert str(f) in why


@FAST
@given(junk=st.binary(max_size=600), header=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"GIF89a"]))
def test_random_bytes_as_an_image(root: Path, junk: bytes, header: bytes) -> None:
    f = write(root / "junk.img", header + junk)
    why = check_image(f)
    if why is None:  # it decoded, so it loads
        load_image(f)


def test_png_with_a_valid_header_and_broken_pixel_data(root: Path) -> None:
    """CRCs all correct, so verify() passes; the decode in check_image catches it."""
    ihdr = struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"garbage")
    f = write(root / "badz.png", data + png_chunk(b"IEND", b""))
    assert "cannot open image" in check_image(f)


@pytest.mark.parametrize(
    "ref, message",
    [
        ("a\x00.png", "NUL character"),
        ("\ud800.png", "unpaired surrogate"),
        ("", "empty image path"),
        ("   ", "empty image path"),
        ("https://example.com/a.png", "only local image files"),
    ],
)
def test_image_paths_that_can_name_no_file(root: Path, ref: str, message: str) -> None:
    assert message in image_problem(root, ref, image_root=root)
    assert message in image_problem(root, ref, image_root=root, check_images=False)


# ---- image paths outside the root -----------------------------------------------------------


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """top/root/{in.png, sub/, out_link.png -> ../outside.png, ext -> ../ext_dir}
    top/outside.png, top/ext_dir/e.png"""
    top = tmp_path_factory.mktemp("layout")
    root = top / "root"
    (root / "sub").mkdir(parents=True)
    (top / "ext_dir").mkdir()
    for p in (root / "in.png", top / "outside.png", top / "ext_dir" / "e.png"):
        Image.new("RGB", (4, 4), "green").save(p)
    (root / "out_link.png").symlink_to(top / "outside.png")
    (root / "ext").symlink_to(top / "ext_dir", target_is_directory=True)
    return top


@pytest.mark.parametrize(
    "ref",
    ["../outside.png", "sub/../../outside.png", "./../outside.png", "../root/in.png", ".."],
)
@pytest.mark.parametrize("check_images", [True, False])
def test_relative_paths_climbing_out_of_the_root_are_rejected(
    layout: Path, ref: str, check_images: bool
) -> None:
    root = layout / "root"
    msg = image_problem(root, ref, image_root=root, check_images=check_images)
    assert "climbs out of the image root" in msg and str(root) in msg


def test_default_root_is_the_data_files_folder(layout: Path) -> None:
    msg = image_problem(layout / "root", "../outside.png")  # no image_root
    assert "climbs out of the data file's folder" in msg


@pytest.mark.parametrize(
    "ref", ["in.png", "sub/../in.png", "./in.png", "out_link.png", "ext/e.png"]
)
def test_paths_inside_the_root_and_symlinks_under_it_are_accepted(layout: Path, ref: str) -> None:
    root = layout / "root"
    result = read_one_image(root, ref, image_root=root)
    assert result.problems == [] and result.records[0].images == (root / ref,)


def test_absolute_paths_are_allowed_anywhere(layout: Path) -> None:
    root = layout / "root"
    target = layout / "outside.png"
    for ref in (str(target), str(root / ".." / "outside.png")):
        result = read_one_image(root, ref, image_root=root)
        assert result.problems == [] and result.records[0].images == (Path(ref),)


@FAST
@given(parts=st.lists(st.sampled_from(["..", ".", "sub", "in.png", "x"]), min_size=1, max_size=5))
def test_relative_path_policy_matches_where_it_points(layout: Path, parts: list[str]) -> None:
    """A relative path is rejected exactly when, read left to right as written, it goes
    above the root at some point (so "../root/in.png" is rejected too)."""
    root = layout / "root"
    ref = "/".join(parts)
    depth, outside = 0, False
    for part in parts:
        depth += {"..": -1, ".": 0}.get(part, 1)
        outside = outside or depth < 0
    result = read_one_image(root, ref, image_root=root, check_images=False)
    messages = [p.message for p in result.problems]
    assert any("climbs out" in m for m in messages) == outside
