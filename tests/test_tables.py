"""Parquet and Arrow input, as the Hugging Face hub and `datasets` ship multimodal SFT sets:
read (every record format; images embedded as `{"bytes", "path"}` structs, lists of them,
or paths), validated with errors naming file, row group, row and column, scored, and
selected back out as Parquet with the input's schema and rows unchanged.

Every table here is a real Parquet/Arrow file written by pyarrow or by `datasets`.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import run_cli
from PIL import Image

from stepsift.data import (
    DataValidationError,
    EmbeddedImage,
    LazyRecords,
    TableError,
    index_records,
    load_image,
    read_records,
)

FAST = ["--warmup-min-samples", "4", "--warmup-min-steps", "2", "--batch-size", "4", "--quiet"]


def png(colour: tuple[int, int, int], size: int = 12) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "PNG")
    return buf.getvalue()


def sharegpt_rows(n: int, start: int = 0, ids: bool = False) -> list[dict]:
    """LLaMA-Factory's multimodal ShareGPT layout with embedded images (its mllm_demo)."""
    rows = []
    for i in range(start, start + n):
        row = {
            "messages": [
                {"role": "user", "content": f"<image>What colour is shade {i}?"},
                {"role": "assistant", "content": f"Shade {i} is red number {i % 7}."},
            ],
            "images": [{"bytes": png((20 * (i % 12), 0, 0)), "path": f"shade{i}.png"}],
        }
        rows.append({"id": f"s{i}", **row} if ids else row)
    return rows


def write(path: Path, rows: list[dict], group: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=group)
    return path


# ---- reading -----------------------------------------------------------------------------


def test_sharegpt_with_embedded_images_reads_as_records(tmp_path):
    f = write(tmp_path / "train.parquet", sharegpt_rows(6))
    got = read_records(f)
    assert (got.format, got.container, got.problems) == ("sharegpt", "parquet", [])
    first = got.records[0]
    assert first.id == "train:0"  # no id column: file and row
    assert [t.text for t in first.turns] == ["What colour is shade 0?", "Shade 0 is red number 0."]
    assert [t.supervised for t in first.turns] == [False, True]
    (image,) = first.images
    assert isinstance(image, EmbeddedImage)
    assert image.data == png((0, 0, 0))
    assert "row group 0, row 0" in image.name and "images[0].bytes" in image.name
    assert load_image(image).size == (12, 12)
    # row 5 is in the second row group of 4 rows
    assert (got.records[5].source.row_group, got.records[5].source.line) == (1, 5)


def test_every_format_and_image_form(tmp_path):
    shade = {"bytes": png((255, 0, 0)), "path": None}
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (5, 5)).save(tmp_path / "pics" / "a.png")
    cases = {
        # LLaVA: `conversations` and one struct (not a list) in `image`
        "llava": [{"id": "a", "image": shade, "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "Red."}]}],
        # TRL / HF: messages with content parts and an `images` list
        "openai": [{"messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Name it"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Red."}]}],
            "images": [shade]}],
        # prompt/response with a path relative to the shard's folder
        "plain": [{"prompt": "<image>Colour?", "response": "Black.", "images": ["pics/a.png"]}],
        "alpaca": [{"instruction": "Add", "input": "1+1", "output": "2"}],
    }  # fmt: skip
    for fmt, rows in cases.items():
        got = read_records(write(tmp_path / f"{fmt}.parquet", rows))
        assert (got.format, got.problems) == (fmt, []), fmt
        images = got.records[0].images
        if fmt == "plain":
            assert images == (tmp_path / "pics" / "a.png",)
        elif fmt != "alpaca":
            assert isinstance(images[0], EmbeddedImage) and images[0].data == shade["bytes"]
    assert read_records(tmp_path / "llava.parquet").records[0].id == "a"  # the id column


def test_a_folder_of_shards_a_glob_and_ids(tmp_path):
    write(tmp_path / "data" / "train-00000-of-00002.parquet", sharegpt_rows(5))
    write(tmp_path / "data" / "train-00001-of-00002.parquet", sharegpt_rows(5, start=5))
    by_folder = read_records(tmp_path)  # searched recursively, as the hub lays shards out
    by_glob = read_records(str(tmp_path / "data" / "train-*.parquet"))
    ids = [r.id for r in by_folder.records]
    assert len(ids) == len(set(ids)) == 10
    assert ids[0] == "data/train-00000-of-00002:0" and ids[5] == "data/train-00001-of-00002:0"
    assert [r.id for r in by_glob.records] == [i.removeprefix("data/") for i in ids]
    assert [r.turns for r in by_glob.records] == [r.turns for r in by_folder.records]


def test_a_datasets_save_to_disk_folder_and_its_parquet_export(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({
        "messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        "images": datasets.Sequence(datasets.Image()),
    })  # fmt: skip
    rows = sharegpt_rows(5)
    data = {
        "messages": [r["messages"] for r in rows],
        "images": [[Image.open(io.BytesIO(r["images"][0]["bytes"]))] for r in rows],
    }
    ds = datasets.Dataset.from_dict(data, features=features)
    ds.save_to_disk(tmp_path / "saved")
    ds.to_parquet(tmp_path / "exported.parquet")
    saved, exported = read_records(tmp_path / "saved"), read_records(tmp_path / "exported.parquet")
    assert saved.container == "arrow" and exported.container == "parquet"
    assert [r.turns for r in saved.records] == [r.turns for r in exported.records]
    assert len(saved.records) == 5 and not saved.problems and not exported.problems
    assert load_image(saved.records[3].images[0]).getpixel((0, 0)) == (60, 0, 0)
    datasets.DatasetDict({"train": ds}).save_to_disk(tmp_path / "dict")
    with pytest.raises(TableError, match="DatasetDict; give one split's folder"):
        read_records(tmp_path / "dict")


# ---- bad input -----------------------------------------------------------------------------


def test_bad_rows_name_file_row_group_row_and_column(tmp_path):
    rows = sharegpt_rows(8)
    rows[1]["images"][0]["bytes"] = b"not an image"
    rows[5]["images"] = [{"url": "x"}]  # a struct of the wrong shape
    rows[6]["messages"] = [{"role": "user", "content": "<image>Only a question"}]
    f = tmp_path / "t.parquet"
    # mixed struct shapes need an explicit schema: images as a list of a wide struct
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string()), ("url", pa.string())])
    schema = pa.schema([
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("images", pa.list_(image)),
    ])  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), f, row_group_size=4)
    got = read_records(f)
    by_row: dict[int, list] = {}
    for p in got.problems:
        by_row.setdefault(p.line, []).append(p)
    assert sorted(by_row) == [1, 5, 6] and len(got.records) == 5
    (undecodable,) = by_row[1]
    assert f"{f}: row group 0, row 1: column 'images[0].bytes'" in str(undecodable)
    assert "not a known image format" in str(undecodable)
    wrong_struct = [p for p in by_row[5] if p.field == "images[0]"]
    assert wrong_struct and wrong_struct[0].row_group == 1
    assert "neither bytes nor a path" in wrong_struct[0].message
    assert all(p.row_group == 1 for p in by_row[6])
    assert by_row[6][0].message == "no assistant turn: nothing to train on"


def test_a_missing_column_and_a_corrupt_shard(tmp_path):
    no_turns = read_records(write(tmp_path / "a" / "t.parquet", [{"question": "q", "n": 1}]))
    assert "unknown record format (keys: 'question', 'n')" in no_turns.problems[0].message
    good = write(tmp_path / "b" / "good.parquet", sharegpt_rows(4))
    bad = tmp_path / "b" / "zbad.parquet"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # cut mid-file
    got = read_records(tmp_path / "b")
    assert len(got.records) == 4  # the good shard is read; the cut one is one problem
    (problem,) = got.problems
    assert problem.file == bad and "cannot read this parquet file" in str(problem)


def test_shards_with_different_columns_are_refused(tmp_path):
    write(tmp_path / "a.parquet", sharegpt_rows(2))
    write(tmp_path / "b.parquet", [{"prompt": "p", "response": "r"}])
    with pytest.raises(TableError, match="columns differ"):
        read_records(tmp_path)


def test_skip_invalid_scores_the_rest_and_lists_the_rejected_rows(tmp_path):
    rows = sharegpt_rows(12, ids=True)
    rows[2]["images"][0]["bytes"] = b"\x89PNG broken"
    pool = write(tmp_path / "pool" / "train.parquet", rows)
    anchors = write(tmp_path / "anchors.parquet", sharegpt_rows(4, start=40, ids=True))
    out = tmp_path / "scores.parquet"
    refused = run_cli("score", pool, "--anchors", anchors, "--out", out, "--method", "exact", *FAST)
    assert refused.rc != 0 and "row group 0, row 2 (id s2): images[0].bytes" in refused.err
    run = run_cli("score", pool, "--anchors", anchors, "--out", out, "--method", "exact",
                  "--skip-invalid", *FAST)  # fmt: skip
    assert run.rc == 0, run.err
    assert len(pq.read_table(out)) == 11
    (rejected,) = [json.loads(x) for x in (tmp_path / "scores.rejected.jsonl").open()]
    assert (rejected["id"], rejected["row_group"], rejected["line"]) == ("s2", 0, 2)
    assert "<11 bytes>" in rejected["raw"]  # the bytes summarised, not dumped
    sub = tmp_path / "sub.parquet"
    assert run_cli("select", pool, "--scores", out, "--keep", "50%", "--out", sub).rc != 0
    done = run_cli("select", pool, "--scores", out, "--keep", "50%", "--out", sub, "--skip-invalid")
    assert done.rc == 0, done.err
    assert "s2" not in pq.read_table(sub).column("id").to_pylist()


# ---- scoring and selecting -------------------------------------------------------------


def test_a_table_scores_as_the_same_records_in_jsonl_with_image_files(tmp_path):
    """Embedded bytes and image files are the same data: the same utilities, to the bit."""
    rows = sharegpt_rows(10, ids=True)
    table = write(tmp_path / "pool.parquet", rows, group=3)
    lines = []
    for r in rows:
        (tmp_path / "img").mkdir(exist_ok=True)
        (tmp_path / "img" / f"{r['id']}.png").write_bytes(r["images"][0]["bytes"])
        lines.append(json.dumps({**r, "images": [f"img/{r['id']}.png"]}))
    jsonl = tmp_path / "pool.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    anchors = write(tmp_path / "anchors.parquet", sharegpt_rows(4, start=30, ids=True))
    got = {}
    for name, pool in (("table", table), ("jsonl", jsonl)):
        out = tmp_path / f"{name}.scores.parquet"
        run = run_cli("score", pool, "--anchors", anchors, "--out", out, "--method", "exact",
                      "--dtype", "float64", *FAST)  # fmt: skip
        assert run.rc == 0, run.err
        t = pq.read_table(out)
        got[name] = dict(zip(t.column("id").to_pylist(), t.column("utility").to_pylist(),
                             strict=True))  # fmt: skip
    assert got["table"] == got["jsonl"] and len(got["table"]) == 10


@pytest.fixture
def scored_table(tmp_path):
    """Two shards of 9 rows (row groups of 4), scored."""
    write(tmp_path / "pool" / "part-0.parquet", sharegpt_rows(9, ids=True))
    write(tmp_path / "pool" / "part-1.parquet", sharegpt_rows(9, start=9, ids=True))
    anchors = write(tmp_path / "anchors.parquet", sharegpt_rows(4, start=40, ids=True))
    out = tmp_path / "scores.parquet"
    run = run_cli("score", tmp_path / "pool", "--anchors", anchors, "--out", out,
                  "--method", "exact", *FAST)  # fmt: skip
    assert run.rc == 0, run.err
    return tmp_path / "pool", out


def test_select_writes_the_kept_rows_unchanged_as_parquet(scored_table, tmp_path):
    pool, scores = scored_table
    sub = tmp_path / "subset.parquet"
    run = run_cli("select", pool, "--scores", scores, "--keep", "6", "--out", sub)
    assert run.rc == 0, run.err
    source = pa.concat_tables(pq.read_table(f) for f in sorted(pool.glob("*.parquet")))
    kept = pq.read_table(sub)
    assert kept.schema.equals(source.schema, check_metadata=True)
    t = pq.read_table(scores)
    utility = dict(zip(t.column("id").to_pylist(), t.column("utility").to_pylist(), strict=True))
    best = sorted(utility, key=lambda i: -utility[i])[:6]
    source_rows = {r["id"]: r for r in source.to_pylist()}
    in_input_order = [i for i in source.column("id").to_pylist() if i in best]
    assert kept.column("id").to_pylist() == in_input_order
    assert kept.to_pylist() == [source_rows[i] for i in in_input_order]  # bytes and all
    by_utility = tmp_path / "by_utility.parquet"
    run = run_cli("select", pool, "--scores", scores, "--keep", "6", "--out", by_utility,
                  "--order", "utility")  # fmt: skip
    assert pq.read_table(by_utility).column("id").to_pylist() == best
    wrong = run_cli(
        "select", pool, "--scores", scores, "--keep", "6", "--out", tmp_path / "x.jsonl"
    )
    assert wrong.rc != 0 and "name the output *.parquet" in wrong.err


def test_the_subset_loads_in_datasets_with_its_image_feature(scored_table, tmp_path):
    datasets = pytest.importorskip("datasets")
    pool, scores = scored_table
    source = tmp_path / "hf.parquet"
    features = datasets.Features({
        "id": datasets.Value("string"),
        "messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        "images": datasets.Sequence(datasets.Image()),
    })  # fmt: skip
    rows = pa.concat_tables(pq.read_table(f) for f in sorted(pool.glob("*.parquet"))).to_pylist()
    datasets.Dataset.from_list(rows, features=features).to_parquet(source)
    sub = tmp_path / "sub.parquet"
    assert run_cli("select", source, "--scores", scores, "--keep", "5", "--out", sub).rc == 0
    loaded = datasets.load_dataset("parquet", data_files=str(sub), split="train")
    assert loaded.features["images"] == features["images"]  # still an Image feature
    assert len(loaded) == 5 and loaded[0]["images"][0].size == (12, 12)


def test_llamafactory_entry_for_a_parquet_subset(scored_table, tmp_path):
    pool, scores = scored_table
    out = tmp_path / "lf" / "subset.parquet"
    run = run_cli("select", pool, "--scores", scores, "--keep", "4", "--out", out,
                  "--llamafactory-info", "picked")  # fmt: skip
    assert run.rc == 0, run.err
    entry = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())["picked"]
    assert entry["file_name"] == "subset.parquet" and entry["formatting"] == "sharegpt"
    assert entry["columns"] == {"messages": "messages", "images": "images"}
    assert "relative image" not in run.err  # embedded images have no path to resolve
    assert len(pq.read_table(out)) == 4


def test_report_shows_embedded_images(scored_table, tmp_path):
    pool, scores = scored_table
    run = run_cli("report", scores, "--candidates", pool, "--out", tmp_path / "rep", "--top", "3")
    assert run.rc == 0, run.err
    page = (tmp_path / "rep" / "report.html").read_text()
    # three useful samples, each with its thumbnail (the plots are inline PNGs too)
    assert page.count('<div class="images"><img') >= 3 and "cannot" not in page


# ---- streaming -----------------------------------------------------------------------------


def test_rows_are_read_back_group_by_group(tmp_path):
    write(tmp_path / "t.parquet", sharegpt_rows(10), group=4)
    index = index_records(tmp_path / "t.parquet")
    order = index.length_order()
    groups = index.where[order, 1]
    assert list(groups) == sorted(groups)  # a batch of neighbours reads one row group
    records = LazyRecords(index)
    assert [r.id for r in records[2:5]] == ["t:2", "t:3", "t:4"]
    clone = pickle.loads(pickle.dumps(index.reader.resolved()))  # as Ray hands it to workers
    (again,) = clone.read(index.where[[7]], index.lines[[7]])
    assert again.id == "t:7" and again.images[0].data == records[7].images[0].data


def test_refuses_to_score_without_rows(tmp_path):
    f = tmp_path / "empty.parquet"
    pq.write_table(pa.Table.from_pylist(sharegpt_rows(1)).slice(0, 0), f)
    with pytest.raises(DataValidationError, match="no rows"):
        read_records(f).raise_for_problems()
    assert np.asarray(index_records(f).lines).size == 0


def test_the_writer_gathers_window_by_window_in_any_order(tmp_path, monkeypatch):
    """Small windows (one row each, here) give the same file as one: every order kept."""
    from stepsift.data import table_writer

    write(tmp_path / "t" / "a.parquet", sharegpt_rows(7, ids=True), group=3)
    write(tmp_path / "t" / "b.parquet", sharegpt_rows(6, start=7, ids=True), group=4)
    index = index_records(tmp_path / "t")
    order = np.random.default_rng(0).permutation(len(index))[:9]
    whole = tmp_path / "whole.parquet"
    table_writer.write_table_rows(index.reader.table, index.where[order], index.lines[order], whole)
    monkeypatch.setattr(table_writer, "_WINDOW_BYTES", 1)
    windowed = tmp_path / "windowed.parquet"
    table_writer.write_table_rows(
        index.reader.table, index.where[order], index.lines[order], windowed
    )
    assert pq.read_table(whole).column("id").to_pylist() == index.id_list(order)
    assert pq.read_table(windowed).to_pylist() == pq.read_table(whole).to_pylist()


def test_the_python_path_takes_keep_as_text_and_checks_order(scored_table, tmp_path):
    from stepsift.select.llamafactory import select_with_dataset_info

    pool, scores = scored_table
    out = tmp_path / "lf" / "subset.parquet"
    selection, _ = select_with_dataset_info(pool, scores, "4", out, "picked")
    assert len(selection.kept_ids) == 4 and len(pq.read_table(out)) == 4
    with pytest.raises(ValueError, match="unknown order 'best'"):
        select_with_dataset_info(pool, scores, "4", out, "picked", order="best")
