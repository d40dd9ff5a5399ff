"""`score`: from candidate and anchor files to a score file.

Reads and validates both files before any model work, gets a proxy (warmed up on a
slice of the pool, or loaded), then drives the utility estimator over the candidates
in batches and writes the scores. Everything the `stepsift score` command does is here.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from stepsift.data import DataValidationError, Problem, Record, read_records, write_rejected
from stepsift.engine.store import ScoreRows, write_scores
from stepsift.proxy.base import Proxy
from stepsift.proxy.builtin import BuiltinProxy
from stepsift.proxy.warmup import WarmupReport, WarmupSettings, warm_up
from stepsift.utility.exact import ExactUtility
from stepsift.utility.steps import make_step_rule

# The default step is Adam continuing the warm-up's own state at the warm-up's own lr:
# the step training would really take next, so it needs no scale picked by hand.
# SGD has no natural step size; when the user picks SGD without --lr this one is used.
# (benchmarks/step_size_sweep.py measures both; see benchmarks/RESULTS.md.)
DEFAULT_OPTIMIZER = "adam"
DEFAULT_SGD_LR = 0.01
METHODS = ("exact",)


@dataclass
class ScoreSettings:
    proxy: str = "builtin"  # "builtin", or a folder written by --save-proxy
    method: str = "exact"
    optimizer: str = DEFAULT_OPTIMIZER
    lr: float | None = None  # None: DEFAULT_SGD_LR for SGD, the warm-up's lr for Adam
    warmup: WarmupSettings = field(default_factory=WarmupSettings)
    batch_size: int = 16
    seed: int = 0
    image_root: Path | None = None
    skip_invalid: bool = False
    harmful_below: float = 0.0
    save_proxy: Path | None = None
    dtype: str = "float32"
    progress: bool = True


@dataclass
class ScoreSummary:
    out: Path
    scored: int
    rejected: int
    rejected_path: Path | None
    truncated: int
    harmful: int
    base_anchor_loss: float
    warmup: WarmupReport | None
    seconds: float
    settings: dict

    def lines(self) -> list[str]:
        out = [f"scored {self.scored} candidates -> {self.out} ({self.seconds:.1f}s)"]
        if self.warmup is not None and self.warmup.steps:
            w = self.warmup
            out.append(
                f"warm-up: {w.samples} samples, {w.steps} steps, loss {w.first_loss:.3f} -> "
                f"{w.last_loss:.3f} ({w.seconds:.1f}s)"
            )
        out.append(f"anchor loss before any step: {self.base_anchor_loss:.4f}")
        out.append(f"harmful (utility < {self.settings['harmful_below']}): {self.harmful}")
        if self.truncated:
            out.append(f"truncated at the proxy's max length: {self.truncated}")
        if self.rejected:
            out.append(f"rejected as invalid: {self.rejected} -> {self.rejected_path}")
        return out


def rejected_path_for(out: Path) -> Path:
    """`scores.parquet` -> `scores.rejected.jsonl`, beside it."""
    return Path(out).with_suffix(".rejected.jsonl")


def load_inputs(
    candidates: Path, anchors: Path, image_root: Path | None, skip_invalid: bool
) -> tuple[list[Record], list[Record], list[Problem]]:
    """Read and validate both files. Problems in the anchors always stop the run: they are
    the trusted yardstick. Problems in the candidates stop it unless `skip_invalid`."""
    pool = read_records(candidates, image_root)
    anchor_set = read_records(anchors, image_root)
    if anchor_set.problems:
        raise DataValidationError(anchor_set.problems)
    if pool.problems and not skip_invalid:
        raise DataValidationError(pool.problems)
    if not pool.records:
        raise DataValidationError(pool.problems)  # every candidate was invalid
    return pool.records, anchor_set.records, pool.problems


def get_proxy(settings: ScoreSettings, pool: Sequence[Record]) -> tuple[Proxy, WarmupReport | None]:
    """A loaded proxy as it is, or a fresh built-in one warmed up on a slice of the pool."""
    dtype = {"float32": torch.float32, "float64": torch.float64}[settings.dtype]
    if settings.proxy != "builtin":
        proxy = BuiltinProxy.load(Path(settings.proxy))
        proxy.model.to(dtype)
        return proxy, None
    proxy = BuiltinProxy(seed=settings.seed)
    proxy.model.to(dtype)
    warmup_settings = WarmupSettings(**{**asdict(settings.warmup), "seed": settings.seed})
    report = warm_up(proxy, pool, warmup_settings, progress=settings.progress)
    return proxy, report


def length_sorted(records: Sequence[Record]) -> list[Record]:
    """Batch records of similar length together so padding wastes little compute."""
    size = {r.id: sum(len(t.text) for t in r.turns) for r in records}
    return sorted(records, key=lambda r: (size[r.id], r.id))


def score(candidates: Path, anchors: Path, out: Path, settings: ScoreSettings) -> ScoreSummary:
    """Score every candidate's one-step utility towards the anchors; write `out`."""
    start = time.perf_counter()
    if settings.method not in METHODS:
        raise ValueError(f"unknown method {settings.method!r}; choose one of {', '.join(METHODS)}")
    torch.manual_seed(settings.seed)
    pool, anchor_records, problems = load_inputs(
        Path(candidates), Path(anchors), settings.image_root, settings.skip_invalid
    )
    rejected_path = None
    if problems:
        rejected_path = rejected_path_for(out)
        write_rejected(problems, rejected_path)

    proxy, warmup_report = get_proxy(settings, pool)
    if settings.save_proxy is not None:
        proxy.save(settings.save_proxy)
    step_rule = make_step_rule(settings.optimizer, settings.lr, proxy, DEFAULT_SGD_LR)
    estimator = ExactUtility(proxy, proxy.collate(anchor_records), step_rule)

    rows = ScoreRows()
    ordered = length_sorted(pool)
    n_batches = math.ceil(len(ordered) / settings.batch_size)
    bar = tqdm(
        total=len(ordered),
        desc="scoring",
        unit="sample",
        disable=not settings.progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    for b in range(n_batches):
        chunk = ordered[b * settings.batch_size : (b + 1) * settings.batch_size]
        batch = proxy.collate(chunk)
        result = estimator(batch)
        rows.extend(
            batch.ids,
            result.utility.tolist(),
            result.loss.tolist(),
            batch.tokens.tolist(),
            batch.truncated.tolist(),
        )
        bar.update(len(chunk))
    bar.close()
    check_finite(rows, candidates)

    recorded = {
        "method": settings.method,
        "proxy": settings.proxy,
        "harmful_below": settings.harmful_below,
        "batch_size": settings.batch_size,
        "seed": settings.seed,
        "dtype": settings.dtype,
        "candidates": str(candidates),
        "anchors": str(anchors),
        "n_anchors": len(anchor_records),
        "base_anchor_loss": estimator.base_anchor_loss,
        "warmup": asdict(settings.warmup) if settings.proxy == "builtin" else None,
        **step_rule.describe(),
    }
    write_scores(rows, Path(out), settings.harmful_below, recorded)
    return ScoreSummary(
        out=Path(out),
        scored=len(rows),
        rejected=len(problems),
        rejected_path=rejected_path,
        truncated=sum(rows.truncated),
        harmful=sum(u < settings.harmful_below for u in rows.utility),
        base_anchor_loss=estimator.base_anchor_loss,
        warmup=warmup_report,
        seconds=time.perf_counter() - start,
        settings=recorded,
    )


def check_finite(rows: ScoreRows, candidates: Path) -> None:
    """A NaN or infinite score is a failure to report by id, never a value to rank."""
    bad = [
        i
        for i, (u, x) in enumerate(zip(rows.utility, rows.loss, strict=True))
        if not (math.isfinite(u) and math.isfinite(x))
    ]
    if bad:
        ids = ", ".join(rows.id[i] for i in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise FloatingPointError(
            f"{candidates}: non-finite loss or utility for {len(bad)} record(s): {ids}{more}"
        )
