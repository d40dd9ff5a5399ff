"""Fixtures for the utility tests: tiny records with images and a tiny float64 proxy."""

from __future__ import annotations

from pathlib import Path

import pytest
from utility_reference import SMALL, make_png, make_record

from stepsift.data.record import Record
from stepsift.proxy.builtin import BuiltinProxy
from stepsift.proxy.tiny_vlm import TinyVLMConfig


@pytest.fixture
def pngs(tmp_path: Path) -> list[Path]:
    return [
        make_png(tmp_path / "a.png", 32, 32, 1),
        make_png(tmp_path / "b.png", 40, 24, 2),
        make_png(tmp_path / "c.png", 17, 29, 3),
    ]


@pytest.fixture
def candidates(pngs: list[Path]) -> list[Record]:
    """Five candidates of different lengths; two with images (one with two)."""
    return [
        make_record("c0", "2+3?", "5"),
        make_record("c1", "What colour is it?", "Mostly noise, some red.", [pngs[0]]),
        make_record("c2", "Name a prime number above ten.", "Eleven is prime: 11."),
        make_record("c3", "Describe both.", "Two noisy strips.", [pngs[1], pngs[2]]),
        make_record("c4", "Say hi", "hi"),
    ]


@pytest.fixture
def anchors(pngs: list[Path]) -> list[Record]:
    return [
        make_record("a0", "What is 4+4?", "8"),
        make_record("a1", "What is in the picture?", "Random pixels.", [pngs[2]]),
        make_record("a2", "Name a prime number.", "Seven is prime."),
    ]


@pytest.fixture
def proxy() -> BuiltinProxy:
    p = BuiltinProxy(TinyVLMConfig(**SMALL), seed=0)
    p.model.double()
    return p
