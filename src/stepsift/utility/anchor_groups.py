"""Anchor groups found from what the proxy sees, for anchors that carry no group field.

Coverage selection (select/coverage.py) fills the budget group by group so that no part
of the anchors' task starves. A user's anchors rarely name their groups, so this module
finds them: two anchors belong together when the same candidates help them.

The profile. For a probe of P candidates drawn at random from the pool, anchor a's
profile is p_a[i] = -<g_a, b_i>: the first-order drop of anchor a's own loss under
candidate i's own part of the simulated update (b_i = δ_i - c, δ_i the run's step rule
applied to the candidate's gradient, c the update every candidate shares), with g_a the
anchor's gradient where the fast estimators expand (θ + c). Each profile is centred over
the probe and scaled to unit length, so that what counts is *which* candidates help an
anchor, not how large its gradient is. The anchors are clustered by k-means on these unit
profiles (spherical k-means: Euclidean distance on unit vectors is a cosine distance).

How many groups (set by reasoning before any training result; the probe size and the choice
of the largest stable k were settled on the bench's stability figures, see below):
  * at least MIN_GROUP anchors or 5% of them per group, whichever is more, and at most
    MAX_GROUPS groups;
  * a k is *stable* when each of its k groups (on the whole probe) reappears when the
    anchors are clustered on disjoint random halves of the probe: its mean best-match
    Jaccard index over the 2 x SPLITS half-probe partitions is ≥ STABILITY (Hennig 2007's
    clusterwise stability; 0.75 is his threshold for a stable cluster). Every group, not
    the partition as a whole: an index of the whole partition (adjusted Rand) stays high
    when one real group is split in two at random, since the other groups still agree;
  * the largest k from 2 up that is stable and whose clustering on the whole probe meets
    the size floor is used; when none is, there are no groups (the plain ranking by the
    summed utility), since an unstable partition is noise, not structure.
The largest stable k rather than the most stable one: k = 2 is nearly always the most
stable (one distinct kind of anchor against the rest splits the same way on any probe),
which would hide every finer structure; and a stable split that does not matter costs
little, since groups served by the same candidates rank them alike, so their quotas pick
much the same records as the plain top-k would. (Both rules are measured side by side in
benchmarks/RESULTS.md.)

The probe is PROBE candidates (the whole pool when smaller): a profile is a correlation
over the probe, whose noise falls as 1/sqrt(P); at 256 candidates the bench's anchors held
no split finer than 3 at stability 0.8, at 1024 six. Its per-sample gradients cost about
what scoring the same candidates costs.

The product <g_a, b_i> is taken on the full gradients when the anchors' gradients fit in
`max_bytes`, else on seeded random projections of both (utility/sketch.py, D = SKETCH_DIM),
whose inner products are unbiased estimates of the full ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from sklearn.cluster import KMeans

from stepsift.proxy.base import Batch, Params, Proxy
from stepsift.utility.gradients import per_sample_grads
from stepsift.utility.sketch import GradientSketch
from stepsift.utility.steps import StepRule, shared_step

GROUP_MODES = ("auto", "field", "off")
DEFAULT_GROUP_MODE = "auto"

PROBE = 1024  # candidates whose steps define the anchors' profiles
MIN_GROUP = 4  # anchors in the smallest group (or 5% of the anchors, if more)
MAX_GROUPS = 8
STABILITY = 0.75  # each group's mean best-match Jaccard index on probe halves (Hennig)
SPLITS = 10
SKETCH_DIM = 4096
MAX_BYTES = 1 << 30
K_MEANS_RESTARTS = 10


@dataclass(frozen=True)
class FoundGroups:
    """The groups found for the anchors (or why none were), as the score file records it."""

    labels: tuple[str, ...] | None  # each anchor's group name; None: no groups
    stability: dict[int, float]  # k -> its least stable group's mean best-match Jaccard
    smallest: dict[int, int]  # k -> size of the smallest group on the whole probe
    min_size: int
    probe: int  # candidates in the probe
    products: str  # "full gradients" or "sketch D=..."
    members: dict[str, list[str]] = field(default_factory=dict)  # group -> its anchors' ids
    reason: str = ""  # why there are no groups, when there are none

    @property
    def examples(self) -> dict[str, str]:
        """An anchor id of each group (its first)."""
        return {name: ids[0] for name, ids in self.members.items()}

    @property
    def k(self) -> int:
        return len(set(self.labels)) if self.labels else 0

    def describe(self) -> dict:
        out = asdict(self)
        out.pop("labels")
        out["stability"] = {str(k): round(v, 4) for k, v in self.stability.items()}
        out["smallest"] = {str(k): v for k, v in self.smallest.items()}
        out |= {"k": self.k, "rule": rule_text(), "examples": self.examples}
        return out

    @classmethod
    def from_dict(cls, data: dict) -> FoundGroups:
        labels = data.get("labels")
        return cls(
            labels=tuple(labels) if labels is not None else None,
            stability={int(k): float(v) for k, v in data["stability"].items()},
            smallest={int(k): int(v) for k, v in data["smallest"].items()},
            min_size=int(data["min_size"]),
            probe=int(data["probe"]),
            products=str(data["products"]),
            members={k: list(v) for k, v in data.get("members", {}).items()},
            reason=str(data.get("reason", "")),
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "labels": list(self.labels) if self.labels else None}


def rule_text() -> str:
    return (
        f"the largest k in 2..{MAX_GROUPS} whose k-means partition of the anchors' step "
        f"profiles over {PROBE} probe candidates is stable (every group's mean best-match "
        f"Jaccard >= {STABILITY} over {SPLITS} splits of the probe into halves) and has no "
        f"group under max({MIN_GROUP}, "
        "5% of the anchors); none: no groups"
    )


def min_group_size(n_anchors: int) -> int:
    return max(MIN_GROUP, math.ceil(0.05 * n_anchors))


def group_name(g: int) -> str:
    return f"found-{g + 1}"


def check_group_mode(mode: str) -> None:
    if mode not in GROUP_MODES:
        raise ValueError(f"--anchor-groups {mode!r}: choose one of {', '.join(GROUP_MODES)}")


def anchor_profiles(
    proxy: Proxy,
    anchors: Batch,
    probe_batches: Iterable[Batch],
    step_rule: StepRule,
    chunk: int = 16,
    max_bytes: int = MAX_BYTES,
) -> tuple[np.ndarray, str]:
    """(n_anchors, P) first-order drops -<g_a, b_i> of each anchor's loss for each probe
    candidate, and how the products were taken."""
    params = proxy.step_parameters()
    shared = shared_step(step_rule, params)
    center = {n: p + shared[n] for n, p in params.items()}
    numel = sum(p.numel() for p in params.values())
    project: Callable[[Params], torch.Tensor]
    if len(anchors) * numel * 4 <= max_bytes:
        how = "full gradients"

        def project(grads: Params) -> torch.Tensor:
            n = next(iter(grads.values())).shape[0]
            return torch.cat([g.reshape(n, -1).float() for g in grads.values()], dim=1)
    else:
        how = f"sketch D={SKETCH_DIM}"
        project = GradientSketch(params, SKETCH_DIM, seed=0)
    with torch.no_grad():
        rows = []
        for s in range(0, len(anchors), chunk):
            part = anchors.select(slice(s, s + chunk))
            grads, _ = per_sample_grads(proxy, center, part.tensors)
            rows.append(project(grads))
        anchor_rows = torch.cat(rows)
        columns = []
        for batch in probe_batches:
            grads, _ = per_sample_grads(proxy, params, batch.tensors)
            own = {n: d - shared[n] for n, d in step_rule(grads).items()}
            columns.append(-(anchor_rows @ project(own).T))
    return torch.cat(columns, dim=1).double().cpu().numpy(), how


def unit_profiles(profiles: np.ndarray) -> np.ndarray:
    """Each anchor's profile centred over the probe and scaled to unit length (a constant
    profile, which no candidate moves differently, stays zero)."""
    centred = profiles - profiles.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return np.divide(centred, norms, out=np.zeros_like(centred), where=norms > 0)


def partition(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means labels of the rows of `x` (unit rows: a spherical k-means)."""
    fit = KMeans(n_clusters=k, n_init=K_MEANS_RESTARTS, random_state=seed).fit(x)
    return fit.labels_


def jaccard_stability(profiles: np.ndarray, labels: np.ndarray, k: int, seed: int) -> float:
    """The stability of the least stable of the k groups in `labels` (the partition on the
    whole probe): each group's mean best-match Jaccard index with the groups of partitions
    made on disjoint random halves of the probe (2 x SPLITS partitions); the minimum over
    the groups (Hennig 2007's clusterwise stability, his 0.75 for a stable cluster)."""
    rng = np.random.default_rng(seed)
    n_probe = profiles.shape[1]
    members = [labels == c for c in range(k)]
    best = np.zeros((2 * SPLITS, k))
    for split in range(SPLITS):
        order = rng.permutation(n_probe)
        for h, half in enumerate((order[: n_probe // 2], order[n_probe // 2 :])):
            other = partition(unit_profiles(profiles[:, half]), k, seed + split)
            for c, mine in enumerate(members):
                best[2 * split + h, c] = max(
                    (mine & (other == j)).sum() / (mine | (other == j)).sum() for j in range(k)
                )
    return float(best.mean(axis=0).min())


def choose_groups(profiles: np.ndarray, anchor_ids: Sequence[str], seed: int = 0) -> FoundGroups:
    """The groups the rule above picks from the anchors' profiles (n_anchors, P)."""
    n_anchors, n_probe = profiles.shape
    floor = min_group_size(n_anchors)
    common = {"min_size": floor, "probe": n_probe, "products": ""}
    k_max = min(MAX_GROUPS, n_anchors // floor)
    if k_max < 2 or n_probe < 8:
        reason = (
            f"{n_anchors} anchors are too few for 2 groups of {floor}"
            if k_max < 2
            else f"a probe of {n_probe} candidates is too small to judge stability"
        )
        return FoundGroups(None, {}, {}, **common, reason=reason)
    unit = unit_profiles(profiles)
    stable: dict[int, float] = {}
    smallest: dict[int, int] = {}
    best: tuple[int, np.ndarray] | None = None
    for k in range(2, k_max + 1):
        labels = partition(unit, k, seed)
        smallest[k] = int(np.bincount(labels, minlength=k).min())
        stable[k] = jaccard_stability(profiles, labels, k, seed)
        if stable[k] >= STABILITY and smallest[k] >= floor:
            best = (k, labels)
    if best is None:
        return FoundGroups(
            None, stable, smallest, **common,
            reason="no k from 2 up gave a stable partition with every group at the size floor",
        )  # fmt: skip
    k, labels = best
    # groups numbered by first appearance in the anchors' order, so names do not depend on
    # k-means' arbitrary cluster numbers
    order = {c: g for g, c in enumerate(dict.fromkeys(labels.tolist()))}
    names = tuple(group_name(order[c]) for c in labels.tolist())
    members: dict[str, list[str]] = {}
    for anchor_id, name in zip(anchor_ids, names, strict=True):
        members.setdefault(name, []).append(str(anchor_id))
    return FoundGroups(names, stable, smallest, **common, members=dict(sorted(members.items())))


def find_anchor_groups(
    proxy: Proxy,
    anchors: Batch,
    anchor_ids: Sequence[str],
    probe_batches: Iterable[Batch],
    step_rule: StepRule,
    seed: int = 0,
) -> FoundGroups:
    """Profile the anchors against the probe candidates' steps and pick groups by the rule."""
    profiles, how = anchor_profiles(proxy, anchors, probe_batches, step_rule)
    return replace(choose_groups(profiles, anchor_ids, seed), products=how)
