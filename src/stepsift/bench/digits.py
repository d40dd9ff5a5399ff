"""Digit images for the benchmark: sklearn's bundled 8x8 digits, split once, laid out in strips.

The 1797 images are split, stratified by label and with a fixed seed that does not depend on
the benchmark's seed, into three disjoint parts: `pool` (training candidates), `dev` (trusted
anchors) and `test`. Because the split is fixed, no benchmark built from any seed can show a
test image to the model during training.

A problem image is 2 or 3 digits of one split side by side: white strokes on black, a 1 px
black gap between digits, upscaled 4x with nearest neighbour (32 px high, 68 or 104 px wide).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ("pool", "dev", "test")
SPLIT_FRACTIONS = {"pool": 0.60, "dev": 0.15, "test": 0.25}
SPLIT_SEED = 0  # fixed on purpose: the split must not move with the benchmark seed
SCALE = 4
GAP = 1  # px between digits, before upscaling


@dataclass(frozen=True)
class DigitBank:
    """The digit images, their labels and the disjoint split each image belongs to."""

    images: np.ndarray  # (N, 8, 8) uint8, values 0..16 as in sklearn
    labels: np.ndarray  # (N,) int, 0..9
    splits: dict[str, np.ndarray]  # split name -> sorted image indices

    def indices(self, split: str, label: int) -> np.ndarray:
        """Image indices of `split` that show digit `label`."""
        idx = self.splits[split]
        return idx[self.labels[idx] == label]

    def pick(self, rng: np.random.Generator, split: str, values: Sequence[int]) -> list[int]:
        """One random image index of `split` for each digit value, in order."""
        return [int(rng.choice(self.indices(split, int(v)))) for v in values]


def stratified_split(
    labels: np.ndarray, fractions: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Split indices per label by `fractions` (in order), so every split has every digit."""
    rng = np.random.default_rng(seed)
    names = list(fractions)
    cum = np.cumsum([fractions[n] for n in names])
    if not np.isclose(cum[-1], 1.0):
        raise ValueError(f"split fractions must sum to 1, got {cum[-1]}")
    parts: dict[str, list[int]] = {n: [] for n in names}
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        cuts = np.round(cum * len(idx)).astype(int)
        for name, lo, hi in zip(names, np.r_[0, cuts[:-1]], cuts, strict=True):
            parts[name].extend(idx[lo:hi].tolist())
    return {n: np.array(sorted(p), dtype=np.int64) for n, p in parts.items()}


@lru_cache(maxsize=1)
def load_bank() -> DigitBank:
    """Load sklearn's digits once and split them with the fixed `SPLIT_SEED`."""
    from sklearn.datasets import load_digits  # imported lazily: sklearn is slow to import

    data = load_digits()
    images = data.images.astype(np.uint8)
    labels = data.target.astype(np.int64)
    splits = stratified_split(labels, SPLIT_FRACTIONS, SPLIT_SEED)
    for arr in (images, labels, *splits.values()):
        arr.flags.writeable = False  # the bank is cached and shared
    return DigitBank(images=images, labels=labels, splits=splits)


def compose(
    bank: DigitBank, indices: Sequence[int], scale: int = SCALE, gap: int = GAP
) -> np.ndarray:
    """Digits side by side, white on black, upscaled: (8*scale, W) uint8 in 0..255."""
    tiles: list[np.ndarray] = []
    for i, idx in enumerate(indices):
        if i:
            tiles.append(np.zeros((8, gap), dtype=np.uint8))
        # 0..16 -> 0..255; integer math keeps this exact and platform independent
        tiles.append((bank.images[idx].astype(np.int32) * 255 // 16).astype(np.uint8))
    strip = np.concatenate(tiles, axis=1)
    return np.kron(strip, np.ones((scale, scale), dtype=np.uint8))  # nearest-neighbour upscale


def save_png(pixels: np.ndarray, path: Path) -> None:
    """Save a grayscale strip as an RGB PNG (RGB because VLM loaders expect 3 channels)."""
    Image.fromarray(pixels).convert("RGB").save(path, format="PNG")
