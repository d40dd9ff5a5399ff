"""The base model's staged pre-training: the classifier stage, the shallow-then-deep stages,
the cache key and the report. Tiny configs keep it fast; caching itself (a second call loads)
is tested in test_bench_target.py."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from stepsift.bench import base_model
from stepsift.bench.base_model import (
    REPORT,
    BaseConfig,
    base_dir,
    classifier_split,
    digit_images,
    get_base_model,
    pretrain,
    strip_images,
    train_classifier,
)
from stepsift.bench.digits import compose, load_bank
from stepsift.bench.target import Example, TargetConfig, TargetModel, image_tensor

TINY = TargetConfig(
    d_model=32, n_layers=3, n_heads=2, mlp_hidden=64, max_text_len=96, patch_hidden=32
)
QUICK = BaseConfig(
    target=TINY,
    classifier_steps=3,
    classifier_batch=8,
    steps=4,
    deep_steps=2,
    n_train=32,
    n_heldout=6,
    batch_size=8,
)


def test_classifier_split_holds_out_part_of_the_pool() -> None:
    train, held = classifier_split(0.15, seed=0)
    pool = load_bank().splits["pool"]
    assert not set(train) & set(held)
    assert sorted([*train, *held]) == sorted(pool)
    assert len(held) == round(0.15 * len(pool))


def test_classifier_stage_sees_only_pool_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered: list[set[int]] = []
    real = base_model.digit_images

    def spy(indices, cfg):
        rendered.append({int(i) for i in indices})
        return real(indices, cfg)

    monkeypatch.setattr(base_model, "digit_images", spy)
    torch.manual_seed(0)
    accuracy = train_classifier(TargetModel(TINY), QUICK, seed=0)
    assert 0.0 <= accuracy <= 1.0
    train, held = classifier_split(QUICK.classifier_holdout, seed=0)
    # every image it sees is laid out from these renders: the pool's training part, then the
    # held-out part it is measured on
    assert rendered == [set(train.tolist()), set(held.tolist())]


def test_classifier_stage_trains_only_the_cell_encoder() -> None:
    torch.manual_seed(0)
    model = TargetModel(TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_classifier(model, QUICK, seed=0)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {
        "patch_conv.weight",
        "patch_conv.bias",
        "patch_out.weight",
        "patch_out.bias",
        "col_emb",
    }


def test_strips_are_laid_out_exactly_as_the_target_sees_composed_strips() -> None:
    bank = load_bank()
    indices = bank.splits["pool"][:20]
    rows = torch.tensor([[3, 7, 11], [5, 9, -1], [0, -1, -1], [19, 18, 17]])  # -1: blank
    fast = strip_images(digit_images(indices, TINY), rows)
    strips = [compose(bank, [int(indices[r]) for r in row if r >= 0]) for row in rows.tolist()]
    slow, _ = image_tensor([Example((), pixels) for pixels in strips], TINY)
    assert torch.equal(fast, slow)


def test_shifted_moves_the_image_and_fills_with_black() -> None:
    images = torch.rand(2, 3, 32, 104) * 2 - 1
    moved = base_model._shifted(images, 4, -4)
    assert torch.equal(moved[..., 4:, :-4], images[..., :-4, 4:])
    assert bool((moved[..., :4, :] == -1).all() and (moved[..., -4:] == -1).all())


def test_shallow_stage_then_grown_blocks_start_as_identity() -> None:
    cfg = replace(QUICK, steps=3, deep_steps=0)  # shallow stage only: nothing trains the rest
    fresh = TargetModel(TINY)
    model, _ = pretrain(cfg, seed=0)
    assert len(model.blocks) == TINY.n_layers  # the full stack is back in place
    assert model.state_dict().keys() == fresh.state_dict().keys()
    for block in model.blocks[cfg.shallow_layers :]:
        assert not block.attn.proj.weight.any() and not block.mlp.down.weight.any()
    assert model.blocks[0].attn.proj.weight.any()


def test_cache_key_follows_every_stage_setting(tmp_path: Path) -> None:
    folders = {
        base_dir(tmp_path, c, seed=0)
        for c in (
            QUICK,
            replace(QUICK, classifier_steps=4),
            replace(QUICK, classifier_shift=0),
            replace(QUICK, deep_steps=1),
            replace(QUICK, shallow_layers=2),
            replace(QUICK, deep_lr=3e-3),
            replace(QUICK, version=QUICK.version + 1),
        )
    }
    assert len(folders) == 7
    assert base_dir(tmp_path, QUICK, seed=0) == base_dir(tmp_path, replace(QUICK), seed=0)


def test_report_has_stage_seconds_and_classifier_accuracy(tmp_path: Path) -> None:
    get_base_model(tmp_path, seed=0, config=QUICK)
    report = json.loads((base_dir(tmp_path, QUICK, seed=0) / REPORT).read_text())
    assert 0.0 <= report["classifier_heldout_accuracy"] <= 1.0
    seconds = report["seconds"]
    assert set(seconds) == {"classifier", "data", "shallow", "deep"}
    assert sum(seconds.values()) == pytest.approx(report["train_seconds"])
    assert report["config"]["deep_steps"] == QUICK.deep_steps
    assert set(report["heldout_accuracy"]) >= {"all"}
