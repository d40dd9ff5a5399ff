"""The benchmark's target model: size, loss mask, fine-tuning protocols, generation, scoring,
and the cached base checkpoint. Tiny configs keep it fast."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from stepsift.bench import base_model
from stepsift.bench.base_model import BaseConfig, base_dir, get_base_model, make_task_mix
from stepsift.bench.digits import DigitBank
from stepsift.bench.generate import write_benchmark
from stepsift.bench.target import (
    Example,
    TargetConfig,
    TargetModel,
    collate,
    example_from_record,
    fit_image,
    prompt_ids,
    reply_text,
)
from stepsift.bench.trainer import batch_plan, evaluate, finetune, score, true_answer
from stepsift.data import read_records
from stepsift.data.record import Turn
from stepsift.proxy.builtin import BuiltinProxy
from stepsift.proxy.byte_tokenizer import END, decode, render

TINY = TargetConfig(
    d_model=32, n_layers=2, n_heads=2, mlp_hidden=64, max_text_len=96, patch_hidden=32
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: a second thread only adds OpenMP sync cost (large on a busy CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    paths = write_benchmark(tmp_path_factory.mktemp("bench"), n_pool=24, n_anchors=2, n_test=6)
    return read_records(paths.pool).records, read_records(paths.test).records


def qa(question: str, reply: str, pixels: np.ndarray | None = None) -> Example:
    return Example((Turn("user", question), Turn("assistant", reply, True)), pixels)


def tiny_model(seed: int = 0) -> TargetModel:
    torch.manual_seed(seed)
    return TargetModel(TINY)


def test_default_target_is_at_least_5x_the_proxy() -> None:
    proxy = sum(p.numel() for p in BuiltinProxy().model.parameters())
    assert TargetModel().num_parameters() >= 5 * proxy


def test_loss_mask_covers_only_the_assistant_reply(bench) -> None:
    pool, _ = bench
    record = pool[0]
    batch = collate([example_from_record(record)], TINY)
    ids, supervised = render(record.turns)
    assert batch.loss_mask[0].tolist() == supervised[1:]
    reply = record.turns[-1].text
    assert decode(batch.labels[0][batch.loss_mask[0]].tolist()) == reply + "<end>"
    assert batch.has_image.tolist() == [1.0]


def test_fit_image_keeps_a_digit_strip_pixel_exact() -> None:
    strip = np.random.default_rng(0).integers(0, 256, (32, 68, 3), dtype=np.uint8)
    out = fit_image(strip, TargetConfig())
    assert out.shape == (32, 104, 3)
    assert np.array_equal(out[:, :68], strip) and not out[:, 68:].any()


def test_each_digit_of_a_strip_has_a_token_that_sees_only_it() -> None:
    """Digits are 8 source px wide with a 1 px gap, upscaled 4x: one 9-column cell each."""
    model = tiny_model()
    assert TINY.n_image_tokens == 3
    rng = np.random.default_rng(0)
    strip = torch.from_numpy(rng.uniform(-1, 1, (1, 3, 32, 104))).float()
    before = model.embed_images(strip, torch.ones(1))
    changed = strip.clone()
    changed[..., : 9 * 4] = 0.0  # repaint the first digit and the gap after it
    changed[..., 18 * 4 :] = 0.0  # ... and the digit after the second's gap
    after = model.embed_images(changed, torch.ones(1))
    assert torch.equal(before[0, 1], after[0, 1])  # the second digit's token is untouched
    assert not torch.equal(before[0, 0], after[0, 0])


def test_batch_plans_for_both_protocols() -> None:
    a = batch_plan(37, 16, None, 2, seed=0)  # A: epochs * ceil(n / bs), each epoch complete
    assert len(a) == 2 * math.ceil(37 / 16)
    assert sorted(np.concatenate(a[:3]).tolist()) == list(range(37))
    for n in (5, 37, 100):  # B: the same steps whatever the size, full batches
        b = batch_plan(n, 16, 9, None, seed=0)
        assert len(b) == 9 and all(len(x) == 16 for x in b)
    with pytest.raises(ValueError):
        batch_plan(5, 16, 3, 2, seed=0)


def test_protocol_b_takes_exactly_the_requested_steps() -> None:
    base = tiny_model()
    small = [qa("Hi?", "Yes.")] * 3
    large = [qa(f"Q{i}?", f"A{i}.") for i in range(40)]
    for subset in (small, large):
        _, stats = finetune(base, subset, steps=4, batch_size=8, seed=0)
        assert (stats.steps, stats.samples_seen, len(stats.losses)) == (4, 32, 4)
    _, stats = finetune(base, large, epochs=2, batch_size=16, seed=0)
    assert (stats.steps, stats.samples_seen) == (6, 80)


def test_finetuning_lowers_the_loss_and_is_deterministic() -> None:
    base = tiny_model()
    rng = np.random.default_rng(0)
    data = [
        qa("Read it.", f"It is {i}.", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        for i in range(8)
    ]
    batch = collate(data, TINY)
    before = base.loss(batch).item()
    tuned, _ = finetune(base, data, steps=40, batch_size=8, lr=3e-3, seed=1)
    again, _ = finetune(base, data, steps=40, batch_size=8, lr=3e-3, seed=1)
    assert tuned.loss(batch).item() < 0.5 * before
    assert base.loss(batch).item() == before  # the base is not modified
    for p, q in zip(tuned.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)


def test_greedy_generation_is_deterministic_batched_and_stops_at_end() -> None:
    data = [qa("Say hi.", "hi"), qa("A much longer question, please?", "ok")]
    model, _ = finetune(tiny_model(), data, steps=60, batch_size=2, lr=3e-3, seed=0)
    out = model.generate(data, max_new_tokens=20)
    assert [reply_text(o) for o in out] == ["hi", "ok"]  # stopped at END, well before 20
    assert END not in out[0]
    assert model.generate(data, max_new_tokens=20) == out
    # left padding is invisible: each prompt alone gives the same reply as in the batch
    assert [model.generate([d], 20)[0] for d in data] == out
    # and the cached decoding agrees with re-running the full forward pass
    untrained = tiny_model(seed=3)
    ids = untrained.generate(data, max_new_tokens=8)
    for ex, got in zip(data, ids, strict=True):
        seq = prompt_ids(ex.turns)
        b = collate([ex], TINY)
        for _ in range(len(got)):
            logits = untrained(torch.tensor([seq]), b.images, b.has_image)
            seq.append(int(logits[0, -1].argmax()))
        assert seq[len(seq) - len(got) :] == got


def test_scoring_is_exact_match_of_the_final_answer() -> None:
    outputs = [
        "The digits are 3 and 4.\n3 + 4 = 7.\nAnswer: 7",
        "Answer: 8",
        "The digits are 3 and 4.\n3 + 4 = 7.",  # no final line
        "Answer: 7\nAnswer: ",  # the last Answer line is malformed
        "Answer: 7.",
        "Answer: -2",
    ]
    assert score(outputs, [7, 7, 7, 7, 7, -2]) == [True, False, False, False, True, True]


def test_evaluate_reads_the_true_answer_from_metadata(bench) -> None:
    _, test = bench
    assert true_answer(test[0]) == test[0].metadata["meta"]["answer"]
    result = evaluate(tiny_model(), test, max_new_tokens=8)
    assert result.n == len(test) == len(result.outputs)
    assert result.accuracy == sum(score(result.outputs, [true_answer(r) for r in test])) / 6


def test_base_tasks_use_pool_images_only(monkeypatch: pytest.MonkeyPatch) -> None:
    splits: list[str] = []
    pick = DigitBank.pick

    def spy(self, rng, split, values):
        splits.append(split)
        return pick(self, rng, split, values)

    monkeypatch.setattr(DigitBank, "pick", spy)
    examples = make_task_mix(60, BaseConfig().mix, np.random.default_rng(0))
    assert set(splits) == {"pool"}
    assert any(ex.pixels is None for ex in examples) and any(
        ex.pixels is not None for ex in examples
    )


def test_base_model_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = BaseConfig(target=TINY, n_train=64, n_heldout=6, steps=3, batch_size=8)
    first = get_base_model(tmp_path, seed=0, config=cfg)
    folder = base_dir(tmp_path, cfg, seed=0)
    assert (folder / "model.pt").is_file() and (folder / "base.json").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("the cached base should have been loaded")

    monkeypatch.setattr(base_model, "pretrain", no_training)
    second = get_base_model(tmp_path, seed=0, config=cfg)
    for (n, p), (m, q) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert n == m and torch.equal(p, q)
    assert base_dir(tmp_path, cfg, seed=1) != folder  # the seed is part of the key
