"""The proxy's pre-trained checkpoint (bench/proxy_base.py) and `score --proxy-init`.

The checkpoint must be learnt from the generic corpus only: images of the digit bank's pool
split (never dev, whose images the anchors show, nor test), none of the pool's questions.
`--proxy-init` must start the built-in proxy from exactly those weights and still warm up.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stepsift.bench import proxy_base
from stepsift.bench.digits import DigitBank, load_bank
from stepsift.bench.proxy_base import ProxyBaseConfig, get_proxy_base
from stepsift.engine.scoring import ScoreSettings, score
from stepsift.proxy.builtin import BuiltinProxy
from stepsift.proxy.warmup import WarmupSettings

TINY = ProxyBaseConfig(n_train=48, n_heldout=8, steps=6, batch_size=8)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return get_proxy_base(tmp_path_factory.mktemp("cache"), seed=0, config=TINY, log=lambda m: 0)


def test_corpus_uses_pool_split_images_only(tmp_path: Path, monkeypatch) -> None:
    splits: list[str] = []
    picked: list[int] = []
    original = DigitBank.pick

    def spy(self, rng, split, values):
        out = original(self, rng, split, values)
        splits.append(split)
        picked.extend(out)
        return out

    monkeypatch.setattr(DigitBank, "pick", spy)
    get_proxy_base(tmp_path, seed=1, config=TINY, log=lambda m: 0)
    assert splits and set(splits) == {"pool"}
    bank = load_bank()
    unseen = set(bank.splits["dev"].tolist()) | set(bank.splits["test"].tolist())
    assert not unseen & set(picked)


def test_corpus_holds_none_of_the_pools_questions() -> None:
    import numpy as np

    from stepsift.bench.base_model import make_task_mix
    from stepsift.bench.problems import TEMPLATES

    examples = make_task_mix(300, TINY.mix, np.random.default_rng([0, proxy_base.CORPUS_STREAM]))
    questions = {ex.turns[0].text for ex in examples}
    assert not questions & {t.question for t in TEMPLATES}


def test_checkpoint_is_cached_and_learnt(checkpoint: Path, monkeypatch) -> None:
    info = json.loads((checkpoint / proxy_base.REPORT).read_text())
    assert info["last_loss"] < info["first_loss"]
    assert not (checkpoint / "corpus").exists()  # the corpus is not kept
    # a second call loads: pretrain is never entered
    monkeypatch.setattr(proxy_base, "pretrain", lambda *a, **k: pytest.fail("retrained"))
    assert get_proxy_base(checkpoint.parent, seed=0, config=TINY, log=lambda m: 0) == checkpoint


def _write_pool(folder: Path, n: int) -> tuple[Path, Path]:
    from stepsift.bench.generate import write_benchmark

    paths = write_benchmark(folder, n_pool=n, n_anchors=4, n_test=1, noise_rate=0.25)
    return paths.pool, paths.anchors


def test_proxy_init_starts_from_the_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    pool, anchors = _write_pool(tmp_path / "data", 8)
    settings = ScoreSettings(
        proxy_init=checkpoint,
        warmup=WarmupSettings(fraction=0.0),  # no warm-up: the scored proxy is the checkpoint
        save_proxy=tmp_path / "proxy",
        progress=False,
        method="first-order",
        optimizer="sgd",
    )
    score(pool, anchors, tmp_path / "scores.parquet", settings)
    used = BuiltinProxy.load(tmp_path / "proxy").model.state_dict()
    start = BuiltinProxy.load(checkpoint).model.state_dict()
    fresh = BuiltinProxy(seed=0).model.state_dict()
    assert all(torch.equal(used[k], start[k]) for k in start)
    assert not all(torch.equal(used[k], fresh[k]) for k in fresh)


def test_proxy_init_is_refused_with_another_proxy_or_a_bad_folder(
    checkpoint: Path, tmp_path: Path
) -> None:
    pool, anchors = _write_pool(tmp_path / "data", 4)
    with pytest.raises(ValueError, match="--proxy-init"):
        score(pool, anchors, tmp_path / "a.parquet",
              ScoreSettings(proxy=str(checkpoint), proxy_init=checkpoint))  # fmt: skip
    with pytest.raises(ValueError, match="not a saved proxy"):
        score(pool, anchors, tmp_path / "b.parquet", ScoreSettings(proxy_init=tmp_path))
