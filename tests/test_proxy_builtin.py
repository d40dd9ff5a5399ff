"""The built-in proxy: loss mask, truncation, padding, images, persistence and warm-up."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stepsift.data.record import Record, Source, Turn
from stepsift.proxy.builtin import KIND, BuiltinProxy
from stepsift.proxy.byte_tokenizer import PAD, decode
from stepsift.proxy.tiny_vlm import TinyVLMConfig
from stepsift.proxy.warmup import WarmupSettings, warm_up

SMALL = {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_len": 96}
MAX_TEXT = SMALL["max_len"] - TinyVLMConfig(**SMALL).n_image_tokens  # 80 text positions


def make_record(rid: str, turns: Sequence[Turn], images: Sequence[Path] = ()) -> Record:
    return Record(
        id=rid,
        turns=tuple(turns),
        images=tuple(images),
        source=Source(Path("test.jsonl"), 1),
        format="test",
        raw="{}",
    )


def qa(rid: str, user: str, reply: str, images: Sequence[Path] = ()) -> Record:
    return make_record(rid, [Turn("user", user), Turn("assistant", reply, True)], images)


def noise_png(path: Path, width: int, height: int, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def solid_png(path: Path, width: int, height: int, rgb: tuple[int, int, int]) -> Path:
    Image.new("RGB", (width, height), rgb).save(path)
    return path


def small_proxy(seed: int = 0, double: bool = False) -> BuiltinProxy:
    proxy = BuiltinProxy(TinyVLMConfig(**SMALL), seed=seed)
    if double:
        proxy.model.double()
    return proxy


def losses(proxy: BuiltinProxy, records: Sequence[Record]) -> torch.Tensor:
    with torch.no_grad():
        return proxy.per_sample_loss({}, proxy.collate(records).tensors)


def pool() -> list[Record]:
    return [qa(f"r{i}", f"What is {i} plus {i}?", f"{i} plus {i} is {2 * i}.") for i in range(8)]


MULTI_TURN = make_record(
    "multi",
    [
        Turn("system", "SYS: brief"),
        Turn("user", "USR1 hi"),
        Turn("assistant", "Hello there", supervised=True),
        Turn("user", "USR2"),
        Turn("assistant", "skip me", supervised=False),
        Turn("user", "USR3"),
        Turn("assistant", "café ✓", supervised=True),
    ],
)


# -- the loss mask ---------------------------------------------------------------------
def test_loss_mask_is_exactly_the_supervised_replies_with_end() -> None:
    """Masked labels decode to each supervised reply + <end>, in order, and nothing else."""
    batch = small_proxy().collate([MULTI_TURN])
    t = batch.tensors
    mask = t["loss_mask"][0]
    trained = decode(t["labels"][0][mask].tolist())
    assert trained == "Hello there<end>café ✓<end>"
    assert not batch.truncated.any()
    for text in ("SYS", "USR", "skip me", "<user>", "<assistant>", "<system>"):
        assert text not in trained
    assert batch.tokens.tolist() == [len(b"Hello there") + 1 + len("café ✓".encode()) + 1]
    # the inputs are the whole conversation, shifted by one against the labels
    assert decode(t["input_ids"][0].tolist()).startswith("<bos><system>SYS: brief<end><user>")
    assert torch.equal(t["input_ids"][0][1:], t["labels"][0][:-1])


def test_padding_is_never_in_the_mask_and_tokens_count_the_mask() -> None:
    """In a padded batch, pad positions are unmasked and `tokens` is the mask count."""
    records = [MULTI_TURN, qa("short", "hi", "yo"), qa("mid", "say a word", "word")]
    batch = small_proxy().collate(records)
    t = batch.tensors
    assert batch.ids == ["multi", "short", "mid"]
    is_pad = t["input_ids"] == PAD
    assert is_pad[1].any() and is_pad[2].any()  # the short rows really are padded
    assert not (t["loss_mask"] & is_pad).any()
    assert not (t["loss_mask"] & (t["labels"] == PAD)).any()
    assert torch.equal(batch.tokens, t["loss_mask"].sum(dim=1))
    assert batch.tokens.tolist()[1:] == [len("yo") + 1, len("word") + 1]
    assert decode(t["labels"][1][t["loss_mask"][1]].tolist()) == "yo<end>"
    assert not batch.truncated.any()


# -- truncation --------------------------------------------------------------------------
def test_exact_fit_is_not_truncated_one_more_byte_is() -> None:
    """ids = a + b + 5 for user a / reply b bytes; inputs (ids - 1) must fit MAX_TEXT."""
    fits = qa("fits", "u" * 30, "r" * (MAX_TEXT - 4 - 30))
    over = qa("over", "u" * 30, "r" * (MAX_TEXT - 3 - 30))
    batch = small_proxy().collate([fits, over])
    t = batch.tensors
    assert batch.truncated.tolist() == [False, True]
    assert t["input_ids"].shape[1] == MAX_TEXT
    assert decode(t["labels"][0][t["loss_mask"][0]].tolist()) == "r" * 46 + "<end>"
    # the over-long record loses its final <end> target, nothing else
    assert decode(t["labels"][1][t["loss_mask"][1]].tolist()) == "r" * 47
    assert batch.tokens.tolist() == [47, 47]


def test_long_record_is_cut_and_flagged() -> None:
    """A record longer than max_len is truncated=True, cut to MAX_TEXT, loss still finite."""
    proxy = small_proxy()
    long = qa("long", "Tell me a story.", "Once upon a time " * 20)
    batch = proxy.collate([long, qa("short", "hi", "yo")])
    assert batch.truncated.tolist() == [True, False]
    assert batch.tensors["input_ids"].shape == (2, MAX_TEXT)
    assert batch.tokens[0] == MAX_TEXT - (1 + 1 + len("Tell me a story.") + 1 + 1) + 1
    assert torch.isfinite(proxy.per_sample_loss({}, batch.tensors)).all()


def test_record_cut_before_its_reply_scores_zero_not_nan() -> None:
    """If truncation removes every supervised token the loss is 0 (not NaN), tokens 0."""
    proxy = small_proxy()
    batch = proxy.collate([qa("late", "x" * 200, "the answer")])
    assert batch.truncated.tolist() == [True] and batch.tokens.tolist() == [0]
    assert proxy.per_sample_loss({}, batch.tensors).tolist() == [0.0]


# -- padding invariance ------------------------------------------------------------------
def test_per_sample_loss_alone_equals_in_padded_batch(tmp_path: Path) -> None:
    """float64: each record's loss in a padded, mixed-image batch equals its loss alone."""
    img = noise_png(tmp_path / "n.png", 30, 20, 0)
    records = [
        MULTI_TURN,
        qa("a", "hi", "yo"),
        qa("b", "what is shown?", "noise", [img]),
        qa("c", "and now?", "still noise, more words", [img, img]),
    ]
    proxy = small_proxy(double=True)
    together = losses(proxy, records)
    alone = torch.cat([losses(proxy, [r]) for r in records])
    assert together.dtype == torch.float64
    assert len(set(proxy.collate(records).tokens.tolist())) > 1
    torch.testing.assert_close(together, alone, rtol=1e-10, atol=0)


# -- images ------------------------------------------------------------------------------
def test_image_reaches_the_model(tmp_path: Path) -> None:
    """The same conversation with an image has a different loss than without it."""
    img = noise_png(tmp_path / "n.png", 32, 32, 1)
    other = noise_png(tmp_path / "m.png", 32, 32, 2)
    proxy = small_proxy(double=True)
    plain, with_img, with_other = losses(
        proxy,
        [
            qa("p", "what?", "noise"),
            qa("i", "what?", "noise", [img]),
            qa("o", "what?", "noise", [other]),
        ],
    ).tolist()
    assert abs(plain - with_img) > 1e-9
    assert abs(with_img - with_other) > 1e-9  # the pixels matter, not only has_image
    assert proxy.collate([qa("i", "what?", "noise", [img])]).tensors["has_image"].tolist() == [1.0]


def test_multiple_images_are_composed_side_by_side_in_order(tmp_path: Path) -> None:
    """Two images become one strip: red left, blue right; order and count change the loss."""
    red = solid_png(tmp_path / "red.png", 10, 10, (255, 0, 0))
    blue = solid_png(tmp_path / "blue.png", 20, 20, (0, 0, 255))  # rescaled to height 10
    proxy = small_proxy(double=True)
    records = [
        qa("rb", "colours?", "red, blue", [red, blue]),
        qa("br", "colours?", "red, blue", [blue, red]),
        qa("r", "colours?", "red, blue", [red]),
    ]
    images = proxy.collate(records).tensors["images"]
    size = proxy.config.image_size
    left, right = images[0][:, :, : size // 2 - 2], images[0][:, :, size // 2 + 2 :]
    expect_red = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)[:, None, None]
    expect_blue = torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(left, expect_red.expand_as(left), rtol=0, atol=1e-6)
    torch.testing.assert_close(right, expect_blue.expand_as(right), rtol=0, atol=1e-6)
    torch.testing.assert_close(images[1], images[0].flip(-1), rtol=0, atol=1e-6)
    rb, br, r = losses(proxy, records).tolist()
    assert abs(rb - br) > 1e-9 and abs(rb - r) > 1e-9


# -- persistence -------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path: Path) -> None:
    """Saving and loading keeps weights, losses, config, adam_state and adam_hparams."""
    proxy = small_proxy(seed=3)
    settings = WarmupSettings(fraction=1.0, min_samples=4, min_steps=3, batch_size=2)
    report = warm_up(proxy, pool(), settings, progress=False)
    proxy.save(tmp_path / "p")
    loaded = BuiltinProxy.load(tmp_path / "p")
    assert loaded.config == proxy.config
    assert torch.equal(losses(loaded, pool()), losses(proxy, pool()))
    for (name, a), (name_b, b) in zip(
        proxy.model.state_dict().items(), loaded.model.state_dict().items(), strict=True
    ):
        assert name == name_b and torch.equal(a, b)
    assert loaded.adam_hparams == proxy.adam_hparams and loaded.adam_hparams["lr"] == 1e-3
    assert loaded.adam_state.keys() == proxy.adam_state.keys()
    for name, st in proxy.adam_state.items():
        assert loaded.adam_state[name]["step"] == st["step"] == report.steps == 4
        assert torch.equal(loaded.adam_state[name]["exp_avg"], st["exp_avg"])
        assert torch.equal(loaded.adam_state[name]["exp_avg_sq"], st["exp_avg_sq"])


def test_load_of_a_folder_that_is_not_a_proxy_fails_clearly(tmp_path: Path) -> None:
    """No proxy.json: FileNotFoundError; a proxy.json of another kind: ValueError."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not a saved stepsift proxy"):
        BuiltinProxy.load(empty)
    other = tmp_path / "other"
    other.mkdir()
    (other / "proxy.json").write_text(json.dumps({"kind": "something-else", "config": {}}))
    with pytest.raises(ValueError, match=f"'something-else' is not '{KIND}'"):
        BuiltinProxy.load(other)
    (other / "proxy.json").write_text("[]")
    with pytest.raises(ValueError, match=f"kind None is not '{KIND}'"):
        BuiltinProxy.load(other)
    (other / "proxy.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        BuiltinProxy.load(other)


# -- warm-up -----------------------------------------------------------------------------
def test_warm_up_lowers_loss_and_stores_adam_state() -> None:
    """Warm-up lowers the mean loss on its data; adam_state covers every step param."""
    proxy = small_proxy()
    data = pool()
    before = losses(proxy, data).mean().item()
    settings = WarmupSettings(fraction=1.0, min_samples=4, min_steps=12, batch_size=4, lr=3e-3)
    report = warm_up(proxy, data, settings, progress=False)
    after = losses(proxy, data).mean().item()
    assert report.samples == len(data) and report.steps == 12
    assert after < before - 0.1
    assert report.last_loss < report.first_loss
    named = dict(proxy.model.named_parameters())
    assert sorted(proxy.adam_state) == sorted(proxy.step_parameter_names())
    for name, st in proxy.adam_state.items():
        assert st["step"] == report.steps and isinstance(st["step"], int)
        assert st["exp_avg"].shape == named[name].shape == st["exp_avg_sq"].shape
    assert proxy.adam_hparams == {"lr": 3e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    assert not proxy.model.training


def test_warm_up_moves_only_the_step_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    """With step_parameter_names restricted, only those params change and get Adam state."""
    proxy = small_proxy()
    monkeypatch.setattr(proxy, "step_parameter_names", lambda: ["head.weight", "ln_f.weight"])
    before = {n: p.detach().clone() for n, p in proxy.model.named_parameters()}
    settings = WarmupSettings(fraction=1.0, min_samples=4, min_steps=3, batch_size=2)
    warm_up(proxy, pool(), settings, progress=False)
    assert sorted(proxy.adam_state) == ["head.weight", "ln_f.weight"]
    for name, p in proxy.model.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == (name in ("head.weight", "ln_f.weight")), name


def test_same_seed_gives_identical_weights() -> None:
    """Two proxies built and warmed up with the same seeds are bit-identical; seeds matter."""
    settings = WarmupSettings(fraction=0.5, min_samples=4, min_steps=4, batch_size=2, seed=7)

    def build(seed: int) -> BuiltinProxy:
        proxy = small_proxy(seed=seed)
        warm_up(proxy, pool(), settings, progress=False)
        return proxy

    a, b, c = build(0), build(0), build(1)
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name
    assert not torch.equal(a.model.head.weight, c.model.head.weight)
    for name in a.adam_state:
        assert torch.equal(a.adam_state[name]["exp_avg"], b.adam_state[name]["exp_avg"])


def test_image_size_not_a_multiple_of_8_fits_max_len() -> None:
    """A record that fills the text budget still runs when image_size is not a multiple of 8."""
    proxy = BuiltinProxy(TinyVLMConfig(**{**SMALL, "image_size": 36}))
    max_text = proxy.config.max_len - proxy.config.n_image_tokens
    batch = proxy.collate([qa("full", "u" * 30, "r" * (max_text - 34))])
    assert batch.tensors["input_ids"].shape[1] == max_text and not batch.truncated.any()
    assert torch.isfinite(proxy.per_sample_loss({}, batch.tensors)).all()
