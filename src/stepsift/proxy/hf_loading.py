"""Loading a Hugging Face checkpoint as a proxy: model, tokenizer or processor, options.

Kept apart from `hf.py` (what the proxy computes) because loading is where the real
world's variety lives: hub ids or local folders, GGUF files, processors whose video half
needs torchvision, dtypes and devices, LoRA adapters.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

HF_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass
class HFOptions:
    """How to load and run a Hugging Face proxy (`stepsift score` flags of the same names)."""

    dtype: str = "float32"
    device: str = "cpu"
    max_length: int = 2048  # longer records are cut at the right; counted as truncated
    # eager attention: torch.func's forward-mode AD (first-order) and vmap need it
    attn_implementation: str = "eager"
    gradient_checkpointing: bool = False
    gguf_file: str | None = None  # a GGUF file inside the model folder, e.g. SmolLM2's
    lora_rank: int = 0  # > 0: add LoRA adapters (with peft); `--params lora` steps them
    lora_alpha: float = 16.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    chat_template: str | None = None  # a Jinja template to use instead of the model's

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_hf_source(spec: str) -> bool:
    """A local folder with a `config.json` or GGUF file, or (anything else that is not a
    stepsift proxy folder) a hub id such as `Qwen/Qwen2.5-VL-3B-Instruct`."""
    path = Path(spec)
    if path.is_dir():
        return (path / "config.json").is_file() or any(path.glob("*.gguf"))
    return not path.exists() and "/" in spec and not spec.startswith((".", "/"))


def load_model(source: str, options: HFOptions) -> tuple[nn.Module, bool]:
    """The model and whether it takes images. Image-text-to-text classes are tried first,
    so a VLM checkpoint is never loaded as its text half alone."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    kwargs: dict[str, Any] = {
        "dtype": HF_DTYPES[options.dtype],
        "attn_implementation": options.attn_implementation,
    }
    if options.gguf_file:
        kwargs["gguf_file"] = options.gguf_file
    config = AutoConfig.from_pretrained(source, gguf_file=options.gguf_file)
    multimodal = config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    auto = AutoModelForImageTextToText if multimodal else AutoModelForCausalLM
    model = auto.from_pretrained(source, **kwargs)
    if options.gradient_checkpointing:
        # non-reentrant checkpointing is the variant torch.func's transforms accept
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:  # transformers >= 5.x; the older name is deprecated
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable({"use_reentrant": False})
        # enabling also hooks the input embeddings to require grad (for reentrant
        # checkpointing under adapters), which torch.func's transforms refuse
        model.disable_input_require_grads()
    model.to(options.device)
    model.eval()  # dropout off: a simulated step must be deterministic
    return model, multimodal


def arm_checkpointing(model: nn.Module) -> None:
    """transformers checkpoints a layer only in training mode; a proxy runs in eval mode
    (no dropout). Mark just the checkpointing layers themselves as training, not their
    submodules, so checkpointing engages and dropout stays off."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing:
            module.training = True


def add_lora(model: nn.Module, options: HFOptions) -> nn.Module:
    """Wrap `model` with LoRA adapters and return the model the adapters live in.

    peft starts B at zero, so the adapters add nothing until trained; the gradient on A is
    then zero and a first step moves only B. That step is well defined, so no special
    start is needed; a warm-up (`--warmup-fraction`) moves both.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=options.lora_rank,
        lora_alpha=options.lora_alpha,
        target_modules=list(options.lora_targets),
        lora_dropout=0.0,
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    # the injected model itself: its parameter names are the model's own, plus lora_*
    return peft_model.get_base_model()


def load_processor(source: str, options: HFOptions, multimodal: bool) -> Any:
    """A tokenizer (text models) or processor (VLMs).

    Many VLM processors also build a video processor, which needs torchvision; where that
    fails (torchvision missing or broken beside this torch), an image-only processor of
    the same class is built instead: videos are not among stepsift's inputs.
    """
    from transformers import AutoProcessor, AutoTokenizer

    if not multimodal:
        return AutoTokenizer.from_pretrained(source, gguf_file=options.gguf_file)
    try:
        processor = AutoProcessor.from_pretrained(source)
    except (ImportError, AttributeError, ValueError, TypeError) as e:
        return image_only_processor(source, e)
    if getattr(processor, "image_processor", None) is None:
        # AutoProcessor quietly falls back to the bare tokenizer when the processor
        # class cannot be built
        return image_only_processor(source, ValueError("AutoProcessor gave no image processor"))
    return processor


# processors whose apply_chat_template override only adds video settings
VIDEO_TEMPLATE_OVERRIDES = {"SmolVLMProcessor"}


def image_only_processor(source: str, why: Exception) -> Any:
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, ProcessorMixin
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    config = AutoConfig.from_pretrained(source)
    base = PROCESSOR_MAPPING.get(type(config), None)
    if base is None:
        raise ValueError(f"{source}: cannot load its processor ({why})") from why
    # the processor's own settings, which fix how many tokens an image expands to
    # (InternVL's and Gemma3's image_seq_length, LLaVA-OneVision's num_image_tokens...)
    settings = {
        k: v for k, v in processor_settings(source).items() if k not in base.get_attributes()
    }
    video = {"video_processor": None} if "video_processor" in base.get_attributes() else {}

    class ImageOnlyProcessor(base):  # type: ignore[misc, valid-type]
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kw):
            super().__init__(
                image_processor=image_processor,
                tokenizer=tokenizer,
                chat_template=chat_template,
                **video,
                **kw,
            )

        if base.__name__ in VIDEO_TEMPLATE_OVERRIDES:
            # its apply_chat_template reads the (missing) video processor's frame
            # settings even for images; the generic one renders the same text
            apply_chat_template = ProcessorMixin.apply_chat_template

    tokenizer = AutoTokenizer.from_pretrained(source)
    return ImageOnlyProcessor(
        image_processor=AutoImageProcessor.from_pretrained(source),
        tokenizer=tokenizer,
        chat_template=folder_chat_template(source) or tokenizer.chat_template,
        **settings,
    )


def processor_settings(source: str) -> dict[str, Any]:
    """The processor's own init settings saved with it (processor_config.json, in a folder
    or a hub repo), without its class name and its sub-processors' configs."""
    from transformers.utils import cached_file

    path = cached_file(
        source,
        "processor_config.json",
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    if path is None:
        return {}
    saved = json.loads(Path(path).read_text())
    return {k: v for k, v in saved.items() if k != "processor_class" and not isinstance(v, dict)}


def folder_chat_template(source: str) -> str | None:
    """A processor's chat template as saved beside it (either of the two file forms)."""
    folder = Path(source)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    if (folder / "chat_template.json").is_file():
        return json.loads((folder / "chat_template.json").read_text())["chat_template"]
    return None
