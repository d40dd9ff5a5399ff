"""The proxy interface: what the utility estimators need from any model family.

A proxy turns records into a `Batch` (tensors plus a loss mask over the assistant's
tokens), computes per-sample losses *functionally* (from an explicit parameter dict,
so `torch.func` can differentiate and vectorise over samples and parameter sets),
and says which parameters a simulated step may move.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from stepsift.data.record import Record

Params = dict[str, Tensor]


@dataclass
class Batch:
    """Collated records. Every tensor in `tensors` has the batch as its first dim."""

    ids: list[str]
    tensors: dict[str, Tensor]
    tokens: Tensor  # (B,) number of supervised tokens per sample, after truncation
    truncated: Tensor  # (B,) bool, whether the record was cut at the proxy's max length

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> Batch:
        moved = {k: v.to(device) for k, v in self.tensors.items()}
        return Batch(self.ids, moved, self.tokens, self.truncated)

    def select(self, index: slice) -> Batch:
        return Batch(
            self.ids[index],
            {k: v[index] for k, v in self.tensors.items()},
            self.tokens[index],
            self.truncated[index],
        )

    def take(self, rows: Sequence[int]) -> Batch:
        """The samples at `rows` (any order, any subset), e.g. one anchor view's."""
        index = torch.as_tensor(list(rows), dtype=torch.long)
        return Batch(
            [self.ids[i] for i in rows],
            {k: v[index.to(v.device)] for k, v in self.tensors.items()},
            self.tokens[index],
            self.truncated[index],
        )


class Proxy(ABC):
    """A model that stepsift can simulate optimizer steps on."""

    model: nn.Module
    # The Adam state left by the warm-up, keyed by parameter name:
    # {"exp_avg": Tensor, "exp_avg_sq": Tensor, "step": int}; empty when there is none.
    # Implementations set it in __init__ (never share a class-level dict).
    adam_state: dict[str, dict[str, Tensor | int]]
    # whether per-sample gradients may vmap over the batch (else a loop over samples)
    vmap_over_samples: bool = True
    # how per-sample gradients are taken (utility/gradients.py): "auto" (vmap where
    # allowed, else read off one batched backward where the layers allow, else a loop),
    # "read-off" (read off even where vmap works), "loop" (never read off)
    per_sample_mode: str = "auto"
    # how this proxy came to be (its warm-up: records, steps, losses), kept in its saved
    # folder so that a run from that folder still records where its proxy came from
    history: dict | None = None

    def origin(self) -> dict:
        """What the score file records of the proxy: its kind and source, and its history."""
        return {"kind": type(self).__name__, **({"history": self.history} if self.history else {})}

    def rows_are_samples(self, tensors: Mapping[str, Tensor]) -> bool:
        """Whether every layer sees this batch with its samples as the leading dim (so
        per-sample gradients can be read off the layers' calls)."""
        return True

    def token_rows(self, tensors: Mapping[str, Tensor]) -> tuple[tuple[nn.Module, ...], Tensor]:
        """The modules this proxy calls on the batch's supervised tokens flattened into
        rows (an output head applied to the picked positions only), and each row's sample;
        the layer read-off regroups those calls by sample. None by default."""
        return (), torch.zeros(0, dtype=torch.long)

    @abstractmethod
    def collate(self, records: Sequence[Record]) -> Batch:
        """Tokenise and pad records; the loss mask covers assistant tokens only."""

    @abstractmethod
    def token_logits(self, params: Mapping[str, Tensor], tensors: Mapping[str, Tensor]) -> Tensor:
        """Logits (B, T, vocab) aligned with `tensors["labels"]` and `tensors["loss_mask"]`,
        which every batch carries: the label each position predicts, and whether it is
        supervised. (The curvature estimator resamples the labels from these logits.)"""

    def supervised_logits(
        self, params: Mapping[str, Tensor], tensors: Mapping[str, Tensor]
    ) -> Tensor:
        """Logits at the supervised positions only, (n_supervised, vocab), in the row-major
        order of `tensors["loss_mask"]`: all the curvature's label draws need. A proxy with a
        large vocabulary computes only these rows (HFProxy), not B x T x vocab."""
        return self.token_logits(params, tensors)[tensors["loss_mask"]]

    @abstractmethod
    def per_sample_loss(
        self, params: Mapping[str, Tensor], tensors: Mapping[str, Tensor]
    ) -> Tensor:
        """Mean token loss over supervised tokens, one value per sample: shape (B,).

        `params` maps parameter names to tensors and may hold only some of the model's
        parameters; the rest are taken from the model as they are.
        """

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the proxy (weights, config, optimizer state if any) to a folder."""

    def trainable_parameter_names(self) -> list[str]:
        return [n for n, p in self.model.named_parameters() if p.requires_grad]

    def step_parameter_names(self) -> list[str]:
        """Names of the parameters a simulated step may move (default: all trainable)."""
        chosen = getattr(self, "_step_names", None)
        return list(chosen) if chosen is not None else self.trainable_parameter_names()

    def restrict_step(self, spec: str) -> list[str]:
        """Let simulated steps move only the parameters `spec` names (see
        `select_parameter_names`); returns those names."""
        self._step_names = select_parameter_names(self.trainable_parameter_names(), spec)
        return list(self._step_names)

    def step_parameters(self) -> Params:
        """Detached copies-by-reference of the parameters a step may move."""
        named = dict(self.model.named_parameters())
        return {n: named[n].detach() for n in self.step_parameter_names()}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def select_parameter_names(names: Sequence[str], spec: str) -> list[str]:
    """The names `spec` selects: "all"; "lora" (the LoRA adapters' own matrices); or a
    regular expression searched in each name (e.g. "head|blocks\\.1\\.")."""
    if spec == "all":
        return list(names)
    if spec == "lora":
        chosen = [n for n in names if "lora_" in n]
        if not chosen:
            raise ValueError(
                "--params lora: this proxy has no LoRA adapter parameters (names containing "
                "'lora_'); LoRA needs a Hugging Face proxy with adapters. Use 'all' or a regex"
            )
        return chosen
    try:
        pattern = re.compile(spec)
    except re.error as e:
        raise ValueError(f"--params {spec!r} is not a valid regular expression: {e}") from e
    chosen = [n for n in names if pattern.search(n)]
    if not chosen:
        sample = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise ValueError(f"--params {spec!r} matches no trainable parameter; names are: {sample}")
    return chosen
