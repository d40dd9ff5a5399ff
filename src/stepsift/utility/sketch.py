"""A seeded random projection of per-sample gradients to D dimensions (the `sketch`
column), with <s_i, s_j> an unbiased estimate of <g_i, g_j>.

The sketch is s = Σ_w P_w vec(g_w) over the step's parameter tensors w, with independent
zero-mean projections P_w and E[P_wᵀ P_w] = I, so E<s_i, s_j> = Σ_w <g_iw, g_jw>: the
cross terms between tensors vanish in expectation. No D x P matrix is ever formed:

* a small tensor (numel·D up to `dense_limit`) gets a dense Gaussian P_w, entries
  N(0, 1/D): the lowest variance;
* a larger one, seen as a matrix G (m x n: first dim x the rest; a vector folded
  near-square), gets a Kronecker
  projection vec(A G Bᵀ), with A (a x m) entries N(0, 1/a) and B (b x n) entries
  N(0, 1/b), a·b = D, independent: E[(A⊗B)ᵀ(A⊗B)] = E[AᵀA] ⊗ E[BᵀB] = I. It keeps
  a·m + b·n numbers instead of D·m·n (for D = 64, a = b = 8: a 4096 x 4096 weight
  needs 65k floats, not 1.07G), and costs about a·m·n multiply-adds per sample.

Memory is Σ_w min(numel_w·D, a·m_w + b·n_w) floats, float32: for a 100M-parameter
transformer at D = 64, a few tens of MB. Its variance is higher than a dense
projection's (Kronecker rows are not independent); benchmarks and tests measure
the agreement rather than assume it.

Every matrix is drawn on the CPU from a generator seeded by (seed, parameter name,
shape), so every process, shard and Ray worker draws the same sketch.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor

from stepsift.proxy.base import Params

DEFAULT_DIM = 64
DEFAULT_DENSE_LIMIT = 1 << 20  # numel·D at or below which a tensor gets a dense projection


def factor(dim: int) -> tuple[int, int]:
    """a·b = dim with a the largest divisor at or below sqrt(dim) (a = 1 for a prime)."""
    a = max(d for d in range(1, math.isqrt(dim) + 1) if dim % d == 0)
    return a, dim // a


def name_seed(seed: int, name: str, shape: tuple[int, ...]) -> int:
    digest = hashlib.sha256(f"{seed}|{name}|{tuple(shape)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def check_dim(dim: int) -> None:
    """The `--sketch-dim` setting: 0 (off) or a positive size."""
    if dim < 0:
        raise ValueError(f"--sketch-dim {dim}: must be 0 (off) or positive")


def gradient_sketch(params: Params, dim: int, seed: int) -> GradientSketch | None:
    """The sketch an estimator fills its `sketch` column with; None when `dim` is 0."""
    check_dim(dim)
    return GradientSketch(params, dim, seed) if dim else None


class GradientSketch:
    """Maps per-sample gradients (every tensor with a leading sample dim) to (B, D)."""

    def __init__(
        self,
        params: Params,
        dim: int = DEFAULT_DIM,
        seed: int = 0,
        dense_limit: int = DEFAULT_DENSE_LIMIT,
    ):
        if dim < 1:
            raise ValueError(f"--sketch-dim {dim}: must be positive (0 turns the sketch off)")
        self.dim, self.seed = dim, seed
        self.a, self.b = factor(dim)
        # name -> ("dense", R (D, numel)) or ("kron", A (a, m), B (b, n))
        self.maps: dict[str, tuple] = {}
        for name, p in params.items():
            gen = torch.Generator().manual_seed(name_seed(seed, name, tuple(p.shape)))
            numel = p.numel()
            if numel * dim <= dense_limit:
                r = torch.randn(dim, numel, generator=gen) / math.sqrt(dim)
                self.maps[name] = ("dense", r.to(p.device))
            else:  # a large vector is folded into a near-square matrix
                m = p.shape[0] if p.dim() >= 2 else factor(numel)[0]
                n = numel // m
                a = torch.randn(self.a, m, generator=gen) / math.sqrt(self.a)
                b = torch.randn(self.b, n, generator=gen) / math.sqrt(self.b)
                self.maps[name] = ("kron", a.to(p.device), b.to(p.device))

    @property
    def floats(self) -> int:
        """How many numbers the projection keeps (its memory is 4 bytes each)."""
        return sum(sum(t.numel() for t in entry[1:]) for entry in self.maps.values())

    def __call__(self, grads: Params) -> Tensor:
        """(B, D) float32 sketches of the per-sample gradients `grads`."""
        out = None
        for name, g in grads.items():
            kind, *mats = self.maps[name]
            dtype = torch.promote_types(g.dtype, torch.float32)  # never project in bf16
            n = g.shape[0]
            if kind == "dense":
                part = g.reshape(n, -1).to(dtype) @ mats[0].to(dtype).T
            else:
                a, b = (t.to(dtype) for t in mats)
                mat = g.reshape(n, a.shape[1], -1).to(dtype)
                part = (a @ mat @ b.T).reshape(n, -1)
            out = part if out is None else out + part.to(out.dtype)
        assert out is not None, "no step parameters to sketch"
        return out.float()

    def describe(self) -> dict:
        return {"sketch_dim": self.dim, "sketch_of": "gradient"}
