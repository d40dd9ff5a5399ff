"""Write a benchmark to disk: pool, anchors and test as LLaVA-format JSONL, plus PNG images.

Layout under `out_dir`:

    pool.jsonl     candidates, a fraction of them noisy (see `pools.make_pool`)
    anchors.jsonl  clean problems on dev-split images (the trusted anchor set), each with a
                   `group` field: its problem template, for per-group utilities
    test.jsonl     clean problems on test-split images (never seen in training)
    images/        one PNG per sample, except near-duplicates that reuse another's file
                   and text-only samples

Each line is `{"id", "image", "conversations", "meta"}`, with `image` relative to the JSONL's
folder. `meta` holds the ground truth (noise tag, true answer); the scorer must not read it.
A text-only sample (the v2 `text_arith` family) has no `image` key and no `<image>`.

With `mix` (a `family_mix.FamilyMix`), the pool mixes task families and carries systematic
errors (generator v2); anchors and test are then clean problems of the target families.

    python -m stepsift.bench.generate OUT_DIR --n-pool 2000 [--target chain --target-share 0.3]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stepsift.bench.digits import compose, load_bank, save_png
from stepsift.bench.families import is_correct
from stepsift.bench.pools import make_clean, make_pool
from stepsift.bench.problems import DEFAULT_NOISE_RATE, Sample, extract_answer

if TYPE_CHECKING:
    from stepsift.bench.family_mix import FamilyMix

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
    """The sample as a LLaVA record; the image path is relative to the JSONL's folder.
    A text-only sample has neither an `image` key nor an `<image>` placeholder."""
    if not sample.has_image:
        return {
            "id": sample.id,
            "conversations": [
                {"from": "human", "value": sample.question},
                {"from": "gpt", "value": sample.answer},
            ],
            "meta": sample.meta,
        }
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
            digits = s.meta["digits"]
            question = f"{digits_sentence(digits)} {s.question}" if digits else s.question
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
            if s.image_of != s.id or not s.has_image:
                continue  # shares another sample's file, or has none
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
    mix: FamilyMix | None = None,
) -> BenchmarkPaths:
    """Generate and write pool/anchors/test; same arguments -> byte-identical files.

    `mix`: the v2 pool over task families (`noise_mix=None` is then
    `noise_kinds.DEFAULT_V2_NOISE_MIX`);
    anchors and test are clean problems of `mix.target`. None: the chain-only benchmark.
    """
    root = Path(out_dir)
    paths = BenchmarkPaths(
        root=root,
        pool=root / "pool.jsonl",
        anchors=root / "anchors.jsonl",
        test=root / "test.jsonl",
        images=root / IMAGE_DIR,
    )
    paths.images.mkdir(parents=True, exist_ok=True)
    target = None if mix is None else mix.target_weights()
    pool = make_pool(n_pool, noise_rate, noise_mix, seed, families=mix)
    _write(pool, paths.pool, paths.images)
    anchors = make_clean(n_anchors, "dev", "anchor", seed, families=target)
    _write(anchors, paths.anchors, paths.images, True)
    _write(make_clean(n_test, "test", "test", seed, families=target), paths.test, paths.images)
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--n-pool", type=int, default=2000)
    ap.add_argument("--n-anchors", type=int, default=100)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--noise-rate", type=float, default=DEFAULT_NOISE_RATE)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--target", help="comma-separated target families: the v2 pool over task families"
    )
    ap.add_argument("--target-share", type=float, help="the target's share of the v2 pool")
    a = ap.parse_args(argv)
    mix = None
    if a.target is not None or a.target_share is not None:
        from stepsift.bench.family_mix import FamilyMix

        kw: dict[str, Any] = {}
        if a.target is not None:
            kw["target"] = tuple(t.strip() for t in a.target.split(",") if t.strip())
        if a.target_share is not None:
            kw["target_share"] = a.target_share
        mix = FamilyMix(**kw)
    paths = write_benchmark(
        a.out_dir, a.n_pool, a.n_anchors, a.n_test, a.noise_rate, seed=a.seed, mix=mix
    )
    print(f"wrote {paths.pool}, {paths.anchors}, {paths.test} and {paths.images}/")


if __name__ == "__main__":
    main()
