"""The built-in proxy: the tiny vision-language model, its collation and persistence."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.func import functional_call

from stepsift.data.images import load_image
from stepsift.data.record import Record
from stepsift.proxy.base import Batch, Proxy
from stepsift.proxy.byte_tokenizer import PAD, render
from stepsift.proxy.tiny_vlm import TinyVLM, TinyVLMConfig

KIND = "stepsift-builtin-tiny-vlm"


def compose_images(paths: Sequence[Path], size: int) -> Image.Image:
    """All of a record's images side by side in one strip, resized to size x size.

    The tiny model sees one picture; putting several side by side keeps their order.
    """
    images = [load_image(p) for p in paths]
    height = max(im.height for im in images)
    scaled = [im.resize((max(1, round(im.width * height / im.height)), height)) for im in images]
    strip = Image.new("RGB", (sum(im.width for im in scaled), height))
    x = 0
    for im in scaled:
        strip.paste(im, (x, 0))
        x += im.width
    return strip.resize((size, size), Image.Resampling.BILINEAR)


class BuiltinProxy(Proxy):
    """The tiny VLM as a proxy; trains from scratch (see `warmup.py`)."""

    def __init__(self, config: TinyVLMConfig | None = None, seed: int = 0):
        self.config = config or TinyVLMConfig()
        torch.manual_seed(seed)
        self.model = TinyVLM(self.config)
        self.model.eval()  # no dropout anywhere; eval() only documents the intent
        self.adam_state = {}
        self.adam_hparams: dict[str, float] = {}

    # -- batches ---------------------------------------------------------------
    def collate(self, records: Sequence[Record]) -> Batch:
        cfg = self.config
        max_text = cfg.max_len - cfg.n_image_tokens
        rows, masks, truncated = [], [], []
        for record in records:
            ids, supervised = render(record.turns)
            # input is ids[:-1]; the target at each position is the next id
            inputs, targets, mask = ids[:-1], ids[1:], supervised[1:]
            truncated.append(len(inputs) > max_text)
            rows.append((inputs[:max_text], targets[:max_text]))
            masks.append(mask[:max_text])
        width = max(len(r[0]) for r in rows)
        input_ids = torch.full((len(rows), width), PAD, dtype=torch.long)
        labels = torch.full((len(rows), width), PAD, dtype=torch.long)
        loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, ((inp, tgt), m) in enumerate(zip(rows, masks, strict=True)):
            input_ids[i, : len(inp)] = torch.tensor(inp)
            labels[i, : len(tgt)] = torch.tensor(tgt)
            loss_mask[i, : len(m)] = torch.tensor(m, dtype=torch.bool)
        images, has_image = self._images(records)
        tensors = {
            "input_ids": input_ids,
            "labels": labels,
            "loss_mask": loss_mask,
            "images": images,
            "has_image": has_image,
        }
        batch = Batch(
            ids=[r.id for r in records],
            tensors=tensors,
            tokens=loss_mask.sum(dim=1),
            truncated=torch.tensor(truncated, dtype=torch.bool),
        )
        return batch.to(self.device)

    def _images(self, records: Sequence[Record]) -> tuple[Tensor, Tensor]:
        size = self.config.image_size
        out = torch.zeros((len(records), 3, size, size), dtype=self.dtype)
        has_image = torch.zeros(len(records), dtype=self.dtype)
        for i, record in enumerate(records):
            if not record.images:
                continue
            pixels = np.asarray(compose_images(record.images, size), dtype=np.float32)
            out[i] = torch.from_numpy(pixels).permute(2, 0, 1).to(self.dtype) / 127.5 - 1.0
            has_image[i] = 1.0
        return out, has_image

    # -- losses ----------------------------------------------------------------
    def token_logits(self, params: Mapping[str, Tensor], tensors: Mapping[str, Tensor]) -> Tensor:
        return functional_call(
            self.model,
            dict(params),
            (tensors["input_ids"], tensors["images"], tensors["has_image"]),
            strict=False,
        )

    def per_sample_loss(
        self, params: Mapping[str, Tensor], tensors: Mapping[str, Tensor]
    ) -> Tensor:
        logits = self.token_logits(params, tensors)
        token_loss = F.cross_entropy(logits.transpose(1, 2), tensors["labels"], reduction="none")
        mask = tensors["loss_mask"].to(token_loss.dtype)
        # clamp: a record truncated down to no supervised token scores loss 0, not NaN
        return (token_loss * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    # -- persistence -----------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"kind": KIND, "config": self.config.to_dict(), "adam_hparams": self.adam_hparams,
                "history": self.history}  # fmt: skip
        (directory / "proxy.json").write_text(json.dumps(meta, indent=2) + "\n")
        torch.save(self.model.state_dict(), directory / "model.pt")
        torch.save(self.adam_state, directory / "adam_state.pt")

    @classmethod
    def load(cls, directory: Path) -> BuiltinProxy:
        directory = Path(directory)
        meta_path = directory / "proxy.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{directory}: not a saved stepsift proxy (no proxy.json)")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta_path}: not valid JSON ({e})") from e
        if not isinstance(meta, dict) or meta.get("kind") != KIND:
            kind = meta.get("kind") if isinstance(meta, dict) else None
            raise ValueError(f"{meta_path}: kind {kind!r} is not {KIND!r}")
        proxy = cls(TinyVLMConfig(**meta["config"]))
        state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
        proxy.model.load_state_dict(state)
        adam_path = directory / "adam_state.pt"
        if adam_path.is_file():
            proxy.adam_state = torch.load(adam_path, map_location="cpu", weights_only=True)
        proxy.adam_hparams = meta.get("adam_hparams", {})
        proxy.history = meta.get("history")
        return proxy
