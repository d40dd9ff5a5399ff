"""Views of the anchor set: K disjoint folds and the groups a field of the records names.

A candidate's utility towards a view (a fold, a group) is the mean over that view's
anchors of l_a(θ) - l_a(θ + step). Estimators that produce one value per anchor turn
them into per-view values with one matrix product, `per_anchor @ views.weights`, whose
columns are the folds then the groups, each holding 1/n_view on its own anchors.

Folds (used by selection to judge the estimate's noise, select/reliability.py): the
anchors are permuted by a generator seeded with the run's seed, and the anchor at
permuted position p goes to fold p % K, so fold sizes differ by at most one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from stepsift.data.reader import DataValidationError
from stepsift.data.record import Problem, Record

DEFAULT_FOLDS = 10
DEFAULT_GROUP_FIELD = "group"


@dataclass(frozen=True)
class AnchorViews:
    n_anchors: int
    n_folds: int  # K; 0 when folds are off
    fold_of: tuple[int, ...]  # fold index of each anchor, in the anchors' order (or empty)
    group_of: tuple[int, ...] | None  # group index of each anchor; None: no groups
    groups: tuple[str, ...] = ()  # group names, sorted

    @property
    def fold_sizes(self) -> list[int]:
        return [self.fold_of.count(k) for k in range(self.n_folds)]

    @property
    def group_sizes(self) -> list[int]:
        if self.group_of is None:
            return []
        return [self.group_of.count(g) for g in range(len(self.groups))]

    @property
    def n_views(self) -> int:
        return self.n_folds + len(self.groups)

    @property
    def empty(self) -> bool:
        return self.n_views == 0

    @property
    def columns(self) -> set[str]:
        """The optional score columns these views fill."""
        out = {"fold_utility"} if self.n_folds else set()
        return out | ({"group_utility"} if self.group_of is not None else set())

    def weights(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """(n_anchors, K + G): per_anchor @ weights gives each view's mean."""
        w = torch.zeros(self.n_anchors, self.n_views, dtype=dtype)
        sizes = self.fold_sizes
        for a, k in enumerate(self.fold_of):
            w[a, k] = 1.0 / sizes[k]
        if self.group_of is not None:
            gsizes = self.group_sizes
            for a, g in enumerate(self.group_of):
                w[a, self.n_folds + g] = 1.0 / gsizes[g]
        return w.to(device) if device is not None else w

    def members(self) -> list[list[int]]:
        """The anchors of each view, folds then groups (the columns' order)."""
        out: list[list[int]] = [[] for _ in range(self.n_views)]
        for a, k in enumerate(self.fold_of):
            out[k].append(a)
        if self.group_of is not None:
            for a, g in enumerate(self.group_of):
                out[self.n_folds + g].append(a)
        return out

    def split(self, per_view: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """(B, K + G) -> (fold values (B, K) or None, group values (B, G) or None)."""
        folds = per_view[:, : self.n_folds] if self.n_folds else None
        groups = per_view[:, self.n_folds :] if self.group_of is not None else None
        return folds, groups


def active(views: AnchorViews | None) -> AnchorViews | None:
    """`views` when they hold a fold or a group, else None (the estimator skips them)."""
    return views if views is not None and not views.empty else None


def columns_made(views: AnchorViews | None, sketch: object | None) -> frozenset[str]:
    """The optional score columns an estimator with these views and sketch fills."""
    return frozenset((views.columns if views else set()) | ({"sketch"} if sketch else set()))


def fold_assignment(n_anchors: int, n_folds: int, seed: int) -> tuple[tuple[int, ...], int]:
    """(fold of each anchor, K actually used): K capped at the number of anchors."""
    if n_folds < 0:
        raise ValueError(f"--anchor-folds {n_folds}: must be 0 (off) or a positive count")
    k = min(n_folds, n_anchors)
    if k == 0:
        return (), 0
    perm = torch.randperm(n_anchors, generator=torch.Generator().manual_seed(seed))
    fold_of = [0] * n_anchors
    for position, anchor in enumerate(perm.tolist()):
        fold_of[anchor] = position % k
    return tuple(fold_of), k


_MISSING = object()


def field_value(metadata: dict, field: str) -> object:
    """`metadata[field]`, or, for a dotted name not itself a key ("meta.task"), the
    nested value; `_MISSING` when there is none."""
    if field in metadata:
        return metadata[field]
    value: object = metadata
    for key in field.split(".") if "." in field else [field]:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def group_labels(records: Sequence[Record], field: str) -> list[str] | None:
    """Each anchor's group name from `Record.metadata[field]` (a dotted name reaches into
    nested objects); None when no anchor has the field. Missing on some anchors, null, or
    not a string/number is an error naming each offending file:line."""
    if not field:
        return None
    values = [field_value(r.metadata, field) for r in records]
    if all(v is _MISSING for v in values):
        return None
    problems, labels = [], []
    for record, value in zip(records, values, strict=True):
        has = value is not _MISSING
        message = None
        if not has:
            message = f"anchor has no '{field}' while other anchors do; give every anchor one"
        elif isinstance(value, bool) or not isinstance(value, str | int | float):
            kind = "null" if value is None else type(value).__name__
            message = f"the group must be a string or a number, not {kind}"
        elif isinstance(value, float) and not math.isfinite(value):
            message = f"the group must be a finite number, not {value}"
        elif isinstance(value, str) and not value.strip():
            message = "the group is an empty string"
        if message:
            problems.append(
                Problem(record.source.file, record.source.line, field, message, record.id)
            )
        else:
            labels.append(str(value))
    if problems:
        raise DataValidationError(problems)
    return labels


def build_views(
    records: Sequence[Record],
    n_folds: int = DEFAULT_FOLDS,
    group_field: str = DEFAULT_GROUP_FIELD,
    seed: int = 0,
    labels: Sequence[str] | None = None,
) -> AnchorViews:
    """Folds, and groups from `labels` (found groups, one name per anchor) when given,
    else from the records' `group_field`."""
    fold_of, k = fold_assignment(len(records), n_folds, seed)
    if labels is None:
        labels = group_labels(records, group_field)
    elif len(labels) != len(records):
        raise ValueError(f"{len(labels)} group labels for {len(records)} anchors")
    if labels is None:
        return AnchorViews(len(records), k, fold_of, None)
    names = tuple(sorted(set(labels)))
    index = {name: g for g, name in enumerate(names)}
    return AnchorViews(len(records), k, fold_of, tuple(index[x] for x in labels), names)
