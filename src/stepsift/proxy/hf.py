"""A Hugging Face causal LM or image-text-to-text model as the proxy.

Records are rendered with the model's own chat template (and processor, for images);
the loss covers exactly the supervised assistant replies (see `chat.py`).

Batches stay batch-first, as every estimator slices them by sample: the processor's
per-image outputs (e.g. Qwen2-VL's `pixel_values` rows and `image_grid_thw`) are kept
per record, padded to the batch's longest with a row count beside them, and joined
back into the processor's layout just before the forward pass.

Losses are computed from the final hidden states at the supervised positions only, so
the vocabulary-wide logits (150k columns for Qwen) are never formed for the whole batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from stepsift.data.images import load_image
from stepsift.data.record import Record
from stepsift.proxy.base import Batch, Proxy
from stepsift.proxy.chat import (
    TemplateError,
    render,
    shift_spans,
    supervised_token_mask,
)
from stepsift.proxy.hf_loading import (
    HFOptions,
    add_lora,
    arm_checkpointing,
    load_model,
    load_processor,
)

KIND = "stepsift-hf"
TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")
ROWS = "__rows"  # suffix of the per-record row count of a padded per-image tensor


def has_decoder(model: nn.Module) -> bool:
    """Whether `model.model` gives the final hidden states that its output head maps to
    logits (true of transformers' causal LMs and image-text-to-text models)."""
    return isinstance(getattr(model, "model", None), nn.Module) and (
        model.get_output_embeddings() is not None
    )


class _SupervisedHead(nn.Module):
    """The proxy's model plus a forward that returns the final hidden states (or the
    logits, for model classes without a separate decoder), so `functional_call` can run
    either with substituted parameters under the model's own names prefixed `m.`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(self, inputs: dict[str, Tensor], hidden: bool) -> Tensor:
        if hidden and has_decoder(self.m):
            return self.m.model(**inputs, use_cache=False).last_hidden_state
        return self.m(**inputs, use_cache=False).logits


class HFProxy(Proxy):
    """A `transformers` model (optionally with LoRA adapters) as a stepsift proxy."""

    def __init__(self, source: str, options: HFOptions | None = None):
        self.source = source
        self.options = options or HFOptions()
        model, self.multimodal = load_model(source, self.options)
        if self.options.lora_rank > 0:
            model = add_lora(model, self.options)
            for name, p in model.named_parameters():
                p.requires_grad_("lora_" in name)  # the base stays frozen, as in LoRA SFT
        self.model = model
        self.processor = load_processor(source, self.options, self.multimodal)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._head = _SupervisedHead(self.model)
        self._has_decoder = has_decoder(self.model)
        # the output head's weight under its parameter name (the embedding's, when tied),
        # found once: per_sample_loss substitutes it from the params it is given
        head = self.model.get_output_embeddings()
        self._head_name = next(n for n, p in self.model.named_parameters() if p is head.weight)
        self.adam_state = {}
        self.adam_hparams: dict[str, float] = {}

    # per-sample gradients loop over samples: HF forwards branch on their inputs
    # (masks, image positions), which vmap over the batch cannot trace
    vmap_over_samples = False

    @property
    def image_token_ids(self) -> set[int]:
        """Every token that stands for image content: the placeholder and the tokens the
        processor expands it to (Gemma3's `<start_of_image>` and soft tokens, InternVL's
        `<img>`, `<IMG_CONTEXT>` and `</img>`)."""
        ids = set()
        for attr in ("image_token_id", "video_token_id", "image_token_ids", "video_token_ids"):
            value = getattr(self.processor, attr, None)
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(v, int):
                    ids.add(v)
        return ids

    # -- batches ---------------------------------------------------------------
    def encode(self, record: Record) -> tuple[dict[str, Tensor], list[bool]]:
        """The processor's tensors for one record (batch dim 1) and its supervised mask."""
        if record.images and not self.multimodal:
            raise TemplateError(
                f"{record.source}: record {record.id} has images but the proxy "
                f"{self.source} is a text-only model"
            )
        rendered = render(self.processor, record, self.multimodal, self.options.chat_template)
        if not self.multimodal:
            encoded = self.tokenizer(
                rendered.text, add_special_tokens=False, return_offsets_mapping=True
            )
            mask = supervised_token_mask(encoded["offset_mapping"], rendered.supervised_spans)
            return {"input_ids": torch.tensor([encoded["input_ids"]])}, mask
        images = [load_image(p) for p in record.images] or None
        # The processor expands each image placeholder (into patch tokens, and for some
        # families start/end markers, tile or row tokens, or newlines) and tokenises the
        # result; its character offsets and its placeholder replacements locate the
        # supervised replies in what it tokenised.
        tensors = dict(
            self.processor(
                text=[rendered.text],
                images=[images] if images else None,  # one list per text: one sample
                return_tensors="pt",
                return_offsets_mapping=True,
                return_text_replacement_offsets=True,
                **self._special_tokens_kwargs(rendered.text),
            )
        )
        offsets = tensors.pop("offset_mapping")[0].tolist()
        # (Idefics3's processor gives none for a record without images: nothing moved)
        replaced = tensors.pop("text_replacement_offsets", [[]])[0]
        spans = shift_spans(rendered.supervised_spans, replaced)
        mask = supervised_token_mask(offsets, spans)
        image_ids = self.image_token_ids
        ids = tensors["input_ids"][0].tolist()
        return tensors, [m and t not in image_ids for m, t in zip(mask, ids, strict=True)]

    def _special_tokens_kwargs(self, text: str) -> dict[str, bool]:
        """As transformers' own `apply_chat_template(tokenize=True)`: a rendering that
        already starts with the BOS token (Gemma3's, SmolVLM's) gets no second one."""
        bos = self.tokenizer.bos_token
        return {"add_special_tokens": False} if bos and text.startswith(bos) else {}

    def collate(self, records: Sequence[Record]) -> Batch:
        max_len = self.options.max_length
        encoded = [self.encode(r) for r in records]
        truncated = []
        rows: list[tuple[list[int], list[bool], dict[str, Tensor]]] = []
        for record, (tensors, mask) in zip(records, encoded, strict=True):
            ids = tensors["input_ids"][0].tolist()
            truncated.append(len(ids) > max_len)
            if len(ids) > max_len and self.image_token_ids & set(ids[max_len:]):
                raise TemplateError(
                    f"{record.source}: record {record.id}: --max-length {max_len} would cut "
                    "into its image tokens; raise --max-length or drop the record"
                )
            rows.append((ids[:max_len], mask[:max_len], tensors))
        width = max(len(ids) for ids, _, _ in rows)
        pad = self.tokenizer.pad_token_id
        n = len(rows)
        input_ids = torch.full((n, width), pad, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        supervised = torch.zeros((n, width), dtype=torch.bool)
        out: dict[str, Tensor] = {}
        for i, (ids, mask, tensors) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            supervised[i, : len(mask)] = torch.tensor(mask, dtype=torch.bool)
            for key in ("mm_token_type_ids", "token_type_ids"):
                if key in tensors:
                    out.setdefault(key, torch.zeros((n, width), dtype=torch.long))
                    out[key][i, : len(ids)] = tensors[key][0, : len(ids)]
        out |= self._per_image_tensors([t for _, _, t in rows])
        out |= {
            "input_ids": input_ids,
            "attention_mask": attention,
            # position t predicts token t+1: labels and loss mask are shifted by one
            "labels": input_ids[:, 1:].clone(),
            "loss_mask": supervised[:, 1:] & attention[:, 1:].bool(),
        }
        batch = Batch(
            ids=[r.id for r in records],
            tensors=out,
            tokens=out["loss_mask"].sum(dim=1),
            truncated=torch.tensor(truncated, dtype=torch.bool),
        )
        return batch.to(self.device)

    def _per_image_tensors(self, per_record: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Per-image processor outputs, zero-padded per record, with their row counts.

        Every dim is padded to the batch's largest, not only the leading one: LLaVA-
        OneVision's `pixel_values` (images, crops, ...) vary in their crop count, which
        the model reads from `image_sizes`; SmolVLM's (1, images, ...) in their image
        count, where the model drops all-zero images as padding (as its processor pads)."""
        keys = {k for t in per_record for k in t if k not in TOKEN_KEYS}
        out = {}
        for key in sorted(keys):
            parts = [t.get(key) for t in per_record]
            like = next(p for p in parts if p is not None)
            counts = [0 if p is None else p.shape[0] for p in parts]
            shape = [max(p.shape[d] for p in parts if p is not None) for d in range(like.dim())]
            dtype = self.dtype if like.is_floating_point() else like.dtype
            padded = torch.zeros((len(parts), *shape), dtype=dtype)
            for i, p in enumerate(parts):
                if p is not None:
                    padded[(i, *(slice(0, n) for n in p.shape))] = p
            out[key] = padded
            out[key + ROWS] = torch.tensor(counts)
        return out

    def model_inputs(self, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The batch as the model's forward takes it: per-image tensors joined again."""
        inputs = {k: tensors[k] for k in TOKEN_KEYS if k in tensors}
        for key in tensors:
            if not key.endswith(ROWS):
                continue
            name = key[: -len(ROWS)]
            counts = tensors[key].tolist()
            if sum(counts):
                inputs[name] = torch.cat([tensors[name][i, :c] for i, c in enumerate(counts) if c])
        return inputs

    def rows_are_samples(self, tensors: Mapping[str, Tensor]) -> bool:
        """Text batches only: a vision tower sees the batch's images (or patches) joined
        along its leading dim, and checkpointing re-runs the layers during backward."""
        if self.options.gradient_checkpointing:
            return False
        return not any(k.endswith(ROWS) and int(v.sum()) > 0 for k, v in tensors.items())

    def token_rows(self, tensors: Mapping[str, Tensor]) -> tuple[tuple[nn.Module, ...], Tensor]:
        """The output head sees only the supervised positions, flattened (per_sample_loss)."""
        if not self._has_decoder:  # the model's own head sees the whole batch
            return super().token_rows(tensors)
        rows, _ = tensors["loss_mask"].nonzero(as_tuple=True)
        return (self.model.get_output_embeddings(),), rows

    # -- losses ----------------------------------------------------------------
    def _call(self, params: Mapping[str, Tensor], tensors: Mapping[str, Tensor], hidden: bool):
        if self.options.gradient_checkpointing:
            arm_checkpointing(self.model)  # again: a warm-up's eval() clears it
        prefixed = {"m." + name: p for name, p in params.items()}
        return functional_call(self._head, prefixed, (self.model_inputs(tensors), hidden))

    def token_logits(self, params: Mapping[str, Tensor], tensors: Mapping[str, Tensor]) -> Tensor:
        return self._call(params, tensors, hidden=False)[:, :-1]

    def supervised_logits(
        self, params: Mapping[str, Tensor], tensors: Mapping[str, Tensor]
    ) -> Tensor:
        """The output head applied to the supervised positions' hidden states only."""
        states = self._call(params, tensors, hidden=True)[:, :-1]
        rows, cols = tensors["loss_mask"].nonzero(as_tuple=True)
        picked = states[rows, cols]
        if self._has_decoder:  # hidden states: apply the output head
            head = self.model.get_output_embeddings()
            weight = params.get(self._head_name, head.weight)
            # called as a module (not F.linear) so the layer read-off sees the call
            picked = functional_call(head, {"weight": weight}, (picked,))
        return picked

    def per_sample_loss(
        self, params: Mapping[str, Tensor], tensors: Mapping[str, Tensor]
    ) -> Tensor:
        picked = self.supervised_logits(params, tensors)
        rows, _ = tensors["loss_mask"].nonzero(as_tuple=True)
        token_loss = F.cross_entropy(
            picked.float() if picked.dtype in (torch.bfloat16, torch.float16) else picked,
            tensors["labels"][tensors["loss_mask"]],
            reduction="none",
        )
        n = tensors["loss_mask"].shape[0]
        total = torch.zeros(n, dtype=token_loss.dtype, device=token_loss.device)
        total = total.index_add(0, rows, token_loss)
        # clamp: a record truncated down to no supervised token scores loss 0, not NaN
        return total / tensors["loss_mask"].sum(dim=1).clamp(min=1).to(total.dtype)

    def origin(self) -> dict:
        """The checkpoint and the options it was opened with (LoRA, GGUF file), and its
        history: what a score file made from a saved folder records of its model."""
        return {**super().origin(), "source": self.source, "options": self.options.to_dict()}

    # -- persistence -----------------------------------------------------------
    def save(self, directory: Path) -> None:
        """What it takes to rebuild this proxy: the source and options, plus the weights
        a warm-up changed (all trainable parameters, or just the adapters) if any."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "kind": KIND,
            "source": self.source,
            "options": self.options.to_dict(),
            "adam_hparams": self.adam_hparams,
            "history": self.history,
        }
        (directory / "proxy.json").write_text(json.dumps(meta, indent=2) + "\n")
        # weights that differ from the source: warmed-up ones, and LoRA adapters (their
        # random start too, so a reloaded proxy scores exactly as this one)
        named = dict(self.model.named_parameters())
        changed = set(self.adam_state) | {n for n in named if "lora_" in n}
        if changed:
            trained = {n: named[n].detach().cpu() for n in sorted(changed)}
            torch.save(trained, directory / "trained_weights.pt")
        if self.adam_state:
            torch.save(self.adam_state, directory / "adam_state.pt")

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any]) -> HFProxy:
        directory = Path(directory)
        proxy = cls(meta["source"], HFOptions(**meta["options"]))
        weights = directory / "trained_weights.pt"
        if weights.is_file():
            trained = torch.load(weights, map_location=proxy.device, weights_only=True)
            named = dict(proxy.model.named_parameters())
            with torch.no_grad():
                for name, value in trained.items():
                    named[name].copy_(value)
        if (directory / "adam_state.pt").is_file():
            proxy.adam_state = torch.load(
                directory / "adam_state.pt", map_location=proxy.device, weights_only=True
            )
        proxy.adam_hparams = meta.get("adam_hparams", {})
        proxy.history = meta.get("history")
        return proxy
