"""Write a benchmark to disk: pool, anchors and test as LLaVA-format JSONL, plus PNG images.

Layout under `out_dir`:

    pool.jsonl     candidates, a fraction of them noisy (see `problems.make_pool`)
    anchors.jsonl  clean problems on dev-split images (the trusted anchor set), each with a
                   `group` field: its problem template, for per-group utilities
    test.jsonl     clean problems on test-split images (never seen in training)
    images/        one PNG per sample, except near-duplicates that reuse another's file

Each line is `{"id", "image", "conversations", "meta"}`, with `image` relative to the JSONL's
folder. `meta` holds the ground truth (noise tag, true answer); the scorer must not read it.

    python -m stepsift.bench.generate OUT_DIR --n-pool 2000
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stepsift.bench.digits import compose, load_bank, save_png
from stepsift.bench.problems import (
    DEFAULT_NOISE_RATE,
    Sample,
    extract_answer,
    is_correct,
    make_clean,
    make_pool,
)

__all__ = ["BenchmarkPaths", "write_benchmark", "to_llava", "extract_answer", "is_correct"]

IMAGE_DIR = "images"


@dataclass(frozen=True)
class BenchmarkPaths:
    root: Path
    pool: Path
    anchors: Path
    test: Path
    images: Path


def to_llava(sample: Sample) -> dict[str, Any]:
    """The sample as a LLaVA record; the image path is relative to the JSONL's folder."""
    return {
        "id": sample.id,
        "image": f"{IMAGE_DIR}/{sample.image_of}.png",
        "conversations": [
            {"from": "human", "value": f"<image>\n{sample.question}"},
            {"from": "gpt", "value": sample.answer},
        ],
        "meta": sample.meta,
    }


def digits_sentence(digits: list[int]) -> str:
    """'The digits are 3, 7 and 5.': the problem's digits said in words, for text-only use."""
    words = [str(d) for d in digits]
    listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    return f"The digits are {listed}."


def write_text_chat(samples: list[Sample], path: Path) -> None:
    """Text-only `messages` records (ms-swift / LLaMA-Factory shape): the question states
    its digits instead of showing them. The noise tag rides along in `meta`, unread."""
    with open(path, "w", encoding="utf-8") as f:
        for s in samples:
            question = f"{digits_sentence(s.meta['digits'])} {s.question}"
            record = {
                "id": s.id,
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": s.answer},
                ],
                "meta": {"noise": s.meta["noise"]},
            }
            f.write(json.dumps(record) + "\n")


def _write(samples: list[Sample], jsonl: Path, images: Path, grouped: bool = False) -> None:
    bank = load_bank()
    with jsonl.open("w", encoding="utf-8") as f:
        for s in samples:
            record = to_llava(s)
            if grouped:  # the anchors' group: the problem's template (sum, product, ...)
                record["group"] = s.meta["task"]
            f.write(json.dumps(record) + "\n")
            if s.image_of != s.id:
                continue  # shares another sample's file
            pixels = compose(bank, s.meta["image_indices"])
            if s.brightness != 1.0:  # a near-duplicate's trivially perturbed copy
                pixels = np.round(pixels * s.brightness).astype(np.uint8)
            save_png(pixels, images / f"{s.id}.png")


def write_benchmark(
    out_dir: str | Path,
    n_pool: int,
    n_anchors: int = 100,
    n_test: int = 1000,
    noise_rate: float = DEFAULT_NOISE_RATE,
    noise_mix: Mapping[str, float] | None = None,
    seed: int = 0,
) -> BenchmarkPaths:
    """Generate and write pool/anchors/test; same arguments -> byte-identical files."""
    root = Path(out_dir)
    paths = BenchmarkPaths(
        root=root,
        pool=root / "pool.jsonl",
        anchors=root / "anchors.jsonl",
        test=root / "test.jsonl",
        images=root / IMAGE_DIR,
    )
    paths.images.mkdir(parents=True, exist_ok=True)
    _write(make_pool(n_pool, noise_rate, noise_mix, seed), paths.pool, paths.images)
    _write(make_clean(n_anchors, "dev", "anchor", seed), paths.anchors, paths.images, True)
    _write(make_clean(n_test, "test", "test", seed), paths.test, paths.images)
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--n-pool", type=int, default=2000)
    ap.add_argument("--n-anchors", type=int, default=100)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--noise-rate", type=float, default=DEFAULT_NOISE_RATE)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    paths = write_benchmark(a.out_dir, a.n_pool, a.n_anchors, a.n_test, a.noise_rate, seed=a.seed)
    print(f"wrote {paths.pool}, {paths.anchors}, {paths.test} and {paths.images}/")


if __name__ == "__main__":
    main()
