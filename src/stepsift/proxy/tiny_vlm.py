"""The built-in proxy network: a tiny vision-language transformer.

A small conv stem turns a 32x32 RGB image into 16 image tokens; byte-level text
tokens follow; a causal transformer predicts the next byte. Attention is written
out by hand (no fused SDPA kernel) so that every `torch.func` transform, forward-mode
AD included, works on it. About 200k parameters: it trains from scratch on a laptop CPU
in a minute.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class TinyVLMConfig:
    vocab_size: int = 262  # 256 bytes + 6 special tokens (see byte_tokenizer.py)
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    mlp_ratio: int = 4
    max_len: int = 320  # image tokens + text tokens
    image_size: int = 32
    image_channels: int = 3

    @property
    def n_image_tokens(self) -> int:
        # three stride-2, padding-1 convolutions: each maps n to ceil(n / 2); 32 -> 4
        side = self.image_size
        for _ in range(3):
            side = (side + 1) // 2
        return side * side

    def to_dict(self) -> dict:
        return asdict(self)


class ImageEncoder(nn.Module):
    def __init__(self, cfg: TinyVLMConfig):
        super().__init__()
        d = cfg.d_model
        self.conv1 = nn.Conv2d(cfg.image_channels, 32, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(32, d, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(d, d, 3, stride=2, padding=1)

    def forward(self, images: Tensor) -> Tensor:  # (B, C, H, W) -> (B, N, d)
        x = F.gelu(self.conv1(images))
        x = F.gelu(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TinyVLMConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(x).split(d, dim=2)
        q = q.view(b, t, h, d // h).transpose(1, 2)
        k = k.view(b, t, h, d // h).transpose(1, 2)
        v = v.view(b, t, h, d // h).transpose(1, 2)
        # scale q, not the (t x t) scores: the same result for a fraction of the work
        scores = (q * (1.0 / math.sqrt(d // h))) @ k.transpose(-2, -1)
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
        y = scores.softmax(dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, cfg: TinyVLMConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model)
        self.out = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyVLM(nn.Module):
    """Image tokens, then text tokens, through a causal transformer."""

    def __init__(self, cfg: TinyVLMConfig):
        super().__init__()
        self.cfg = cfg
        self.image_encoder = ImageEncoder(cfg)
        self.token_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(self, input_ids: Tensor, images: Tensor, has_image: Tensor) -> Tensor:
        """Logits over the text positions only: (B, T_text, vocab)."""
        img = self.image_encoder(images) * has_image.to(images.dtype)[:, None, None]
        x = torch.cat([img, self.token_emb(input_ids)], dim=1)
        # through the module, one row per sample: per-sample gradients are read off its
        # calls (utility/layer_taps.py); the values are those of weight[:t]
        positions = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        x = x + self.pos_emb(positions)
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x[:, img.shape[1] :])
        return self.head(x)
