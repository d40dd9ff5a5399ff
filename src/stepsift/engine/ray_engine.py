"""Scoring as a Ray Data pipeline: a pool of actors, each holding a proxy, scores the
run's batches, and the results stream back to the driver.

The driver keeps what makes a run safe to interrupt: it warms the proxy up once and
saves it (every actor loads that folder, so all score with identical weights), decides
the batches (the same ones the local engine would form, so scores match it), and writes
finished scores as atomic Parquet parts as they arrive. A crashed or preempted driver
resumes like any run; a killed actor is restarted by Ray and its batch retried.

On a multi-machine cluster (`--ray-address`) the candidate and anchor files and the
output folder must be on storage every node sees.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from stepsift.data import read_records
from stepsift.data.index import RecordIndex
from stepsift.data.spans import SpanReader
from stepsift.data.table_reader import TableRowReader
from stepsift.engine.scorer import Scorer
from stepsift.engine.settings import DTYPES, ScoreSettings
from stepsift.engine.store import ScoreRows
from stepsift.proxy.loading import load_saved_proxy

FACTS = "__facts"  # a column carrying the estimator's facts (JSON), same on every row


class ScoreActor:
    """One Ray worker: the run's saved proxy and estimator, built once."""

    def __init__(
        self,
        settings: ScoreSettings,
        reader: SpanReader | TableRowReader,
        anchors: str,
        proxy_dir: str,
        dtype,
    ):
        import torch

        from stepsift.engine.threads import use_threads

        use_threads(cpus=settings.cpus_per_worker)  # the CPUs Ray gave this actor, no more
        torch.manual_seed(settings.seed)
        self.reader = reader  # each batch's records are read from where the index found them
        anchor_records = read_records(Path(anchors), settings.image_root).records
        proxy = load_saved_proxy(Path(proxy_dir))
        proxy.model.to(dtype)
        # the anchor state is computed by the first actor and loaded by the rest
        self.scorer = Scorer.build(proxy, anchor_records, settings, state_dir=Path(proxy_dir))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = ScoreRows()
        for where, lines in zip(batch["where"], batch["lines"], strict=True):
            rows = self.scorer(self.reader.read(where, lines))  # one stepsift batch, usually
            out.add(vars(rows))
        facts = json.dumps(self.scorer.facts())
        # every column, the optional ones (fold_utility, sketch, ...) as 2-D arrays
        return {**out.to_numpy(), FACTS: np.array([facts] * len(out), dtype=object)}


def start_ray(address: str | None) -> bool:
    """Connect to `address`, or start a local cluster of this machine's CPUs; say whether
    this call did it (then the caller shuts it down), or Ray was already initialised."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False)
    return True


def score_on_ray(
    settings: ScoreSettings,
    pool: RecordIndex,
    anchors: Path,
    proxy_dir: Path,
    todo: Sequence[np.ndarray],
) -> Iterator[tuple[ScoreRows, dict]]:
    """Score `todo` (the run's remaining batches, as positions in `pool`) on Ray; yield
    (rows, estimator facts) as results stream back, in no fixed order."""
    import ray

    if not todo:
        return
    started = start_ray(settings.ray_address)
    # a batch travels as where its records are, and each actor reads just those records
    items = [{"where": pool.where[b], "lines": pool.lines[b]} for b in todo]
    reader = pool.reader.resolved()
    actor_settings = replace(settings, progress=False)  # no progress bars in the actors
    workers = min(settings.workers, len(items))
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    scored = dataset.map_batches(
        ScoreActor,
        fn_constructor_kwargs={
            "settings": actor_settings,
            "reader": reader,
            "anchors": str(Path(anchors).resolve()),
            "proxy_dir": str(Path(proxy_dir).resolve()),
            "dtype": DTYPES[settings.dtype],
        },
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=settings.cpus_per_worker,
        num_gpus=settings.gpus_per_worker,
        # Ray Data's actor pools restart a dead actor and retry its batch by default
        # (max_restarts = max_task_retries = -1), which a killed worker relies on
    )
    try:
        for part in scored.iter_batches(batch_size=None, batch_format="numpy"):
            rows = ScoreRows()
            rows.add(part)
            yield rows, json.loads(part[FACTS][0])
    finally:
        if started:  # a local cluster this run started ends with it
            ray.shutdown()
