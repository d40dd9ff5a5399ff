"""Which proxy a `--proxy` value names, and how to open it.

builtin              a fresh built-in tiny VLM (warmed up by the caller)
a stepsift folder    one written by `--save-proxy` (has proxy.json): loaded as saved
anything else        a Hugging Face checkpoint: a local folder or a hub id
"""

from __future__ import annotations

import json
from pathlib import Path

from stepsift.proxy.base import Proxy
from stepsift.proxy.builtin import KIND as BUILTIN_KIND
from stepsift.proxy.builtin import BuiltinProxy
from stepsift.proxy.hf_loading import HFOptions, is_hf_source


def is_saved_proxy(spec: str) -> bool:
    return (Path(spec) / "proxy.json").is_file()


def load_saved_proxy(directory: Path) -> Proxy:
    """A proxy folder written by `Proxy.save`, of whichever kind."""
    meta_path = Path(directory) / "proxy.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{directory}: not a saved stepsift proxy (no proxy.json)") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path}: not valid JSON ({e})") from e
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind == BUILTIN_KIND:
        return BuiltinProxy.load(Path(directory))
    from stepsift.proxy.hf import KIND as HF_KIND  # transformers only when needed
    from stepsift.proxy.hf import HFProxy

    if kind == HF_KIND:
        return HFProxy.load(Path(directory), meta)
    raise ValueError(f"{meta_path}: unknown proxy kind {kind!r}")


def open_hf_proxy(spec: str, options: HFOptions) -> Proxy:
    if not is_hf_source(spec):
        raise ValueError(
            f"--proxy {spec!r}: not 'builtin', a folder saved with --save-proxy, a folder "
            "with a Hugging Face config.json or GGUF file, or a hub id (owner/name)"
        )
    try:
        from stepsift.proxy.hf import HFProxy
    except ImportError as e:
        raise ImportError(
            f"--proxy {spec}: Hugging Face proxies need transformers; pip install 'stepsift[hf]'"
        ) from e
    return HFProxy(spec, options)
