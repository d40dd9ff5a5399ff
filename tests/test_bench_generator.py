"""The benchmark generator: disjoint splits, correct clean answers, noise that does what its tag
says, the requested noise rate, determinism, and readable images."""

from __future__ import annotations

import difflib
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stepsift.bench.digits import load_bank
from stepsift.bench.families import is_correct
from stepsift.bench.generate import write_benchmark
from stepsift.bench.pools import make_pool
from stepsift.bench.problems import (
    NOISE_TYPES,
    TEMPLATE_BY_NAME,
    extract_answer,
    last_computed_value,
    stated_digits,
)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _answer(rec: dict) -> str:
    return rec["conversations"][1]["value"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("bench")
    paths = write_benchmark(out, n_pool=600, n_anchors=100, n_test=300, seed=3)
    return paths, _read(paths.pool), _read(paths.anchors), _read(paths.test)


@pytest.fixture(scope="module")
def big_pool():
    return make_pool(2000, noise_rate=0.4, seed=11)


def test_split_fractions_and_disjoint_banks() -> None:
    bank = load_bank()
    s = {k: set(v.tolist()) for k, v in bank.splits.items()}
    assert not (s["pool"] & s["dev"]) and not (s["pool"] & s["test"]) and not (s["dev"] & s["test"])
    assert len(s["pool"]) + len(s["dev"]) + len(s["test"]) == len(bank.labels) == 1797
    for name, frac in (("pool", 0.60), ("dev", 0.15), ("test", 0.25)):
        assert abs(len(s[name]) / 1797 - frac) < 0.01
        # stratified: every digit appears in every split in near-equal share
        counts = np.bincount(bank.labels[bank.splits[name]], minlength=10)
        assert counts.min() > 0.8 * counts.mean()


def test_written_splits_share_no_digit_image(bench) -> None:
    _, pool, anchors, test = bench
    used = {
        name: {i for r in recs for i in r["meta"]["image_indices"]}
        for name, recs in (("pool", pool), ("dev", anchors), ("test", test))
    }
    assert not used["test"] & (used["pool"] | used["dev"])
    assert not used["pool"] & used["dev"]
    bank = load_bank()
    for name, idx in used.items():
        assert idx <= set(bank.splits[name].tolist())
    assert {r["meta"]["split"] for r in pool} == {"pool"}
    assert {r["meta"]["split"] for r in anchors} == {"dev"}
    assert {r["meta"]["split"] for r in test} == {"test"}


def test_record_format(bench) -> None:
    paths, pool, anchors, test = bench
    assert (len(pool), len(anchors), len(test)) == (600, 100, 300)
    r = pool[0]
    assert list(r) == ["id", "image", "conversations", "meta"]
    assert r["id"] == "pool-000000" and anchors[0]["id"] == "anchor-000000"
    assert [t["from"] for t in r["conversations"]] == ["human", "gpt"]
    for rec in pool + anchors + test:
        q = rec["conversations"][0]["value"]
        assert q.startswith("<image>\n") and len(q) - len("<image>\n") < 60
        assert len(_answer(rec)) < 110
        assert (paths.root / rec["image"]).is_file()
        meta = rec["meta"]
        assert meta["answer"] == TEMPLATE_BY_NAME[meta["task"]].solve(meta["digits"])
        # the image shows exactly the true digits
        assert load_bank().labels[meta["image_indices"]].tolist() == meta["digits"]


def test_clean_answers_are_correct(bench) -> None:
    _, pool, anchors, test = bench
    clean = [r for r in pool if r["meta"]["noise"] == "clean"] + anchors + test
    assert len(clean) > 600
    assert all(r["meta"]["noise"] == "clean" for r in anchors + test)
    for r in clean:
        assert extract_answer(_answer(r)) == r["meta"]["answer"]
        assert is_correct(_answer(r), r["meta"])
        assert stated_digits(_answer(r)) == r["meta"]["digits"]
        assert last_computed_value(_answer(r)) == r["meta"]["answer"]
    assert {r["meta"]["task"] for r in clean} == set(TEMPLATE_BY_NAME)


def _by_noise(pool: list) -> dict[str, list]:
    out: dict[str, list] = {t: [] for t in NOISE_TYPES}
    for s in pool:
        if s.meta["noise"] != "clean":
            out[s.meta["noise"]].append(s)
    return out


def test_misread(big_pool) -> None:
    samples = _by_noise(big_pool)["misread"]
    assert len(samples) > 50
    for s in samples:
        said, true = stated_digits(s.answer), s.meta["digits"]
        assert said is not None and len(said) == len(true)
        assert sum(a != b for a, b in zip(said, true, strict=True)) == 1
        assert extract_answer(s.answer) != s.meta["answer"]
        # the rest of the chain is consistent with the wrong reading
        assert extract_answer(s.answer) == TEMPLATE_BY_NAME[s.meta["task"]].solve(said)


def test_arithmetic(big_pool) -> None:
    samples = _by_noise(big_pool)["arithmetic"]
    assert len(samples) > 50
    for s in samples:
        assert stated_digits(s.answer) == s.meta["digits"]
        got = extract_answer(s.answer)
        assert got is not None and got != s.meta["answer"]
        assert got == last_computed_value(s.answer)  # the answer follows the slip


def test_answer_mismatch(big_pool) -> None:
    samples = _by_noise(big_pool)["answer_mismatch"]
    assert len(samples) > 50
    for s in samples:
        assert stated_digits(s.answer) == s.meta["digits"]
        assert last_computed_value(s.answer) == s.meta["answer"]  # the chain is right
        got = extract_answer(s.answer)
        assert got is not None and got != last_computed_value(s.answer)


def test_truncated(big_pool) -> None:
    samples = _by_noise(big_pool)["truncated"]
    assert len(samples) > 50
    assert {s.meta["detail"] for s in samples} == {"cut", "malformed"}
    for s in samples:
        assert extract_answer(s.answer) is None
        assert not is_correct(s.answer, s.meta)


def test_off_task(big_pool) -> None:
    samples = _by_noise(big_pool)["off_task"]
    assert len(samples) > 50
    assert {s.meta["detail"] for s in samples} == {"other_digits", "other_task", "refusal"}
    for s in samples:
        assert extract_answer(s.answer) != s.meta["answer"]
        if s.meta["detail"] == "refusal":
            assert extract_answer(s.answer) is None


def test_near_duplicate(big_pool) -> None:
    by_id = {s.id: s for s in big_pool}
    samples = _by_noise(big_pool)["near_duplicate"]
    assert len(samples) > 50
    kinds = Counter()
    for s in samples:
        src = by_id[s.meta["duplicate_of"]]
        assert src.meta["noise"] == "clean"  # redundant, but not wrong
        assert is_correct(s.answer, s.meta)
        assert s.question == src.question
        assert s.meta["image_indices"] == src.meta["image_indices"]
        ratio = difflib.SequenceMatcher(None, s.answer, src.answer).ratio()
        assert ratio > 0.8
        kinds["same_text" if s.answer == src.answer else "reworded"] += 1
        kinds["same_file" if s.image_of == src.id else "own_file"] += 1
    assert min(kinds.values()) > 10  # all variants occur


def test_near_duplicate_images_on_disk(bench) -> None:
    paths, pool, _, _ = bench
    by_id = {r["id"]: r for r in pool}
    dups = [r for r in pool if r["meta"]["noise"] == "near_duplicate"]
    assert any(r["image"] == by_id[r["meta"]["duplicate_of"]]["image"] for r in dups)
    for r in dups:
        src = by_id[r["meta"]["duplicate_of"]]
        if r["image"] != src["image"]:  # dimmed copy: same layout, slightly darker
            a = np.asarray(Image.open(paths.root / r["image"]), dtype=float)
            b = np.asarray(Image.open(paths.root / src["image"]), dtype=float)
            assert a.shape == b.shape and 0.75 < a.sum() / b.sum() < 1.0


def test_noise_rate_and_mix(big_pool) -> None:
    assert len(big_pool) == 2000
    counts = Counter(s.meta["noise"] for s in big_pool)
    assert abs(1 - counts["clean"] / 2000 - 0.4) < 0.01
    for t in NOISE_TYPES:  # equal default weights: ~133 each
        assert 90 < counts[t] < 180, counts


def test_custom_mix_and_rate() -> None:
    pool = make_pool(300, noise_rate=0.2, noise_mix={"misread": 1.0, "truncated": 3.0}, seed=1)
    counts = Counter(s.meta["noise"] for s in pool)
    assert set(counts) == {"clean", "misread", "truncated"}
    assert counts["clean"] == 240 and counts["truncated"] > counts["misread"]
    assert {s.meta["noise"] for s in make_pool(50, noise_rate=0.0, seed=1)} == {"clean"}
    with pytest.raises(ValueError):
        make_pool(10, noise_mix={"typo": 1.0})
    with pytest.raises(ValueError):
        make_pool(10, noise_rate=1.0, noise_mix={"near_duplicate": 1.0})


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_deterministic(tmp_path: Path) -> None:
    a = write_benchmark(tmp_path / "a", n_pool=80, n_anchors=10, n_test=20, seed=5)
    b = write_benchmark(tmp_path / "b", n_pool=80, n_anchors=10, n_test=20, seed=5)
    c = write_benchmark(tmp_path / "c", n_pool=80, n_anchors=10, n_test=20, seed=6)
    assert _digest(a.root) == _digest(b.root)
    assert len(_digest(a.root)) > 100
    assert a.pool.read_bytes() != c.pool.read_bytes()


def test_images_are_valid_pngs(bench) -> None:
    paths, pool, anchors, test = bench
    bank = load_bank()
    for r in pool[:50] + anchors[:20] + test[:20]:
        with Image.open(paths.root / r["image"]) as im:
            assert im.format == "PNG" and im.mode == "RGB"
            n = len(r["meta"]["image_indices"])
            assert im.size == (n * 32 + (n - 1) * 4, 32)
            px = np.asarray(im)
        if r["meta"]["noise"] != "near_duplicate":
            # white on black: the first digit's 8x8 source, upscaled 4x, is what is drawn
            src = bank.images[r["meta"]["image_indices"][0]].astype(int) * 255 // 16
            assert np.array_equal(px[::4, :32:4, 0], src)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("The digits are 3 and 4.\n3 + 4 = 7.\nAnswer: 7", 7),
        ("2 - 7 = -5.\nAnswer: -5", -5),
        ("Answer: 12\n", 12),
        ("Answer:  3.", 3),
        ("The digits are 3 and 4.\n3 + 4 = 7.", None),
        ("3 + 4 = 7.\nAnswer: ", None),
        ("3 + 4 = 7.\nAnswr 7", None),
        ("Answer: 7\nAnswer: ", None),  # only the last Answer line counts
        ("", None),
    ],
)
def test_extract_answer(text: str, want: int | None) -> None:
    assert extract_answer(text) == want
