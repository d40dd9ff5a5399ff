"""The benchmark's TARGET model: a larger vision-language model of a different design.

Selected subsets are scored by fine-tuning this model on them, so it must differ from the
proxy (`stepsift.proxy.tiny_vlm`) in the ways that matter for transfer:

    proxy:  conv stem, 32x32 squashed image -> 16 tokens; LayerNorm + GELU MLP;
            d_model 64, 2 layers, ~210k parameters
    target: a 32x104 image that keeps the digit strip's aspect ratio (padded, never
            squashed), pooled 4x back to source pixels (8x26) and cut into full-height
            digit cells 9 columns wide (an 8-px digit and its 1-px gap), each through a
            per-cell MLP -> 3 tokens, one per digit; pre-norm RMSNorm + SwiGLU MLP + fused
            causal attention; d_model 128, 6 layers, ~1.4M parameters

Text is byte-level and rendered with the proxy's `render` (same chat layout and loss mask:
only assistant bytes and their END token are supervised). Generation is greedy and batched
with a KV cache; prompts are left-padded so every row's next token sits in the last column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from stepsift.data.images import load_image
from stepsift.data.record import Record, Turn
from stepsift.proxy.byte_tokenizer import ASSISTANT, END, PAD, VOCAB_SIZE, render

KIND = "stepsift-bench-target"


@dataclass
class TargetConfig:
    vocab_size: int = VOCAB_SIZE
    d_model: int = 128
    n_layers: int = 6
    n_heads: int = 4
    mlp_hidden: int = 384  # SwiGLU hidden width (3 x d_model: ~ the params of a 4x GELU MLP)
    max_text_len: int = 256  # text positions (prompt + answer; answers are < 110 bytes)
    image_height: int = 32  # digit strips are 32 px high ...
    image_width: int = 104  # ... and 68 or 104 px wide: pad on the right, never squash
    pool: int = 4  # strips are 8x8 digits upscaled 4x: average back to source pixels
    cell: int = 9  # columns (after pooling) per image token: a digit and the gap after it
    patch_hidden: int = 256  # width of the per-cell MLP
    image_channels: int = 3

    @property
    def n_image_tokens(self) -> int:
        """One token per digit cell: ceil((104 / 4) / 9) = 3 by default."""
        return -(-(self.image_width // self.pool) // self.cell)

    def to_dict(self) -> dict:
        return asdict(self)


# --- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """A conversation and its image as pixels: what the target trains on.

    Records (with image files) become Examples via `example_from_record`; the base model's
    pre-training builds them directly from the digit bank, without writing files.
    """

    turns: tuple[Turn, ...]
    pixels: np.ndarray | None  # (H, W, 3) uint8, any size; None for a text-only example
    answer: int | None = None  # the true final answer, where known (for evaluation)
    family: str = "chain"  # the task family whose parser reads the final answer (families.py)


def fit_image(pixels: np.ndarray, cfg: TargetConfig) -> np.ndarray:
    """Scale to the target's height keeping the aspect ratio, then pad (or squash) the width.

    The benchmark's strips are already 32 px high and at most 104 px wide, so they pass
    through pixel-exact; other images are resized.
    """
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    h, w = pixels.shape[:2]
    height, width = cfg.image_height, cfg.image_width
    new_w = min(width, max(1, round(w * height / h)))
    if (h, w) != (height, new_w):
        im = Image.fromarray(pixels).resize((new_w, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(im)
    out = np.zeros((height, width, 3), dtype=np.uint8)
    out[:, :new_w] = pixels
    return out


def strip_of(paths: Sequence[Path]) -> np.ndarray:
    """A record's images side by side at a common height (one picture keeps their order)."""
    images = [load_image(p) for p in paths]
    height = max(im.height for im in images)
    scaled = [im.resize((max(1, round(im.width * height / im.height)), height)) for im in images]
    return np.concatenate([np.asarray(im.convert("RGB")) for im in scaled], axis=1)


def example_from_record(record: Record) -> Example:
    meta = record.metadata.get("meta")
    answer = meta.get("answer") if isinstance(meta, dict) else None
    family = meta.get("family", "chain") if isinstance(meta, dict) else "chain"
    pixels = strip_of(record.images) if record.images else None
    return Example(tuple(record.turns), pixels, answer, family)


def prompt_turns(turns: Sequence[Turn]) -> tuple[Turn, ...]:
    """The turns before the last assistant reply: what the model is asked to continue."""
    last = max(i for i, t in enumerate(turns) if t.role == "assistant")
    return tuple(turns[:last])


def prompt_ids(turns: Sequence[Turn]) -> list[int]:
    """The rendered prompt, ending in the ASSISTANT role token the reply follows."""
    ids, _ = render(prompt_turns(turns))
    return [*ids, ASSISTANT]


@dataclass
class TargetBatch:
    input_ids: Tensor  # (B, T) right-padded with PAD
    labels: Tensor  # (B, T) next token at each position
    loss_mask: Tensor  # (B, T) bool: supervised (assistant) targets only
    images: Tensor  # (B, C, H, W) in [-1, 1]
    has_image: Tensor  # (B,) float 0/1

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def image_tensor(examples: Sequence[Example], cfg: TargetConfig) -> tuple[Tensor, Tensor]:
    out = torch.zeros((len(examples), 3, cfg.image_height, cfg.image_width))
    has_image = torch.zeros(len(examples))
    for i, ex in enumerate(examples):
        if ex.pixels is None:
            continue
        pixels = torch.from_numpy(fit_image(ex.pixels, cfg)).float()
        out[i] = pixels.permute(2, 0, 1) / 127.5 - 1.0
        has_image[i] = 1.0
    return out, has_image


def collate(examples: Sequence[Example], cfg: TargetConfig) -> TargetBatch:
    """Tokenise and right-pad; long texts are cut at `max_text_len`."""
    rows = []
    for ex in examples:
        ids, supervised = render(ex.turns)
        n = min(len(ids) - 1, cfg.max_text_len)
        rows.append((ids[:n], ids[1 : n + 1], supervised[1 : n + 1]))
    width = max(len(r[0]) for r in rows)
    input_ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    labels = torch.full((len(rows), width), PAD, dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (inp, tgt, m) in enumerate(rows):
        input_ids[i, : len(inp)] = torch.tensor(inp)
        labels[i, : len(tgt)] = torch.tensor(tgt)
        loss_mask[i, : len(m)] = torch.tensor(m, dtype=torch.bool)
    images, has_image = image_tensor(examples, cfg)
    return TargetBatch(input_ids, labels, loss_mask, images, has_image)


# --- the network -------------------------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, cfg: TargetConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(
        self, x: Tensor, mask: Tensor | None, cache: tuple[Tensor, Tensor] | None, at: int
    ) -> Tensor:
        """Causal attention; `mask` (B,1,Tq,Tk) replaces is_causal when rows are padded.

        With a `cache`, this call's keys/values are written at column `at` onwards and the
        queries attend to columns [0, at + t).
        """
        b, t, d = x.shape
        q, k, v = (
            z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)
            for z in self.qkv(x).split(d, dim=2)
        )
        if cache is not None:
            cache[0][:, :, at : at + t] = k
            cache[1][:, :, at : at + t] = v
            k, v = cache[0][:, :, : at + t], cache[1][:, :, : at + t]
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, cfg: TargetConfig):
        super().__init__()
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.mlp_hidden, bias=False)
        self.down = nn.Linear(cfg.mlp_hidden, cfg.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: TargetConfig):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.norm2 = nn.RMSNorm(cfg.d_model)
        self.mlp = SwiGLU(cfg)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        cache: tuple[Tensor, Tensor] | None = None,
        at: int = 0,
    ) -> Tensor:
        x = x + self.attn(self.norm1(x), mask, cache, at)
        return x + self.mlp(self.norm2(x))


class TargetModel(nn.Module):
    """Image patch tokens, then text tokens, through a pre-norm causal transformer."""

    def __init__(self, cfg: TargetConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or TargetConfig()
        # one token per digit cell: a conv with stride = kernel (the MLP's first layer) + MLP
        kernel = (cfg.image_height // cfg.pool, cfg.cell)
        self.patch_conv = nn.Conv2d(cfg.image_channels, cfg.patch_hidden, kernel, stride=kernel)
        self.patch_out = nn.Linear(cfg.patch_hidden, cfg.d_model)
        self.col_emb = nn.Parameter(torch.zeros(cfg.n_image_tokens, cfg.d_model))
        self.token_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_text_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init)
        nn.init.normal_(self.col_emb, std=0.02)
        for name, p in self.named_parameters():  # GPT-2: damp residual writes by depth
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, std=0.02 / (2 * cfg.n_layers) ** 0.5)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):  # keep PyTorch's fan-in init: pixels are O(1)
            return
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- forward ---------------------------------------------------------------
    def embed_images(self, images: Tensor, has_image: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, n_image_tokens, d): one token per digit cell."""
        cfg = self.cfg
        pooled = F.avg_pool2d(images, cfg.pool)  # (B, C, 8, 26): source pixels
        pooled = F.pad(pooled, (0, cfg.n_image_tokens * cfg.cell - pooled.shape[-1]))  # 27 wide
        h = F.silu(self.patch_conv(pooled)).flatten(2).transpose(1, 2)  # (B, 3, hidden)
        x = self.patch_out(h) * has_image[:, None, None]  # text-only rows: positions only
        return x + self.col_emb

    def forward(self, input_ids: Tensor, images: Tensor, has_image: Tensor) -> Tensor:
        """Logits over the text positions: (B, T_text, vocab). Rows are right-padded."""
        t = input_ids.shape[1]
        text = self.token_emb(input_ids) + self.pos_emb.weight[:t]
        x = torch.cat([self.embed_images(images, has_image), text], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, self.cfg.n_image_tokens :]))

    def loss(self, batch: TargetBatch) -> Tensor:
        """Mean cross-entropy over the batch's supervised tokens."""
        logits = self(batch.input_ids, batch.images, batch.has_image)
        mask = batch.loss_mask
        return F.cross_entropy(logits[mask], batch.labels[mask])

    # -- generation ------------------------------------------------------------
    @torch.no_grad()
    def generate(self, examples: Sequence[Example], max_new_tokens: int = 128) -> list[list[int]]:
        """Greedy replies to each example's prompt, as token ids without the final END.

        Prompts are left-padded *after* the image tokens, so the image block stays in fixed
        columns, every row's last prompt token is in the last column, and each decode step
        appends one column for all rows. Padding is masked out of every attention.
        """
        cfg = self.cfg
        prompts = [prompt_ids(ex.turns)[-cfg.max_text_len :] for ex in examples]
        b, n_img = len(prompts), cfg.n_image_tokens
        width = max(len(p) for p in prompts)
        max_new_tokens = min(max_new_tokens, cfg.max_text_len - width)
        ids = torch.full((b, width), PAD, dtype=torch.long)
        real = torch.zeros((b, width), dtype=torch.bool)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            real[i, width - len(p) :] = True
        lengths = real.sum(dim=1)
        positions = (real.cumsum(dim=1) - 1).clamp(min=0)
        images, has_image = image_tensor(examples, cfg)

        total = n_img + width + max_new_tokens
        keys_real = torch.ones((b, total), dtype=torch.bool)
        keys_real[:, n_img : n_img + width] = real
        hd = cfg.d_model // cfg.n_heads
        caches = [
            (torch.zeros(b, cfg.n_heads, total, hd), torch.zeros(b, cfg.n_heads, total, hd))
            for _ in self.blocks
        ]

        # prefill: causal over real keys; a pad query may see itself (no empty softmax rows)
        t0 = n_img + width
        causal = torch.ones(t0, t0, dtype=torch.bool).tril()
        mask = causal & (keys_real[:, None, :t0] | torch.eye(t0, dtype=torch.bool))
        x = torch.cat(
            [self.embed_images(images, has_image), self.token_emb(ids) + self.pos_emb(positions)],
            dim=1,
        )
        for block, cache in zip(self.blocks, caches, strict=True):
            x = block(x, mask[:, None], cache, 0)
        logits = self.head(self.norm(x[:, -1]))

        out = torch.full((b, max_new_tokens), END, dtype=torch.long)
        rows = torch.arange(b)  # the original row of each row still decoding
        done = torch.zeros(b, dtype=torch.bool)
        for step in range(max_new_tokens):
            token = torch.where(done, END, logits.argmax(dim=-1))
            out[rows, step] = token
            done |= token == END
            if bool(done.all()) or step + 1 == max_new_tokens:
                break
            if done.float().mean() > 0.25:  # drop finished rows, so they stop costing work
                keep = ~done
                rows, token, lengths, done = rows[keep], token[keep], lengths[keep], done[keep]
                keys_real = keys_real[keep]
                caches = [(k[keep], v[keep]) for k, v in caches]
            at = t0 + step
            pos = (lengths + step).clamp(max=cfg.max_text_len - 1)
            x = (self.token_emb(token) + self.pos_emb(pos))[:, None]
            step_mask = keys_real[:, None, None, : at + 1]
            for block, cache in zip(self.blocks, caches, strict=True):
                x = block(x, step_mask, cache, at)
            logits = self.head(self.norm(x[:, -1]))
        replies = []
        for row in out.tolist():
            replies.append(row[: row.index(END)] if END in row else row)
        return replies

    # -- persistence -----------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"kind": KIND, "config": self.cfg.to_dict()}
        (directory / "target.json").write_text(json.dumps(meta, indent=2) + "\n")
        torch.save(self.state_dict(), directory / "model.pt")

    @classmethod
    def load(cls, directory: Path) -> TargetModel:
        directory = Path(directory)
        meta = json.loads((directory / "target.json").read_text())
        if meta.get("kind") != KIND:
            raise ValueError(f"{directory}: kind {meta.get('kind')!r} is not {KIND!r}")
        model = cls(TargetConfig(**meta["config"]))
        model.load_state_dict(torch.load(directory / "model.pt", weights_only=True))
        model.eval()
        return model


def reply_text(ids: Sequence[int]) -> str:
    """Generated ids as text; special tokens (never valid in a reply) are dropped."""
    return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")
