"""On Hugging Face proxies, per-sample gradients are read off one batched backward
(instead of a backward per sample) and equal the loop's: LoRA adapters, and a
full-parameter step with its RMS norms and its output head tied to the embedding; batches
with images keep the loop."""

from __future__ import annotations

import pytest
import torch
from conftest import math_records

from stepsift.proxy.hf import HFProxy
from stepsift.proxy.hf_loading import HFOptions
from stepsift.utility.first_order import FirstOrderUtility
from stepsift.utility.gradients import looped_grads, per_sample_grads, per_sample_method
from stepsift.utility.steps import SGDStep


def assert_same(got: dict, want: dict) -> None:
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-12, msg=name)


def test_lora_gradients_are_read_off_and_equal_the_loop(hf_models):
    proxy = HFProxy(str(hf_models["qwen2"]), HFOptions(lora_rank=4, dtype="float64"))
    proxy.restrict_step("lora")
    torch.manual_seed(0)
    with torch.no_grad():  # B starts at zero, which would leave A's gradients zero
        for name, p in proxy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.1)
    params = proxy.step_parameters()
    tensors = proxy.collate(math_records(5)).tensors
    got, loss = per_sample_grads(proxy, params, tensors)
    assert per_sample_method(proxy, params) == "layer read-off"
    want, want_loss = looped_grads(proxy, params, tensors)
    assert_same(got, want)
    torch.testing.assert_close(loss, want_loss, rtol=1e-9, atol=1e-12)
    assert all(g.abs().sum() > 0 for g in got.values())


def test_full_parameters_with_a_tied_head_and_rms_norms_are_read_off(hf_models):
    proxy = HFProxy(str(hf_models["qwen2"]), HFOptions(dtype="float64"))
    assert proxy.model.config.tie_word_embeddings  # the output head is the embedding
    params = proxy.step_parameters()
    assert any("norm" in n for n in params)
    assert per_sample_method(proxy, params) == "layer read-off"
    tensors = proxy.collate(math_records(4)).tensors
    got, loss = per_sample_grads(proxy, params, tensors)
    assert not getattr(proxy, "per_sample_fallback", "")  # the first batch's check passed
    want, want_loss = looped_grads(proxy, params, tensors)
    assert_same(got, want)
    torch.testing.assert_close(loss, want_loss, rtol=1e-9, atol=1e-12)
    # the head's share and the embedding's both land in the one tied weight
    embedding = proxy.model.get_input_embeddings().weight
    name = next(n for n, p in proxy.model.named_parameters() if p is embedding)
    assert (got[name].abs().sum(-1) > 0).sum(-1).min() > tensors["input_ids"].unique().numel()


def test_image_batches_keep_the_loop(hf_models, images):
    vl = HFProxy(str(hf_models["qwen2_vl"]), HFOptions(lora_rank=4, dtype="float64"))
    vl.restrict_step("lora")
    tensors = vl.collate(math_records(3, images)).tensors
    assert not vl.rows_are_samples(tensors)  # the vision tower sees patches, not records
    got, _ = per_sample_grads(vl, vl.step_parameters(), tensors)
    assert_same(got, looped_grads(vl, vl.step_parameters(), tensors)[0])


@pytest.mark.parametrize("lora", [0, 4])
def test_ghost_products_equal_forward_mode_on_an_hf_proxy(hf_models, lora):
    """`first-order`'s directional derivative as ghost products of one batched backward,
    through a tied head on the supervised rows (full parameters) or adapters."""
    torch.manual_seed(0)
    proxy = HFProxy(str(hf_models["qwen2"]), HFOptions(lora_rank=lora, dtype="float64"))
    if lora:
        proxy.restrict_step("lora")
        with torch.no_grad():
            for name, p in proxy.model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.1)
    anchors = proxy.collate(math_records(4, start=50))
    batch = proxy.collate(math_records(5))
    by_jvp = FirstOrderUtility(proxy, anchors, SGDStep(0.01), mode="jvp")
    ghost = FirstOrderUtility(proxy, anchors, SGDStep(0.01), mode="ghost")
    want, got = by_jvp(batch), ghost(batch)
    # HF's RMS norms compute in float32 even in a float64 model: forward mode and the
    # backward round differently there
    torch.testing.assert_close(got.utility, want.utility, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-9, atol=1e-12)
    assert ghost.describe()["directional"] == "ghost"


def test_a_pool_of_image_and_text_batches_mixes_forward_mode_and_ghost_products(hf_models, images):
    """With adapters on a VLM, an image batch goes to forward mode (the vision tower sees
    patches, not samples) and a text batch to ghost products, in one estimator."""
    torch.manual_seed(0)
    proxy = HFProxy(str(hf_models["qwen2_vl"]), HFOptions(lora_rank=4, dtype="float64"))
    proxy.restrict_step("lora")
    anchors = proxy.collate(math_records(3, start=50))
    auto = FirstOrderUtility(proxy, anchors, SGDStep(0.01))
    by_jvp = FirstOrderUtility(proxy, anchors, SGDStep(0.01), mode="jvp")
    for batch in (proxy.collate(math_records(3, images)), proxy.collate(math_records(3))):
        torch.testing.assert_close(
            auto(batch).utility, by_jvp(batch).utility, rtol=1e-6, atol=1e-12
        )
    assert auto.describe()["directional"] == "jvp+ghost"
