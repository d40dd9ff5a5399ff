"""Argument types for comma-separated lists (the bench's fractions, seeds, families)."""

from __future__ import annotations

import argparse


def floats(text: str) -> tuple[float, ...]:
    """'0.1,20%,0.5' -> (0.1, 0.2, 0.5)"""
    out = []
    for part in text.split(","):
        part = part.strip()
        out.append(float(part[:-1]) / 100 if part.endswith("%") else float(part))
    return tuple(out)


def words(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split(",") if w.strip())


def noise_mix(text: str) -> dict[str, float]:
    """'near_duplicate=6,misread=1' -> {"near_duplicate": 6.0, "misread": 1.0}."""
    out: dict[str, float] = {}
    for part in words(text):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT, got {part!r}")
    return out
