"""`stepsift select --llamafactory-info NAME`: a LLaMA-Factory dataset_info.json entry for
the selection, checked by reading the selection back the way LLaMA-Factory's converters do.

Real files throughout: JSONL / JSON-array inputs, PNG images, a Parquet score file written
by stepsift's own store, and the CLI run in-process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import Run, run_cli
from PIL import Image

from stepsift.engine.store import ScoreRows, write_scores

NAME = "picked"


def write_pool(path: Path, records: list[dict], container: str = "jsonl") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if container == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records, indent=2), encoding="utf-8")
    return path


def write_scores_file(path: Path, ids: list[str], utility: list[float]) -> Path:
    """A real score file, as `stepsift score` writes it."""
    rows = ScoreRows()
    n = len(ids)
    rows.extend(ids, utility, [1.0] * n, [10] * n, [False] * n)
    write_scores(rows, path, 0.0, {"test": True})
    return path


def make_images(folder: Path, n: int) -> list[str]:
    (folder / "img").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        Image.new("RGB", (8, 8), (i * 40 % 256, 10, 200)).save(folder / "img" / f"{i}.png")
        names.append(f"img/{i}.png")
    return names


def select_info(pool: Path, scores: Path, out: Path, keep: str = "3", *extra: str) -> Run:
    return run_cli(
        "select", pool, "--scores", scores, "--keep", keep, "--out", out,
        "--llamafactory-info", NAME, *extra,
    )  # fmt: skip


def load_entry(folder: Path, name: str = NAME) -> dict:
    return json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))[name]


def read_like_llamafactory(entry: dict, record: dict) -> tuple[str, list[tuple[str, str]]]:
    """(system, [(role, text), ...]) of one record, using only the entry's columns and tags,
    as LLaMA-Factory's Sharegpt/AlpacaDatasetConverter do; fails on what they would skip."""
    columns = entry["columns"]
    if entry.get("formatting", "alpaca") == "alpaca":
        parts = [record.get(columns[c]) for c in ("prompt", "query") if c in columns]
        user = "\n".join(p for p in parts if p)
        system = record.get(columns["system"]) or "" if "system" in columns else ""
        return system, [("user", user), ("assistant", record[columns["response"]])]
    tags = entry["tags"]
    role, content = tags["role_tag"], tags["content_tag"]
    to_role = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant"}
    messages = record[columns["messages"]]
    system = ""
    if messages and messages[0][role] == tags["system_tag"]:
        system, messages = messages[0][content], messages[1:]
    turns = [(to_role[m[role]], m[content]) for m in messages]
    assert [r for r, _ in turns] == ["user", "assistant"] * (len(turns) // 2)
    assert turns and len(turns) % 2 == 0
    return system, turns


def read_output(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def top_ids(ids: list[str], utility: list[float], k: int) -> set[str]:
    return {i for _, i in sorted(zip(utility, ids, strict=True), reverse=True)[:k]}


# --- the three shapes ----------------------------------------------------------------


def llava_records(images: list[str]) -> list[dict]:
    out = []
    for i, image in enumerate(images):
        conv = [
            {"from": "human", "value": f"<image>\nWhat is in picture {i}?"},
            {"from": "gpt", "value": f"A square of colour {i}."},
        ]
        if i % 2:
            conv += [
                {"from": "human", "value": f"And its size, {i}?"},
                {"from": "gpt", "value": "Eight by eight."},
            ]
        if i == 1:
            conv.insert(0, {"from": "system", "value": "Answer briefly."})
        out.append({"id": f"l{i}", "image": image, "conversations": conv, "source": "test"})
    return out


def test_llava_jsonl_entry_reads_back_every_selected_record(tmp_path: Path) -> None:
    """LLaVA-shaped JSONL: conversations/from/value/human/gpt and the `image` field; read back
    through the entry alone, every kept record is user/assistant pairs with its own texts."""
    images = make_images(tmp_path, 5)
    records = llava_records(images)
    pool = write_pool(tmp_path / "pool.jsonl", records)
    ids, utility = [r["id"] for r in records], [0.5, 3.0, 1.0, 2.0, -1.0]
    scores = write_scores_file(tmp_path / "s.parquet", ids, utility)
    out = tmp_path / "sel.jsonl"  # the input's folder: relative image paths still resolve

    run = select_info(pool, scores, out)

    assert run.rc == 0, run.err
    assert run.err == ""  # no warning: the images resolve where they did
    assert load_entry(tmp_path) == {
        "file_name": "sel.jsonl",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "images": "image"},
        "tags": {
            "role_tag": "from",
            "content_tag": "value",
            "user_tag": "human",
            "assistant_tag": "gpt",
            "system_tag": "system",
        },
    }
    lines = [x for x in run.out.splitlines() if "LLaMA-Factory" in x]
    assert len(lines) == 1
    assert str(tmp_path / "dataset_info.json") in lines[0] and f"dataset: {NAME}" in lines[0]

    entry = load_entry(tmp_path)
    kept = read_output(tmp_path / entry["file_name"])
    originals = {r["id"]: r for r in records}
    assert {r["id"] for r in kept} == top_ids(ids, utility, 3)
    for rec in kept:
        system, turns = read_like_llamafactory(entry, rec)
        conv = [m for m in originals[rec["id"]]["conversations"] if m["from"] != "system"]
        assert turns == [
            ({"human": "user", "gpt": "assistant"}[m["from"]], m["value"]) for m in conv
        ]
        assert system == ("Answer briefly." if rec["id"] == "l1" else "")
        assert (tmp_path / rec[entry["columns"]["images"]]).is_file()  # media_dir = its folder


def test_messages_json_array_entry_and_relative_image_warning(tmp_path: Path) -> None:
    """The ms-swift / LLaMA-Factory multimodal-demo shape (messages/role/content + `images`)
    as a JSON array, written to another folder: the entry maps it, and one warning line says
    the relative image paths will not resolve against the new folder."""
    data = tmp_path / "data"
    images = make_images(data, 4)
    records = [
        {
            "id": f"m{i}",
            "messages": [
                {"role": "user", "content": f"<image>Who made picture {i}?"},
                {"role": "assistant", "content": f"Painter {i}."},
            ],
            "images": [image],
        }
        for i, image in enumerate(images)
    ]
    records[2]["messages"].insert(0, {"role": "system", "content": "Be exact."})
    pool = write_pool(data / "pool.json", records, container="json")
    ids, utility = [r["id"] for r in records], [1.0, 4.0, 3.0, 2.0]
    scores = write_scores_file(tmp_path / "s.parquet", ids, utility)
    out = tmp_path / "lf" / "top.json"

    run = select_info(pool, scores, out, "50%")

    assert run.rc == 0, run.err
    entry = load_entry(out.parent)
    assert entry == {
        "file_name": "top.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }
    kept = read_output(out)
    assert isinstance(json.loads(out.read_text()), list)  # still a JSON array
    assert {r["id"] for r in kept} == top_ids(ids, utility, 2) == {"m1", "m2"}
    originals = {r["id"]: r for r in records}
    for rec in kept:
        system, turns = read_like_llamafactory(entry, rec)
        msgs = [m for m in originals[rec["id"]]["messages"] if m["role"] != "system"]
        assert turns == [(m["role"], m["content"]) for m in msgs]
        assert system == ("Be exact." if rec["id"] == "m2" else "")
        assert rec["images"] == originals[rec["id"]]["images"]  # paths kept as written

    warnings = [x for x in run.err.splitlines() if "warning" in x]
    assert len(warnings) == 1
    assert "relative image paths" in warnings[0] and f"media_dir: {data}" in warnings[0]


def test_alpaca_entry_maps_instruction_input_output_and_system(tmp_path: Path) -> None:
    """Alpaca: formatting alpaca, prompt/query/response (+ system when a kept record has it),
    and the texts LLaMA-Factory builds are the records' own."""
    records = [
        {"id": "a0", "instruction": "Add 2 and 3.", "input": "", "output": "5"},
        {"id": "a1", "instruction": "Translate.", "input": "chat", "output": "cat"},
        {"id": "a2", "instruction": "Name a colour.", "output": "Blue", "system": "Be terse."},
        {"id": "a3", "instruction": "Count.", "input": "a b c", "output": "3"},
    ]
    pool = write_pool(tmp_path / "alpaca.jsonl", records)
    ids, utility = [r["id"] for r in records], [0.1, 0.9, 0.8, 0.7]
    scores = write_scores_file(tmp_path / "s.parquet", ids, utility)
    out = tmp_path / "sel.jsonl"

    run = select_info(pool, scores, out)

    assert run.rc == 0, run.err
    entry = load_entry(tmp_path)
    assert entry == {
        "file_name": "sel.jsonl",
        "formatting": "alpaca",
        "columns": {
            "prompt": "instruction",
            "response": "output",
            "query": "input",
            "system": "system",
        },
    }
    kept = read_output(out)
    assert {r["id"] for r in kept} == {"a1", "a2", "a3"}
    for rec in kept:
        system, turns = read_like_llamafactory(entry, rec)
        user = "\n".join(x for x in (rec["instruction"], rec.get("input")) if x)
        assert turns == [("user", user), ("assistant", rec["output"])]
        assert system == rec.get("system", "")


def test_prompt_response_records_map_to_alpaca_without_query(tmp_path: Path) -> None:
    """{"prompt", "response"} records: alpaca with prompt/response columns and no query,
    which LLaMA-Factory would otherwise look up as a missing `input` column."""
    records = [{"id": f"p{i}", "prompt": f"q{i}", "response": f"r{i}"} for i in range(4)]
    pool = write_pool(tmp_path / "plain.jsonl", records)
    scores = write_scores_file(tmp_path / "s.parquet", [r["id"] for r in records], [4, 3, 2, 1])
    run = select_info(pool, scores, tmp_path / "sel.jsonl", "2")
    assert run.rc == 0, run.err
    assert load_entry(tmp_path) == {
        "file_name": "sel.jsonl",
        "formatting": "alpaca",
        "columns": {"prompt": "prompt", "response": "response"},
    }


# --- dataset_info.json handling ----------------------------------------------------------


@pytest.fixture
def plain_pool(tmp_path: Path) -> tuple[Path, Path]:
    records = [{"id": f"p{i}", "prompt": f"q{i}", "response": f"r{i}"} for i in range(4)]
    pool = write_pool(tmp_path / "pool.jsonl", records)
    scores = write_scores_file(tmp_path / "s.parquet", [r["id"] for r in records], [1, 2, 3, 4])
    return pool, scores


def test_existing_dataset_info_is_merged_not_replaced(tmp_path: Path, plain_pool) -> None:
    """Other entries survive unchanged and in place; only NAME's entry is replaced; no
    temporary file is left behind."""
    pool, scores = plain_pool
    folder = tmp_path / "lf"
    folder.mkdir()
    other = {"file_name": "other.json", "formatting": "sharegpt", "columns": {"messages": "c"}}
    before = {"alpha": other, NAME: {"file_name": "stale.json"}, "omega": {"hf_hub_url": "x/y"}}
    (folder / "dataset_info.json").write_text(json.dumps(before), encoding="utf-8")

    run = select_info(pool, scores, folder / "sel.jsonl", "2")

    assert run.rc == 0, run.err
    after = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
    assert list(after) == ["alpha", NAME, "omega"]
    assert after["alpha"] == other and after["omega"] == {"hf_hub_url": "x/y"}
    assert after[NAME]["file_name"] == "sel.jsonl" and after[NAME]["formatting"] == "alpaca"
    assert sorted(p.name for p in folder.iterdir()) == ["dataset_info.json", "sel.jsonl"]


def test_invalid_existing_dataset_info_is_an_error_and_left_alone(
    tmp_path: Path, plain_pool
) -> None:
    """A dataset_info.json that is not valid JSON: exit 2, the message names it, it is not
    overwritten, and the selection is not written either."""
    pool, scores = plain_pool
    folder = tmp_path / "lf"
    folder.mkdir()
    broken = '{"alpha": {"file_name": "a.json",}\n'
    (folder / "dataset_info.json").write_text(broken, encoding="utf-8")

    run = select_info(pool, scores, folder / "sel.jsonl", "2")

    assert run.rc == 2
    assert str(folder / "dataset_info.json") in run.err and "not valid JSON" in run.err
    assert (folder / "dataset_info.json").read_text(encoding="utf-8") == broken
    assert sorted(p.name for p in folder.iterdir()) == ["dataset_info.json"]


def test_dataset_info_that_is_not_an_object_is_refused(tmp_path: Path, plain_pool) -> None:
    pool, scores = plain_pool
    (tmp_path / "dataset_info.json").write_text("[]\n", encoding="utf-8")
    run = select_info(pool, scores, tmp_path / "sel.jsonl", "2")
    assert run.rc == 2 and "expected a JSON object" in run.err
    assert (tmp_path / "dataset_info.json").read_text() == "[]\n"


# --- what LLaMA-Factory cannot read: refused before anything is written --------------------


def refused(tmp_path: Path, records: list[dict], *, out_name: str = "sel.jsonl") -> Run:
    """Run select on `records` (all kept); check exit 2 and that nothing was written."""
    src = tmp_path / "in"
    pool = write_pool(src / "pool.jsonl", records)
    ids = [r["id"] for r in records]
    scores = write_scores_file(tmp_path / "s.parquet", ids, list(range(len(ids))))
    out_dir = tmp_path / "out"
    run = select_info(pool, scores, out_dir / out_name, "100%")
    assert run.rc == 2, run.out
    assert "stepsift select: error:" in run.err
    assert not out_dir.exists()
    return run


def test_content_parts_are_refused(tmp_path: Path) -> None:
    """OpenAI/TRL content parts cannot go through LLaMA-Factory's sharegpt converter."""
    parts = {
        "id": "o0",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
        ],
    }
    run = refused(tmp_path, [parts])
    assert "content is a list of parts" in run.err and "'o0'" in run.err


def test_turns_out_of_user_assistant_order_are_refused(tmp_path: Path) -> None:
    """LLaMA-Factory would silently skip a conversation that is not user/assistant pairs."""
    ok = {
        "id": "ok",
        "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
    }
    bad = {
        "id": "bad",
        "conversations": [
            {"from": "human", "value": "q1"},
            {"from": "human", "value": "q2"},
            {"from": "gpt", "value": "a"},
        ],
    }
    run = refused(tmp_path, [ok, bad])
    assert "1 of the 2 selected" in run.err and "'bad'" in run.err
    assert "human, human, gpt" in run.err


def test_images_without_placeholders_are_refused(tmp_path: Path) -> None:
    """stepsift accepts images with no <image> in the text; LLaMA-Factory does not."""
    make_images(tmp_path / "in", 1)
    rec = {
        "id": "np",
        "images": ["img/0.png"],
        "messages": [
            {"role": "user", "content": "Describe."},
            {"role": "assistant", "content": "Red."},
        ],
    }
    run = refused(tmp_path, [rec])
    assert "1 image(s) but 0 <image> placeholder(s)" in run.err


def test_mixed_image_fields_are_refused(tmp_path: Path) -> None:
    """One entry names one image column: 'image' in some records and 'images' in others
    cannot both be read."""
    make_images(tmp_path / "in", 2)

    def rec(i: int, key: str) -> dict:
        conv = [{"from": "human", "value": "<image>q"}, {"from": "gpt", "value": "a"}]
        return {"id": f"x{i}", key: [f"img/{i}.png"], "conversations": conv}

    run = refused(tmp_path, [rec(0, "image"), rec(1, "images")])
    assert "image fields" in run.err and "'x0'" in run.err and "'x1'" in run.err


def test_a_field_with_two_json_types_is_refused(tmp_path: Path) -> None:
    """LLaMA-Factory's datasets loader needs one type per column (an int id and a string id
    fail to load)."""
    records = [
        {"id": "s1", "prompt": "q", "response": "a", "meta": 1},
        {"id": "s2", "prompt": "q", "response": "a", "meta": "one"},
    ]
    run = refused(tmp_path, records)
    assert "'meta'" in run.err and "different JSON types" in run.err


@pytest.mark.parametrize("name", ["a,b", " padded", ""])
def test_a_name_llamafactory_cannot_take_back_is_refused(tmp_path: Path, plain_pool, name) -> None:
    pool, scores = plain_pool
    out = tmp_path / "o" / "sel.jsonl"
    run = run_cli(
        "select", pool, "--scores", scores, "--keep", "2", "--out", out, "--llamafactory-info", name
    )
    assert run.rc == 2 and "--llamafactory-info" in run.err
    assert not out.parent.exists()


@pytest.mark.parametrize("out_name", ["sel.txt", "sel.JSONL", "dataset_info.json"])
def test_an_output_llamafactory_cannot_load_is_refused(tmp_path: Path, out_name: str) -> None:
    """LLaMA-Factory picks its loader by the (case-sensitive) extension; and the output must
    not take the place of dataset_info.json itself."""
    run = refused(tmp_path, [{"id": "p", "prompt": "q", "response": "a"}], out_name=out_name)
    if out_name == "dataset_info.json":
        assert "the LLaMA-Factory entry itself" in run.err
        return
    assert "*.jsonl or *.json" in run.err


def test_ms_swift_loss_false_warns(tmp_path: Path) -> None:
    """ms-swift's per-turn `"loss": false` means nothing to LLaMA-Factory: say so."""
    rec = {
        "id": "w",
        "messages": [
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1", "loss": False},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "a2"},
        ],
    }
    pool = write_pool(tmp_path / "pool.jsonl", [rec])
    scores = write_scores_file(tmp_path / "s.parquet", ["w"], [1.0])
    run = select_info(pool, scores, tmp_path / "sel.jsonl", "1")
    assert run.rc == 0, run.err
    assert "warning" in run.err and '"loss": false' in run.err
    assert load_entry(tmp_path)["columns"] == {"messages": "messages"}


def test_select_without_the_option_writes_no_dataset_info(tmp_path: Path, plain_pool) -> None:
    pool, scores = plain_pool
    out = tmp_path / "o" / "sel.jsonl"
    run = run_cli("select", pool, "--scores", scores, "--keep", "2", "--out", out)
    assert run.rc == 0 and out.exists()
    assert not (out.parent / "dataset_info.json").exists()
    assert "LLaMA-Factory" not in run.out


def test_role_values_that_differ_between_records_are_refused(tmp_path: Path) -> None:
    """stepsift reads 'human' and 'user' alike, but an entry has one user_tag."""

    def rec(i: int, user: str, assistant: str) -> dict:
        conv = [{"from": user, "value": "q"}, {"from": assistant, "value": "a"}]
        return {"id": f"r{i}", "conversations": conv}

    run = refused(tmp_path, [rec(0, "human", "gpt"), rec(1, "user", "assistant")])
    assert "user role values" in run.err


def test_mixed_formats_in_one_input_are_refused(tmp_path: Path) -> None:
    """A file mixing LLaVA and alpaca records is invalid input: exit 2, nothing written."""
    llava = {"id": "l", "conversations": [{"from": "human", "value": "q"}]}
    llava["conversations"].append({"from": "gpt", "value": "a"})
    alpaca = {"id": "a", "instruction": "q", "output": "a"}
    src = tmp_path / "in"
    pool = write_pool(src / "pool.jsonl", [llava, llava | {"id": "l2"}, alpaca])
    scores = write_scores_file(tmp_path / "s.parquet", ["l", "l2", "a"], [1.0, 2.0, 3.0])
    run = select_info(pool, scores, tmp_path / "out" / "sel.jsonl", "100%")
    assert run.rc == 2 and "'alpaca' format but the file is 'llava'" in run.err
    assert not (tmp_path / "out").exists()
