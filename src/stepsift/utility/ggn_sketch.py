"""The Gauss-Newton matrix of the anchor loss as a few vectors: Σ_j (s_j · δ)² ≈ δᵀ G δ
(how it is drawn and truncated: utility/curvature.py's docstring).

With `streaming`, the vectors never all exist at once: they pass through a frequent-
directions buffer (Liberty 2013). When it reaches 4 * rank rows it is shrunk to its top
2 * rank directions, each eigenvalue of BᵀB lowered by the first one dropped. Each shrink
removes at least 2 * rank + 1 times what it subtracts, so with the final cut to `rank`
directions every quadratic form is understated, never overstated, by at most
‖S‖_F² ‖δ‖² (1/(2r+1) + 1/(r+1)); far less when the spectrum decays. Set-up memory is
(4 * rank + chunk) parameter-sized vectors, whatever the anchor count and label draws.

The label draws are the set-up's cost: `label_draws` per-sample gradients per anchor. One
pass of them can feed several sketches (`empty`, `add`, `finish`): the whole anchor set's
and each anchor view's (utility/view_curvature.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from stepsift.proxy.base import Batch, Params, Proxy
from stepsift.utility.gradients import per_sample_grads

# Set-up only: more draws, less sketch noise, same cost per candidate. On the built-in
# proxy, 300 candidates of an image task it was not built on, 100 anchors, the ranking
# agreed with exact as well at 1-16 draws (ρ 0.94-0.96, two seeds each) and the folds' a
# little less at 4 than at 16 (0.80 against 0.83); on a 3,000-candidate pool of the same
# task 16 ranked better (mean ρ 0.877 against 0.851, five seeds) at 6x the set-up
# (benchmarks/label_draws.py, benchmarks/RESULTS.md). 4 is the cost side of that trade.
DEFAULT_LABEL_DRAWS = 4
DEFAULT_MAX_BYTES = 1 << 30  # memory the sketch may take
DEFAULT_RANK = 64
# Hashed into b buckets with random signs, the sketch's quadratic form has a relative
# standard deviation of about sqrt(2 / b) (each bucket's square carries the cross terms of
# the vectors it sums): 50% at 8 buckets, 140% at one. Under 8 (a full-parameter HF proxy
# in the default 1 GiB: one 0.5 GB vector) the term is noise that outweighs the signal
# (SmolLM2 at full parameters, SGD 1e-2: ρ 0.14 against exact with it, 0.91 without), so
# it is left out and the estimate is first order; `dropped` says why.
MIN_BUCKETS = 8


def label_probabilities(proxy: Proxy, params: Params, tensors: dict[str, Tensor]) -> Tensor:
    """The model's next-token distribution at each supervised position, (n_supervised,
    vocab): what labels are drawn from (the other positions' labels are never used)."""
    with torch.no_grad():
        return proxy.supervised_logits(params, tensors).float().softmax(dim=-1)


def with_sampled_labels(
    tensors: dict[str, Tensor], probs: Tensor, generator: torch.Generator
) -> dict[str, Tensor]:
    """The batch with its supervised labels drawn from `probs` (label_probabilities)."""
    draws = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1)
    labels = tensors["labels"].clone()
    labels[tensors["loss_mask"]] = draws.to(labels.device, labels.dtype)
    out = dict(tensors)
    out["labels"] = labels
    return out


def label_draw_gradients(
    proxy: Proxy,
    anchors: Batch,
    params: Params,
    label_draws: int,
    generator: torch.Generator,
    chunk: int = 32,
    on_step: Callable[[], None] = lambda: None,
) -> Iterator[tuple[Params, slice]]:
    """Each chunk of anchors' sampled-label gradients, `label_draws` times, with the
    anchors they belong to. The model's predictions are computed once per chunk, not once
    per draw: every draw samples from the same distribution."""
    for s in range(0, len(anchors), chunk):
        rows = slice(s, min(s + chunk, len(anchors)))
        part = anchors.select(rows).tensors
        probs = label_probabilities(proxy, params, part)
        for _ in range(label_draws):
            tensors = with_sampled_labels(part, probs, generator)
            with torch.no_grad():
                grads, _ = per_sample_grads(proxy, params, tensors)
            yield grads, rows
            on_step()


def vector_bytes(params: Params) -> int:
    """The bytes of one parameter-sized vector (a gradient, a sketch direction)."""
    return sum(p.numel() * p.element_size() for p in params.values())


def draw_weights(anchors: Batch, label_draws: int) -> Tensor:
    """sqrt(T_a / K) per anchor: a sketch of anchors A_v weighs anchor a's draws by this
    over sqrt(|A_v|), so that E[Σ_j s_j s_jᵀ] is the mean of the anchors' G_a."""
    tokens = anchors.tensors["loss_mask"].sum(dim=1).to(torch.float64)
    return (tokens / label_draws).sqrt()


class GGNSketch:
    """Vectors s_j (one tensor per parameter, leading dim = sketch size) with
    Σ_j (s_j · δ)² ≈ δᵀ G_A δ.

    Built from its own draws (`GGNSketch(proxy, anchors, params, ...)`), or fed draws
    that are shared with other sketches (`GGNSketch.empty`, then `add` and `finish`):
    one pass over the anchors then builds the whole set's sketch and every view's."""

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
        self._start(label_draws * len(anchors), params, label_draws, max_bytes, seed, rank,
                    streaming, scale)  # fmt: skip
        if self.size == 0 and not self.streamed:  # left out (`dropped`): nothing to draw
            self.finish()
            return
        weights = draw_weights(anchors, label_draws) / len(anchors) ** 0.5
        for grads, rows in label_draw_gradients(
            proxy, anchors, params, label_draws, self.generator, chunk
        ):
            self.add(grads, weights[rows])
        self.finish()

    @classmethod
    def empty(
        cls,
        n_vectors: int,
        params: Params,
        label_draws: int,
        max_bytes: int = DEFAULT_MAX_BYTES,
        seed: int = 0,
        rank: int | None = None,
        streaming: bool = False,
    ) -> GGNSketch:
        """A sketch of `n_vectors` weighted draws still to be `add`ed, then `finish`ed."""
        sketch = cls.__new__(cls)
        sketch._start(n_vectors, params, label_draws, max_bytes, seed, rank, streaming, None)
        return sketch

    def _start(self, n_vectors, params, label_draws, max_bytes, seed, rank, streaming, scale):
        self.scale, self.rank, self.label_draws = scale, rank, label_draws
        self.generator = torch.Generator().manual_seed(seed)  # label draws and hash buckets
        self.names = list(params)
        self.dtypes = {n: p.dtype for n, p in params.items()}
        self.shapes = {n: p.shape for n, p in params.items()}
        bytes_per_vector = vector_bytes(params)
        self.streamed = streaming and rank is not None and 2 * rank < n_vectors
        self.dropped = ""
        self.filled = 0  # vectors added so far
        if self.streamed:
            self.buffer: Tensor | None = None
            self.pending: list[Tensor] = []  # rows not yet in the buffer (one copy per shrink)
            self.total_trace, self.shrunk = 0.0, 0.0  # shrunk: Σ eigenvalue each shrink cut
            self.size, self.hashed = rank, False
            return
        self.size = min(n_vectors, max_bytes // bytes_per_vector)
        self.hashed = self.size < n_vectors
        if self.hashed and self.size < MIN_BUCKETS:
            self.dropped = (
                f"the Gauss-Newton sketch fits {self.size} vector(s) of "
                f"{bytes_per_vector / 2**20:.0f} MiB in {max_bytes / 2**20:.0f} MiB, under "
                f"{MIN_BUCKETS}: its quadratic term would be noise, so it is left out"
            )
            self.size, self.hashed = 0, False
        self.vectors = {n: p.new_zeros((self.size, *p.shape)) for n, p in params.items()}

    def add(self, grads: Params, weight: Tensor) -> None:
        """Take draws (one gradient per row of every tensor), each times its `weight`."""
        if self.scale is not None:
            grads = {n: g * self.scale[n] for n, g in grads.items()}
        if self.streamed:
            self._add_streamed(grads, weight)
        elif self.size:
            self._add(grads, weight, self.filled)
        self.filled += len(weight)

    def finish(self) -> GGNSketch:
        """Cut to the top `rank` directions; the draws' generator and buffer are let go."""
        if self.streamed:
            self._finish_streamed()
        elif self.size == 0:
            self.trace_kept = 0.0
        else:
            self.trace_kept = 1.0
            if self.rank is not None and self.rank < self.size:
                self._truncate(self.rank)
        del self.generator
        return self

    def _add_streamed(self, grads: Params, weight: Tensor) -> None:
        """Frequent directions: the buffer B (rows = directions) takes the weighted
        gradients; at twice 2 * rank rows it is shrunk back to its top 2 * rank directions
        (shrinking only when the buffer has doubled makes the shrinks few: each costs a
        pass over the buffer's parameter-sized rows)."""
        keep = 2 * self.rank
        flat = torch.cat([grads[n].reshape(len(weight), -1).double() for n in self.names], 1)
        flat = flat * weight.to(flat.device).unsqueeze(1)
        self.total_trace += float((flat**2).sum())
        self.pending.append(flat)
        held = sum(len(p) for p in self.pending) + (0 if self.buffer is None else len(self.buffer))
        if held >= 2 * keep:
            self.buffer = self._shrink(self._joined(), keep)

    def _joined(self) -> Tensor:
        """The buffer with the pending rows under it."""
        parts = ([] if self.buffer is None else [self.buffer]) + self.pending
        self.pending = []
        return torch.cat(parts)

    def _finish_streamed(self) -> None:
        rank, buffer = self.rank, self._joined()
        gram = buffer @ buffer.T
        eigvals, eigvecs = torch.linalg.eigh(gram)
        rank = min(rank, buffer.shape[0])
        top = eigvecs[:, -rank:]
        directions = top.T @ buffer
        self.trace_kept = float(eigvals[-rank:].clamp(min=0).sum()) / max(
            self.total_trace, 1e-300
        )
        self.size, self.hashed = rank, False
        self.vectors, start = {}, 0
        for n in self.names:
            size = self.shapes[n].numel()
            part = directions[:, start : start + size].to(self.dtypes[n])
            self.vectors[n] = part.reshape(rank, *self.shapes[n])
            start += size
        del self.buffer, self.pending

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

    def _add(self, grads: Params, weight: Tensor, first: int) -> None:
        n, gen = weight.shape[0], self.generator
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
