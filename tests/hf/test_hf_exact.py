"""The exact utility through the Hugging Face proxy equals an independent computation
written directly with transformers: its own chat rendering and processor call, its own
assistant-span labels, a real torch.optim.SGD step on a copy of the model, and anchor
losses one record at a time (float64)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import math_records
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

from stepsift.data.images import load_image
from stepsift.proxy.hf import HFProxy
from stepsift.proxy.hf_loading import HFOptions
from stepsift.utility.exact import ExactUtility
from stepsift.utility.steps import SGDStep

ETA = 0.5  # large enough that the step changes the anchor loss well above rounding
EXACT_FAMILIES = ["qwen2", "qwen2_5_vl", "qwen3_vl", "internvl", "smolvlm", "idefics3", "gemma3",
                  "llava_onevision"]  # fmt: skip


# each family's assistant header and end of turn, as its template writes them: the
# supervised tokens are those after the header through the end of turn (with its newline)
TURNS = {
    "gemma3": ("<start_of_turn>model\n", "<end_of_turn>\n"),
    "smolvlm": ("Assistant:", "<end_of_utterance>\n"),
    "idefics3": ("Assistant:", "<end_of_utterance>\n"),
}
CHATML = ("<|im_start|>assistant\n", "<|im_end|>\n")


def reference_inputs(family, record, processor, multimodal):
    """Tensors and labels for one record, as a user of transformers would build them."""
    tokenizer = getattr(processor, "tokenizer", processor)
    messages = []
    for k, turn in enumerate(record.turns):
        if multimodal:
            content = [{"type": "image"} for _ in record.images] if k == 0 else []
            content.append({"type": "text", "text": turn.text})
        else:
            content = turn.text
        messages.append({"role": turn.role, "content": content})
    text = processor.apply_chat_template(messages, tokenize=False)
    if multimodal:
        images = [load_image(p) for p in record.images]
        # a template that writes the BOS itself (Gemma3's, SmolVLM's) gets no second one
        bos = tokenizer.bos_token
        specials = not (bos and text.startswith(bos))
        inputs = dict(
            processor(
                text=[text], images=[images], add_special_tokens=specials, return_tensors="pt"
            )
        )
    else:
        inputs = dict(tokenizer([text], return_tensors="pt", add_special_tokens=False))
    ids = inputs["input_ids"][0].tolist()
    header_text, end_text = TURNS.get(family, CHATML)
    header = tokenizer(header_text, add_special_tokens=False)["input_ids"]
    end = tokenizer(end_text, add_special_tokens=False)["input_ids"]
    labels = [-100] * len(ids)
    i = 0
    while i < len(ids):
        if ids[i : i + len(header)] == header:
            j = i + len(header)
            while ids[j : j + len(end)] != end:
                labels[j] = ids[j]
                j += 1
            labels[j : j + len(end)] = end
            i = j
        i += 1
    return inputs, torch.tensor([labels])


def reference_loss(model, inputs, labels):
    logits = model(**inputs, use_cache=False).logits[0, :-1]
    target = labels[0, 1:]
    keep = target != -100
    return F.cross_entropy(logits[keep], target[keep])


@pytest.mark.parametrize("family", EXACT_FAMILIES)
def test_exact_utility_matches_an_independent_transformers_computation(family, hf_models, images):
    folder = str(hf_models[family])
    multimodal = family != "qwen2"
    auto = AutoModelForImageTextToText if multimodal else AutoModelForCausalLM
    model = auto.from_pretrained(folder, dtype=torch.float64, attn_implementation="eager")
    model.eval()
    proxy = HFProxy(folder, HFOptions(dtype="float64"))
    processor = proxy.processor if multimodal else AutoTokenizer.from_pretrained(folder)
    pics = images if multimodal else None
    candidates = math_records(4, pics)
    anchors = math_records(5, pics, start=100)

    anchor_inputs = [reference_inputs(family, r, processor, multimodal) for r in anchors]

    def anchor_loss(m):
        with torch.no_grad():
            return sum(reference_loss(m, x, y).item() for x, y in anchor_inputs) / len(anchors)

    before = anchor_loss(model)
    expected = []
    for record in candidates:
        stepped = copy.deepcopy(model)
        opt = torch.optim.SGD(stepped.parameters(), lr=ETA)
        reference_loss(stepped, *reference_inputs(family, record, processor, multimodal)).backward()
        opt.step()
        expected.append(before - anchor_loss(stepped))

    estimator = ExactUtility(proxy, proxy.collate(anchors), SGDStep(ETA))
    assert estimator.base_anchor_loss == pytest.approx(before, rel=1e-10)
    got = estimator(proxy.collate(candidates)).utility.tolist()
    assert min(abs(u) for u in expected) > 1e-6  # the step really moves the anchors
    assert got == pytest.approx(expected, rel=1e-5)
