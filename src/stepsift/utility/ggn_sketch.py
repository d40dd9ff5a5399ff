"""The Gauss-Newton matrix of the anchor loss as a few vectors: Σ_j (s_j · δ)² ≈ δᵀ G δ
(how it is drawn and truncated: utility/curvature.py's docstring).

With `streaming`, the vectors never all exist at once: they pass through a frequent-
directions buffer (Liberty 2013) of `2 * rank` rows plus one chunk. When the buffer is full
it is shrunk to its top 2 * rank directions, each eigenvalue of BᵀB lowered by the first
one dropped. Each shrink removes at least 2 * rank + 1 times what it subtracts, so with the
final cut to `rank` directions every quadratic form is understated, never overstated, by
at most ‖S‖_F² ‖δ‖² (1/(2r+1) + 1/(r+1)); far less when the spectrum decays. Set-up memory
is (2 * rank + chunk) parameter-sized vectors, whatever the anchor count and label draws."""

from __future__ import annotations

import torch
from torch import Tensor

from stepsift.proxy.base import Batch, Params, Proxy
from stepsift.utility.gradients import per_sample_grads

DEFAULT_LABEL_DRAWS = 16  # set-up only: more draws, less sketch noise, same cost per candidate
DEFAULT_MAX_BYTES = 1 << 30  # memory the sketch may take
DEFAULT_RANK = 64
# Hashed into b buckets with random signs, the sketch's quadratic form has a relative
# standard deviation of about sqrt(2 / b) (each bucket's square carries the cross terms of
# the vectors it sums): 50% at 8 buckets, 140% at one. Under 8 (a full-parameter HF proxy
# in the default 1 GiB: one 0.5 GB vector) the term is noise that outweighs the signal
# (SmolLM2 at full parameters, SGD 1e-2: ρ 0.14 against exact with it, 0.91 without), so
# it is left out and the estimate is first order; `dropped` says why.
MIN_BUCKETS = 8


def sampled_label_tensors(
    proxy: Proxy, params: Params, tensors: dict[str, Tensor], generator: torch.Generator
) -> dict[str, Tensor]:
    """The batch with every supervised label replaced by a draw from the model itself."""
    with torch.no_grad():
        probs = proxy.token_logits(params, tensors).softmax(dim=-1)
    flat = probs.reshape(-1, probs.shape[-1]).float()
    draws = torch.multinomial(flat.cpu(), 1, generator=generator).reshape(probs.shape[:2])
    labels = tensors["labels"]
    out = dict(tensors)
    out["labels"] = torch.where(tensors["loss_mask"], draws.to(labels.device), labels)
    return out


class GGNSketch:
    """Vectors s_j (one tensor per parameter, leading dim = sketch size) with
    Σ_j (s_j · δ)² ≈ δᵀ G_A δ."""

    def __init__(
        self,
        proxy: Proxy,
        anchors: Batch,
        params: Params,
        label_draws: int = DEFAULT_LABEL_DRAWS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        seed: int = 0,
        chunk: int = 32,
        rank: int | None = None,
        streaming: bool = False,
        scale: Params | None = None,
    ):
        # `scale`: every vector multiplied by it (elementwise), for the sketch of D G_A D
        # with D diagonal (utility/forward_only.py: the linearised step's preconditioner)
        self.scale = scale
        n_params = sum(p.numel() for p in params.values())
        bytes_per_vector = n_params * next(iter(params.values())).element_size()
        n_vectors = label_draws * len(anchors)
        self.label_draws = label_draws
        gen = torch.Generator().manual_seed(seed)
        self.streamed = streaming and rank is not None and 2 * rank < n_vectors
        self.dropped = ""
        if self.streamed:
            self._stream(proxy, anchors, params, gen, chunk, rank)
            return
        self.size = min(n_vectors, max_bytes // bytes_per_vector)
        self.hashed = self.size < n_vectors
        if self.hashed and self.size < MIN_BUCKETS:
            self.dropped = (
                f"the Gauss-Newton sketch fits {self.size} vector(s) of "
                f"{bytes_per_vector / 2**20:.0f} MiB in {max_bytes / 2**20:.0f} MiB, under "
                f"{MIN_BUCKETS}: its quadratic term would be noise, so it is left out"
            )
            self.size, self.hashed, self.trace_kept = 0, False, 0.0
            self.vectors = {n: p.new_zeros((0, *p.shape)) for n, p in params.items()}
            return
        self.vectors = {n: p.new_zeros((self.size, *p.shape)) for n, p in params.items()}
        j = 0
        for grads, weight in self._weighted_draws(proxy, anchors, params, gen, chunk):
            self._add(grads, weight, j, gen)
            j += len(weight)
        self.trace_kept = 1.0
        if rank is not None and rank < self.size:
            self._truncate(rank)

    def _weighted_draws(self, proxy, anchors, params, gen, chunk):
        """Every chunk's sampled-label gradients and their weights sqrt(T_a / (|A| K))."""
        tokens = anchors.tensors["loss_mask"].sum(dim=1).to(torch.float64)
        for _ in range(self.label_draws):
            for s in range(0, len(anchors), chunk):
                part = anchors.select(slice(s, s + chunk))
                tensors = sampled_label_tensors(proxy, params, part.tensors, gen)
                with torch.no_grad():
                    grads, _ = per_sample_grads(proxy, params, tensors)
                if self.scale is not None:
                    grads = {n: g * self.scale[n] for n, g in grads.items()}
                yield grads, (tokens[s : s + chunk] / (len(anchors) * self.label_draws)).sqrt()

    def _stream(self, proxy, anchors, params, gen, chunk: int, rank: int) -> None:
        """Frequent directions: the buffer B (rows = directions) takes each chunk's weighted
        gradients; over 2 * rank rows it is shrunk back to its top rank directions."""
        keep = 2 * rank
        buffer: Tensor | None = None
        names = list(params)
        total_trace = 0.0
        self.shrunk = 0.0  # Σ of the eigenvalue each shrink subtracted
        for grads, weight in self._weighted_draws(proxy, anchors, params, gen, chunk):
            flat = torch.cat([grads[n].reshape(len(weight), -1).double() for n in names], 1)
            flat = flat * weight.to(flat.device).unsqueeze(1)
            total_trace += float((flat**2).sum())
            buffer = flat if buffer is None else torch.cat([buffer, flat])
            if buffer.shape[0] > keep:
                buffer = self._shrink(buffer, keep)
        assert buffer is not None
        gram = buffer @ buffer.T
        eigvals, eigvecs = torch.linalg.eigh(gram)
        top = eigvecs[:, -rank:]
        directions = top.T @ buffer
        self.trace_kept = float(eigvals[-rank:].clamp(min=0).sum()) / max(total_trace, 1e-300)
        self.size, self.hashed = rank, False
        self.vectors, start = {}, 0
        for n in names:
            size = params[n].numel()
            part = directions[:, start : start + size].to(params[n].dtype)
            self.vectors[n] = part.reshape(rank, *params[n].shape)
            start += size

    def _shrink(self, buffer: Tensor, keep: int) -> Tensor:
        """B -> its top `keep` directions, each eigenvalue of BᵀB lowered by the
        (keep+1)-th (the frequent-directions shrink), from the small Gram matrix B Bᵀ."""
        eigvals, eigvecs = torch.linalg.eigh(buffer @ buffer.T)  # ascending
        lam = eigvals.clamp(min=0)
        floor = float(lam[-keep - 1]) if len(lam) > keep else 0.0
        self.shrunk += floor
        top_vals, top_vecs = lam[-keep:], eigvecs[:, -keep:]
        # rows sqrt(λ - floor) v_iᵀ with v_i = B ᵀu_i / sqrt(λ_i): scale u_iᵀ B
        scale = ((top_vals - floor).clamp(min=0) / top_vals.clamp(min=1e-300)).sqrt()
        return (top_vecs * scale).T @ buffer

    @classmethod
    def from_state(cls, state: dict, device) -> GGNSketch:
        """The sketch another worker built (`export`), without recomputing it."""
        sketch = cls.__new__(cls)
        sketch.vectors = {n: v.to(device) for n, v in state["vectors"].items()}
        sketch.size, sketch.hashed = int(state["size"]), bool(state["hashed"])
        sketch.label_draws = int(state["label_draws"])
        sketch.trace_kept = float(state["trace_kept"])
        sketch.dropped = str(state.get("dropped", ""))
        return sketch

    def export(self) -> dict:
        return {
            "vectors": self.vectors,
            "size": self.size,
            "hashed": self.hashed,
            "label_draws": self.label_draws,
            "trace_kept": self.trace_kept,
            "dropped": self.dropped,
        }

    def _truncate(self, rank: int) -> None:
        """Keep the top `rank` directions of Sᵀ S: W = U_rᵀ S from S Sᵀ = U Λ Uᵀ."""
        gram = None
        for v in self.vectors.values():
            flat = v.reshape(self.size, -1).double()
            gram = flat @ flat.T if gram is None else gram + flat @ flat.T
        eigvals, eigvecs = torch.linalg.eigh(gram)  # ascending
        top = eigvecs[:, -rank:]
        self.trace_kept = float(eigvals[-rank:].clamp(min=0).sum() / eigvals.clamp(min=0).sum())
        self.vectors = {
            n: (top.T.to(v.dtype) @ v.reshape(self.size, -1)).reshape(rank, *v.shape[1:])
            for n, v in self.vectors.items()
        }
        self.size = rank

    def _add(self, grads: Params, weight: Tensor, first: int, gen: torch.Generator) -> None:
        n = weight.shape[0]
        if self.hashed:  # bucket and sign per vector: E[(Σ ±s·δ)²] = Σ (s·δ)²
            bucket = torch.randint(0, self.size, (n,), generator=gen)
            sign = torch.randint(0, 2, (n,), generator=gen).to(torch.float64) * 2 - 1
        else:
            bucket = torch.arange(first, first + n)
            sign = torch.ones(n, dtype=torch.float64)
        for name, g in grads.items():
            w = (weight * sign).to(g.device, g.dtype).reshape(-1, *([1] * (g.dim() - 1)))
            self.vectors[name].index_add_(0, bucket.to(g.device), g * w)

    def quadratic(self, deltas: Params) -> Tensor:
        """δ_iᵀ G_A δ_i for every sample i of per-sample updates `deltas`: shape (B,)."""
        if self.size == 0:  # left out (`dropped`)
            first = next(iter(deltas.values()))
            return torch.zeros(first.shape[0], dtype=torch.float64, device=first.device)
        proj = None
        for name, d in deltas.items():
            part = d.reshape(d.shape[0], -1) @ self.vectors[name].reshape(self.size, -1).T
            proj = part.double() if proj is None else proj + part.double()
        return (proj**2).sum(dim=1)
