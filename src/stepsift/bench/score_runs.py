"""The bench's score runs, each through the public `stepsift score`: OST's, LESS's, and the
exact audit of OST's estimator.

    ost     the pool scored with the bench's estimator (`curvature` by default), the proxy
            started from its pre-trained checkpoint (or from scratch) and warmed up on 5%
            of the pool; the warmed-up proxy is saved beside the scores
    less    the pool scored with `--method less` (LESS's Adam-aware cosine to the anchors'
            gradients), a run of its own with the same start and warm-up recipe
    audit   what the OST run's score file records of its self-audit (a seeded random
            sample scored again with `exact`, engine/audit.py): Spearman's rho and the
            top-20% overlap of the estimator against the method's definition, printed in
            results.md

Each run's summary is cached as JSON beside its scores, so a rerun reads it back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from stepsift.data.atomic import atomic_write_text
from stepsift.engine.scoring import score
from stepsift.engine.settings import ScoreSettings
from stepsift.engine.store import read_settings
from stepsift.proxy.loading import load_saved_proxy
from stepsift.proxy.warmup import WarmupSettings


@dataclass(frozen=True)
class ScoreRecipe:
    """What every score run of one bench level shares."""

    pool: Path
    anchors: Path
    folder: Path  # the level's folder: scores and proxies are written here
    warmup: WarmupSettings
    proxy_init: Path | None  # the pre-trained proxy checkpoint; None: from scratch
    seed: int
    progress: bool
    # the anchors' group field the score runs read; '' hides it, so `score` finds groups
    anchor_group_field: str = "group"


@dataclass(frozen=True)
class ScoreCost:
    score_seconds: float  # the whole run, warm-up included
    warmup_seconds: float
    anchor_loss: float  # the anchors' loss on the warmed-up proxy, before any step


def cached_json(path: Path, make: Callable[[], dict]) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    value = make()
    atomic_write_text(path, json.dumps(value, indent=1) + "\n")
    return value


def _score_cost(recipe: ScoreRecipe, out: Path, settings: ScoreSettings) -> ScoreCost:
    def run() -> dict:
        summary = score(recipe.pool, recipe.anchors, out, settings)
        warm = summary.warmup.seconds if summary.warmup is not None else 0.0
        return {
            "score_seconds": summary.seconds,
            "warmup_seconds": warm,
            "anchor_loss": summary.base_anchor_loss,
        }

    cost = cached_json(out.with_suffix(".cost.json"), run)
    return ScoreCost(cost["score_seconds"], cost["warmup_seconds"], cost.get("anchor_loss", 0.0))


def _pool_scores(recipe: ScoreRecipe, name: str, proxy_dir: str, **method) -> ScoreCost:
    """A score run over the whole pool from the recipe's start and warm-up; `method` holds
    the estimator's settings."""
    settings = ScoreSettings(
        seed=recipe.seed,
        warmup=recipe.warmup,
        proxy_init=recipe.proxy_init,
        progress=recipe.progress,
        save_proxy=recipe.folder / proxy_dir,
        anchor_group_field=recipe.anchor_group_field,
        **method,
    )
    return _score_cost(recipe, recipe.folder / name, settings)


def ost_scores(recipe: ScoreRecipe, estimator: str, audit_n: int) -> ScoreCost:
    """`folder/scores.parquet`, and the warmed-up proxy in `folder/proxy`; a fast estimator
    also scores `audit_n` random candidates exactly (its score file's audit)."""
    return _pool_scores(recipe, "scores.parquet", "proxy", method=estimator, audit=audit_n)


def less_scores(recipe: ScoreRecipe, dim: int) -> ScoreCost:
    """`folder/less.parquet`: LESS's scores from a score run of its own."""
    # no audit: LESS's score is a cosine, not the loss drop exact measures
    return _pool_scores(recipe, "less.parquet", "less-proxy", method="less", less_dim=dim, audit=0)


def audit(recipe: ScoreRecipe, estimator: str) -> dict | None:
    """The estimator against exact on a random sample of the pool: the audit every fast
    `stepsift score` run writes into its score file (engine/audit.py). None for a score
    file written without one (an older run adopted from the cache)."""
    recorded = read_settings(recipe.folder / "scores.parquet").get("audit")
    if not recorded:
        return None
    return {
        "estimator": estimator,
        "n": recorded["n"],
        "spearman": recorded["spearman"],
        "top20_overlap": recorded["top20_overlap"],
        "exact_seconds": recorded.get("seconds", 0.0),
    }


def loss_pass_seconds(folder: Path, pool: list, batch_size: int = 16) -> float:
    """What a plain loss filter costs beyond the warm-up: one forward pass of the warmed-up
    proxy over the pool (the score table's `loss` column holds the same values). Timed
    once, cached in `folder/loss_pass.json`."""

    def run() -> dict:
        proxy = load_saved_proxy(folder / "proxy")
        start = time.perf_counter()
        with torch.no_grad():
            for lo in range(0, len(pool), batch_size):
                batch = proxy.collate(pool[lo : lo + batch_size])
                proxy.per_sample_loss({}, batch.tensors)
        return {"seconds": time.perf_counter() - start, "n": len(pool)}

    return cached_json(folder / "loss_pass.json", run)["seconds"]
