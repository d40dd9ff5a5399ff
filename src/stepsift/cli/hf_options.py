"""`score`'s options for Hugging Face proxies, and the `HFOptions` they make."""

from __future__ import annotations

import argparse
from pathlib import Path

from stepsift.proxy.hf_loading import HFOptions


def add_hf_arguments(p: argparse.ArgumentParser) -> None:
    h = HFOptions()
    g = p.add_argument_group("Hugging Face proxies")
    g.add_argument("--device", default=h.device, help="cpu, cuda, cuda:1, ...")
    g.add_argument(
        "--max-length",
        type=int,
        default=h.max_length,
        help="tokens per record; longer ones are cut at the right and counted as truncated",
    )
    g.add_argument(
        "--attn-implementation",
        default=h.attn_implementation,
        help="eager (default: forward-mode AD and vmap need it) or sdpa, flash_attention_2",
    )
    g.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory")
    g.add_argument("--gguf-file", default=None, help="a GGUF file inside the --proxy folder")
    g.add_argument(
        "--lora-rank", type=int, default=h.lora_rank, help="add LoRA adapters of this rank (peft)"
    )
    g.add_argument("--lora-alpha", type=float, default=h.lora_alpha)
    g.add_argument(
        "--lora-targets",
        default=",".join(h.lora_targets),
        help="comma-separated module names the adapters go on",
    )
    g.add_argument(
        "--chat-template",
        type=Path,
        default=None,
        help="a Jinja chat template file to render records with instead of the model's",
    )


def hf_options_from(args: argparse.Namespace) -> HFOptions:
    return HFOptions(
        device=args.device,
        max_length=args.max_length,
        attn_implementation=args.attn_implementation,
        gradient_checkpointing=args.gradient_checkpointing,
        gguf_file=args.gguf_file,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_targets=[t for t in args.lora_targets.split(",") if t],
        chat_template=args.chat_template.read_text() if args.chat_template else None,
    )
