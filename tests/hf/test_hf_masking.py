"""The loss mask of Hugging Face proxies covers exactly the supervised assistant replies."""

from __future__ import annotations

import pytest
from conftest import FAMILIES, make_record

from stepsift.proxy.chat import TemplateError
from stepsift.proxy.hf import HFProxy
from stepsift.proxy.hf_loading import HFOptions

# what closes an assistant turn in each family's template, supervised with the reply
# (shared FORMATS.md): ChatML's `<|im_end|>` and its newline unless listed
TURN_END = {
    "gemma3": "<end_of_turn>\n",
    "smolvlm": "<end_of_utterance>\n",
    "idefics3": "<end_of_utterance>\n",
}


def expected_supervision(family: str, record) -> str:
    """What each family's template supervises: the reply as the template writes it (Gemma3
    trims it; SmolVLM's generation prompt "Assistant:" leaves the reply its leading space),
    then the family's end of turn. The LLaVA-1.5 template writes " reply " after
    "ASSISTANT:" with no end marker."""
    replies = [t.text for t in record.turns if t.supervised]
    if family == "llava":
        return "".join(f" {text} " for text in replies)
    if family == "gemma3":
        replies = [text.strip() for text in replies]
    if family in ("smolvlm", "idefics3"):
        replies = [" " + text for text in replies]
    end = TURN_END.get(family, "<|im_end|>\n")
    return "".join(text + end for text in replies)


def conversations(images):
    return [
        make_record("single", [("user", "What is 2+2?"), ("assistant", "2 + 2 = 4.")]),
        make_record(
            "multi",
            [
                ("system", "Answer briefly."),
                ("user", "Name a prime."),
                ("assistant", "7"),
                ("user", "Another one, larger?"),
                ("assistant", "Eleven is prime too; so is 13."),
            ],
        ),
        make_record(  # the first reply marked unsupervised (ms-swift's "loss": false)
            "partial",
            [("user", "Hi"), ("assistant", "Hi there"), ("user", "Sum 3, 4"), ("assistant", "7")],
            unsupervised=(1,),
        ),
        make_record(
            "unicode",
            [("user", "Écris π"), ("assistant", "π ≈ 3.14159 — voilà\n\nfin")],
        ),
        *(
            [
                make_record(
                    "one-image",
                    [
                        ("system", "Answer briefly."),
                        ("user", "What colour is it?"),
                        ("assistant", "Red."),
                        ("user", "Sure?"),
                        ("assistant", "Yes, red."),
                    ],
                    (images[0],),
                ),
                make_record(
                    "two-images",
                    [
                        ("user", "Which is red?"),
                        ("assistant", "The first."),
                        ("user", "And blue?"),
                        ("assistant", "The second one."),
                    ],
                    tuple(images),
                ),
            ]
            if images
            else []
        ),
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_supervised_tokens_decode_to_the_replies(family, hf_models, images):
    proxy = HFProxy(str(hf_models[family]))
    records = conversations(images if proxy.multimodal else None)
    batch = proxy.collate(records)  # one padded batch: masks must survive padding
    labels, mask = batch.tensors["labels"], batch.tensors["loss_mask"]
    image_ids = proxy.image_token_ids
    pad = proxy.tokenizer.pad_token_id
    for i, record in enumerate(records):
        supervised = labels[i][mask[i]].tolist()
        expected = expected_supervision(family, record)
        decoded = proxy.tokenizer.decode(supervised)
        if family == "llava":  # a reply's trailing space merges into the next " USER"
            decoded, expected = decoded.split(), expected.split()
        assert decoded == expected, record.id
        assert not image_ids & set(supervised)
        assert batch.tokens[i] == len(supervised)
        # nothing after the sequence's end (padding) is supervised
        length = int(batch.tensors["attention_mask"][i].sum())
        assert not mask[i, length - 1 :].any()
        assert pad not in supervised or "<|endoftext|>" in expected
    if proxy.multimodal:  # the images really are in the batch, as image tokens
        for i in (-2, -1):
            ids = batch.tensors["input_ids"][i].tolist()
            assert sum(t in image_ids for t in ids) >= len(records[i].images)


def test_prompt_text_is_never_supervised(hf_models):
    proxy = HFProxy(str(hf_models["qwen2"]))
    record = make_record("echo", [("user", "repeat: banana"), ("assistant", "banana")])
    batch = proxy.collate([record])
    ids = batch.tensors["labels"][0].tolist()
    mask = batch.tensors["loss_mask"][0].tolist()
    text_unsupervised = proxy.tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    assert "repeat: banana" in text_unsupervised and "<|im_start|>assistant\n" in (
        text_unsupervised
    )


def test_text_model_refuses_images(hf_models, images):
    proxy = HFProxy(str(hf_models["qwen2"]))
    record = make_record("pic", [("user", "What is this?"), ("assistant", "red")], (images[0],))
    with pytest.raises(TemplateError, match="pic.*text-only"):
        proxy.collate([record])


def test_over_long_records_are_cut_and_counted(hf_models, images):
    proxy = HFProxy(str(hf_models["qwen2_vl"]), HFOptions(max_length=40))
    long = make_record("long", [("user", "Count."), ("assistant", " ".join(["one"] * 80))])
    short = make_record("short", [("user", "Hi"), ("assistant", "Hi")])
    batch = proxy.collate([long, short])
    assert batch.truncated.tolist() == [True, False]
    assert batch.tensors["input_ids"].shape[1] == 40
    assert 0 < batch.tokens[0] < 80
    # a cut that would split an image's tokens is refused by name, not silently wrong
    pic = make_record("pic", [("user", "Look " * 10), ("assistant", "red")], (images[0],))
    ids = proxy.collate([pic]).tensors["input_ids"][0].tolist()
    first_image = next(i for i, t in enumerate(ids) if t in proxy.image_token_ids)
    tight = HFProxy(str(hf_models["qwen2_vl"]), HFOptions(max_length=first_image + 2))
    with pytest.raises(TemplateError, match="pic.*image tokens"):
        tight.collate([pic])


def test_a_template_that_rewrites_earlier_turns_is_refused(hf_models):
    # renders only the last assistant reply: the prefix of a conversation is not a prefix
    # of the whole, so replies cannot be located
    template = (
        "{% for m in messages %}{% if m.role != 'assistant' or loop.last %}"
        "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    proxy = HFProxy(str(hf_models["qwen2"]), HFOptions(chat_template=template))
    record = make_record(
        "rewrite", [("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")]
    )
    with pytest.raises(TemplateError, match="rewrite.*prefix-stable"):
        proxy.collate([record])
