"""Every estimator runs on Hugging Face proxies; LoRA steps move only the adapters;
gradient checkpointing changes nothing; a saved proxy reloads to the same scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import math_records
from scipy.stats import spearmanr

from stepsift.proxy.hf import HFProxy
from stepsift.proxy.hf_loading import HFOptions
from stepsift.proxy.loading import load_saved_proxy
from stepsift.utility.exact import ExactUtility
from stepsift.utility.registry import ESTIMATORS, make_estimator
from stepsift.utility.steps import SGDStep

ETA = 1e-3  # small: first order must then rank like exact


@pytest.mark.parametrize("family", ["qwen2", "qwen2_5_vl"])
def test_every_estimator_scores_an_hf_proxy(family, hf_models, images):
    proxy = HFProxy(str(hf_models[family]))
    pics = images if proxy.multimodal else None
    anchors = proxy.collate(math_records(6, pics, start=50))
    batch = proxy.collate(math_records(8, pics))
    exact = ExactUtility(proxy, anchors, SGDStep(ETA))(batch).utility.numpy()
    for method in ESTIMATORS:
        if method == "exact":
            continue
        estimator = make_estimator(method, proxy, anchors, SGDStep(ETA), less_dim=256)
        got = estimator(batch).utility.numpy()
        assert got.shape == (8,) and np.isfinite(got).all(), method
        if method in ("first-order", "curvature", "forward"):  # exact's quantity at small η
            assert spearmanr(exact, got).statistic > 0.9, method
    first_order = make_estimator("first-order", proxy, anchors, SGDStep(ETA))
    first_order(batch)
    if proxy.multimodal:  # a vision tower's convolution cannot be read off: forward mode
        assert first_order.describe()["directional"] == "jvp"
    else:  # ghost products first on HF proxies (half forward mode's cost with LoRA)
        assert first_order.describe()["directional"] == "ghost"


def test_lora_steps_move_only_the_adapters(hf_models, tmp_path):
    torch.manual_seed(0)
    proxy = HFProxy(str(hf_models["qwen2"]), HFOptions(lora_rank=4, dtype="float64"))
    names = proxy.restrict_step("lora")
    assert names and all("lora_" in n for n in names)
    assert set(names) == set(proxy.trainable_parameter_names())
    anchors = proxy.collate(math_records(4, start=50))
    batch = proxy.collate(math_records(4))
    utility = ExactUtility(proxy, anchors, SGDStep(0.5))(batch).utility
    assert (utility.abs() > 0).all()  # B starts at zero, but its own gradient does not

    proxy.save(tmp_path / "saved")
    again = load_saved_proxy(tmp_path / "saved")
    again.restrict_step("lora")
    reloaded = ExactUtility(again, again.collate(math_records(4, start=50)), SGDStep(0.5))
    assert torch.allclose(reloaded(again.collate(math_records(4))).utility, utility)


def test_gradient_checkpointing_gives_the_same_utility(hf_models, monkeypatch):
    import transformers.modeling_utils

    calls = []
    real = transformers.modeling_utils.checkpoint

    def counting(*args, **kwargs):  # the real checkpoint, counted
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", counting)
    records, anchor_records = math_records(4), math_records(4, start=50)
    results = []
    for checkpointing in (False, True):
        options = HFOptions(dtype="float64", gradient_checkpointing=checkpointing)
        proxy = HFProxy(str(hf_models["qwen2"]), options)
        est = ExactUtility(proxy, proxy.collate(anchor_records), SGDStep(0.5))
        results.append(est(proxy.collate(records)).utility)
        assert bool(calls) == checkpointing  # layers really were recomputed, or not
    assert torch.allclose(results[0], results[1], rtol=1e-9, atol=0)


def test_bfloat16_ranks_like_float32(hf_models):
    """A bf16 proxy's step is rounded into bf16 weights; at a realistic step it must still
    rank candidates as float32 does."""
    scores = []
    for dtype in ("float32", "bfloat16"):
        proxy = HFProxy(str(hf_models["qwen2"]), HFOptions(dtype=dtype))
        est = ExactUtility(proxy, proxy.collate(math_records(6, start=50)), SGDStep(0.1))
        scores.append(est(proxy.collate(math_records(16))).utility.double().numpy())
    assert spearmanr(*scores).statistic > 0.95
