"""`score`: from candidate and anchor files to a score file.

Reads and validates both files before any model work, gets a proxy (warmed up on a
slice of the pool, or loaded), then drives the utility estimator over the candidates
in batches and writes the scores. Everything the `stepsift score` command does is here.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from tqdm import tqdm

from stepsift.data import DataValidationError, Problem, Record, read_records, write_rejected
from stepsift.data.index import LazyRecords, RecordIndex, index_records, text_size
from stepsift.data.tabular import data_files
from stepsift.engine.anchor_grouping import group_field, wants_found_groups
from stepsift.engine.audit import (
    AUDIT_METHOD,
    AUDIT_WARN_BELOW,
    AuditBudget,
    audit_positions,
    audit_size,
    compare,
    score_audit,
)
from stepsift.engine.scorer import Scorer
from stepsift.engine.settings import DTYPES, METHODS, ScoreSettings
from stepsift.engine.shards import publish_or_adopt, shared_proxy_dir
from stepsift.engine.stages import StageClock, stage_line
from stepsift.engine.store import (
    DIGEST_KEY,
    REJECTED_KEY,
    PartStore,
    ScoreRows,
    file_digest,
    fingerprint,
    read_scores,
    read_settings,
)
from stepsift.engine.threads import busy_note, run_threads
from stepsift.proxy.base import Proxy, select_parameter_names
from stepsift.proxy.builtin import BuiltinProxy
from stepsift.proxy.hf_loading import HFOptions
from stepsift.proxy.loading import is_saved_proxy, load_saved_proxy, open_hf_proxy
from stepsift.proxy.warmup import WarmupReport, WarmupSettings, warm_up
from stepsift.utility.anchor_groups import check_group_mode
from stepsift.utility.anchor_views import build_views
from stepsift.utility.registry import check_grad_autocast
from stepsift.utility.sketch import check_dim as check_sketch_dim

RUN_FILE = "run.txt"  # in a saved run proxy: the fingerprint of the run it belongs to


@dataclass
class ScoreSummary:
    out: Path
    scored: int
    resumed: int  # scored by an earlier, interrupted run of the same command
    rejected: int
    rejected_path: Path | None
    truncated: int
    harmful: int
    base_anchor_loss: float
    warmup: WarmupReport | None
    seconds: float
    settings: dict
    audit: dict | None = None  # the fast estimator against exact (engine/audit.py)
    stages: dict[str, float] | None = None  # seconds per stage (engine/stages.py)

    def lines(self) -> list[str]:
        out = [f"scored {self.scored} candidates -> {self.out} ({self.seconds:.1f}s)"]
        if self.stages:
            out.append(stage_line(self.stages, self.seconds))
        if self.resumed:
            out.append(f"resumed: {self.resumed} were already scored by an interrupted run")
        if self.warmup is not None and self.warmup.steps:
            w = self.warmup
            out.append(
                f"warm-up: {w.samples} samples, {w.steps} steps, loss {w.first_loss:.3f} -> "
                f"{w.last_loss:.3f} ({w.seconds:.1f}s)"
            )
        out.append(f"anchor loss before any step: {self.base_anchor_loss:.4f}")
        if self.settings.get("adam_state") == "fresh":
            out.append(
                "warning: Adam stepped from a fresh state (the proxy has no warm-up state): "
                "that is a near sign-step, which ranked worse than chance in "
                "benchmarks/RESULTS.md; consider --optimizer sgd or a warm-up"
            )
        out += audit_lines(self.audit)
        out.append(f"harmful (utility < {self.settings['harmful_below']}): {self.harmful}")
        if self.truncated:
            out.append(f"truncated at the proxy's max length: {self.truncated}")
        if self.rejected:
            out.append(f"rejected as invalid: {self.rejected} -> {self.rejected_path}")
        return out


def audit_lines(audit: dict | None) -> list[str]:
    """What the run prints of its audit, with a warning when ρ is under the bar."""
    if not audit:
        return []
    interval = audit.get("spearman_interval")
    within = (
        f" (95% interval {interval[0]:.2f}-{interval[1]:.2f})"
        if interval and all(math.isfinite(x) for x in interval)
        else ""
    )
    sample = audit.get("sample") or {}
    sized = (
        f" of {sample['pool_sample']} drawn, in its {sample['budget_seconds']:.0f}s time share"
        if sample.get("sized_by") == "time" and audit["n"] < sample.get("pool_sample", 0)
        else ""
    )
    line = (
        f"audit: {audit['n']} random candidates{sized} scored again with {audit['method']}: "
        f"Spearman ρ {audit['spearman']:.3f}{within}, "
        f"top-20% overlap {audit['top20_overlap']:.2f}"
    )
    if not audit["spearman"] >= AUDIT_WARN_BELOW:  # NaN (too few audited) warns too
        return [line, (
            f"warning: the estimator's ranking agrees with exact to ρ {audit['spearman']:.3f} "
            f"< {AUDIT_WARN_BELOW} on this run; consider --method exact, or a smaller --lr"
        )]  # fmt: skip
    return [line]


def run_audit(
    settings: ScoreSettings,
    proxy: Proxy,
    anchor_records: list[Record],
    pool: RecordIndex,
    batches: Sequence[np.ndarray],
    store: PartStore,
    rows: ScoreRows,
    run_seconds: float,
) -> dict | None:
    """Score the audit sample of this run's batches with exact and compare (engine/audit.py).
    Its parts live in the run's parts folder, so an interrupted audit resumes. Without
    --audit N it stops once it has taken a share of `run_seconds` (the run before it)."""
    n = audit_size(settings.audit, len(pool))
    if settings.method == AUDIT_METHOD or n == 0:
        return None
    budget = AuditBudget.share_of(run_seconds) if settings.audit is None else None
    mine = np.zeros(len(pool), dtype=bool)
    for b in batches:
        mine[b] = True
    # the sampled positions in this run's (shard's) batches, in the sample's random order
    order = audit_positions(len(pool), n, settings.seed)
    wanted = order[mine[order]]
    size = settings.batch_size
    audit_batches = [wanted[s : s + size] for s in range(0, len(wanted), size)]
    audit_store = PartStore(store.dir / "audit.parquet")
    audit_store.open(f"audit:{n}", overwrite=True)
    todo = remaining(audit_batches, pool, audit_store.done().id)
    # the audit is the full-precision reference: never under the run's autocast
    exact_settings = replace(
        settings, method=AUDIT_METHOD, sketch_dim=0, anchor_folds=0, grad_autocast="off"
    )
    scorer = Scorer.build(proxy, anchor_records, exact_settings) if todo else None
    bar = tqdm(total=len(wanted), initial=len(wanted) - sum(len(b) for b in todo),
               desc="audit", unit="sample", disable=not settings.progress,
               file=sys.stderr, dynamic_ncols=True)  # fmt: skip
    try:
        audited, seconds = score_audit(
            audit_store, todo, lambda b: scorer(pool.load(b)), settings.flush_seconds,
            bar.update, budget,
        )  # fmt: skip
    finally:
        bar.close()
    sample = {"requested": settings.audit, "pool_sample": n, "seed": settings.seed}
    if budget is not None:
        sample |= {"sized_by": "time", "budget_seconds": round(budget.seconds, 1),
                   "floor": budget.floor}  # fmt: skip
    return compare(audited.id, audited.utility, rows, seconds=seconds, sample=sample)


def rejected_path_for(out: Path) -> Path:
    """`scores.parquet` -> `scores.rejected.jsonl`, beside it."""
    return Path(out).with_suffix(".rejected.jsonl")


def load_inputs(
    candidates: Path, anchors: Path, image_root: Path | None, skip_invalid: bool
) -> tuple[RecordIndex, list[Record], list[Problem]]:
    """Validate both files. Problems in the anchors always stop the run: they are the
    trusted yardstick. Problems in the candidates stop it unless `skip_invalid`.
    The pool stays on disk (an index of where each good record is), so memory does not
    grow with it; the anchors are few and are held."""
    anchor_set = read_records(anchors, image_root)
    anchor_set.raise_for_problems()
    pool = index_records(candidates, image_root)
    if not skip_invalid:
        pool.raise_for_problems()
    if not len(pool):
        raise DataValidationError(pool.problems)  # every candidate was invalid
    return pool, anchor_set.records, pool.problems


def get_proxy(settings: ScoreSettings, pool: Sequence[Record]) -> tuple[Proxy, WarmupReport | None]:
    """A saved proxy as it is, or a fresh one (built-in, or a Hugging Face checkpoint)
    warmed up on a slice of the pool."""
    dtype = DTYPES[settings.dtype]
    if is_saved_proxy(settings.proxy):
        proxy = load_saved_proxy(Path(settings.proxy))
        proxy.model.to(dtype)
        return proxy, None
    if settings.proxy == "builtin":
        if settings.proxy_init is not None:
            proxy = BuiltinProxy.load(Path(settings.proxy_init))
            proxy.adam_state, proxy.adam_hparams = {}, {}  # the warm-up starts its own Adam
        else:
            proxy = BuiltinProxy(seed=settings.seed)
        proxy.model.to(dtype)
    else:
        torch.manual_seed(settings.seed)  # LoRA adapters start from it
        proxy = open_hf_proxy(settings.proxy, hf_options(settings))
    select_parameter_names(proxy.trainable_parameter_names(), settings.params)  # fail early
    warmup_settings = WarmupSettings(**{**asdict(settings.warmup), "seed": settings.seed})
    # a Hugging Face model is pretrained: it gets the lighter floors (proxy/warmup.py)
    pretrained = settings.proxy != "builtin"
    report = warm_up(proxy, pool, warmup_settings, settings.progress, pretrained)
    proxy.history = {
        "proxy": settings.proxy,
        **({"proxy_init": str(settings.proxy_init)} if settings.proxy_init else {}),
        "warmup": asdict(report) if report.steps else None,  # none: no NaN losses in JSON
        "warmup_settings": asdict(warmup_settings),
    }
    return proxy, report


def hf_options(settings: ScoreSettings) -> HFOptions:
    """The Hugging Face options, with the run's own dtype."""
    return HFOptions(**{**asdict(settings.hf), "dtype": settings.dtype})


def length_sorted(records: Sequence[Record]) -> list[Record]:
    """Batch records of similar length together so padding wastes little compute."""
    return sorted(records, key=lambda r: (text_size(r), r.id))


def decisive_settings(settings: ScoreSettings, candidates: Path, anchors: Path) -> dict:
    """The settings that decide the scores: a resumed run must share every one of them."""
    return {
        "method": settings.method,
        "params": settings.params,
        "less_dim": settings.less_dim if settings.method == "less" else None,
        **(
            {"exact_anchors": settings.exact_anchors}
            if settings.method == "anchor-subsample"
            else {}
        ),
        **(
            {"forward_directions": settings.forward_directions}
            if settings.method == "forward"
            else {}
        ),
        **(
            {"streamed_sketch": True}
            if settings.method == "curvature" and settings.streamed_sketch
            else {}
        ),
        **({"label_draws": settings.label_draws} if settings.method == "curvature" else {}),
        **({"grad_autocast": settings.grad_autocast} if settings.grad_autocast != "off" else {}),
        "anchor_folds": settings.anchor_folds,
        "anchor_group_field": settings.anchor_group_field,
        "anchor_group_mode": settings.anchor_groups,
        "sketch_dim": settings.sketch_dim,
        "proxy": settings.proxy,
        "proxy_init": str(settings.proxy_init) if settings.proxy_init else None,
        "optimizer": settings.optimizer,
        "lr": settings.lr,
        "warmup": None if is_saved_proxy(settings.proxy) else asdict(settings.warmup),
        "hf": hf_decisive(settings),
        "batch_size": settings.batch_size,
        "seed": settings.seed,
        "dtype": settings.dtype,
        "image_root": str(settings.image_root) if settings.image_root else None,
        "skip_invalid": settings.skip_invalid,
        "harmful_below": settings.harmful_below,
        "candidates": str(candidates),
        "anchors": str(anchors),
    }


def hf_decisive(settings: ScoreSettings) -> dict | None:
    """The Hugging Face options that change scores (not device or checkpointing)."""
    if settings.proxy == "builtin" or is_saved_proxy(settings.proxy):
        return None
    decisive = asdict(settings.hf)
    for key in ("device", "gradient_checkpointing", "dtype"):
        decisive.pop(key)
    return decisive


def input_files(candidates: Path, anchors: Path, settings: ScoreSettings) -> list[Path]:
    """Files whose bytes decide the scores (a loaded proxy's weights included)."""
    files = [*data_files(Path(candidates)), *data_files(Path(anchors))]
    if Path(settings.proxy).is_dir():  # a hub id has no local bytes; its name is recorded
        files += sorted(p for p in Path(settings.proxy).iterdir() if p.is_file())
    if settings.proxy_init is not None:  # the starting weights decide the scores too
        files += sorted(p for p in Path(settings.proxy_init).iterdir() if p.is_file())
    return files


def resumable_proxy(
    settings: ScoreSettings,
    pool: Sequence[Record],
    store: PartStore,
    shared: Path | None,
    run_id: str,
) -> tuple[Proxy, WarmupReport | None]:
    """The run's proxy, warmed up once: a resumed run loads the one its first part saved,
    so it continues with exactly the same weights. Shards of one run share `shared`: the
    first to finish its warm-up publishes it, and all score with the published one. A
    shared proxy records the run it belongs to; another run's is refused (or replaced
    with --overwrite)."""
    home = shared or store.proxy_dir

    def load(folder: Path) -> Proxy:
        owner = folder / RUN_FILE
        if shared is not None and owner.read_text().strip() != run_id:
            if not settings.overwrite:
                raise ValueError(
                    f"{folder}: the shared proxy of a run with other inputs or settings is "
                    "here; remove it, or pass --overwrite to replace it"
                )
            shutil.rmtree(folder)
            return None
        proxy = load_saved_proxy(folder)
        proxy.model.to(DTYPES[settings.dtype])
        return proxy

    if home.is_dir() and (proxy := load(home)) is not None:
        return proxy, None
    proxy, report = get_proxy(settings, pool)
    staging = home.with_name(f"{home.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    proxy.save(staging)
    (staging / RUN_FILE).write_text(run_id + "\n")
    if shared is not None:
        proxy, published = publish_or_adopt(staging, shared, load)
        return proxy, report if published else None
    os.replace(staging, home)  # atomic: a proxy folder is whole or absent
    return proxy, report


def score(candidates: Path, anchors: Path, out: Path, settings: ScoreSettings) -> ScoreSummary:
    """Score every candidate's one-step utility towards the anchors; write `out`.

    Resumable: scores go to `OUT.parts/` as they are made; rerunning the same command
    after an interrupt or crash skips what is done and gives the same final file.
    Runs on `settings.threads` torch threads (engine/threads.py), the caller's restored
    after.
    """
    with run_threads(settings.threads) as threads:
        if settings.threads is None and settings.progress and (note := busy_note(threads)):
            print(note, file=sys.stderr)
        return _score(Path(candidates), Path(anchors), Path(out), settings, threads)


def _score(
    candidates: Path, anchors: Path, out: Path, settings: ScoreSettings, threads: int
) -> ScoreSummary:
    start = time.perf_counter()
    clock = StageClock()
    if settings.method not in METHODS:
        raise ValueError(f"unknown method {settings.method!r}; choose one of {', '.join(METHODS)}")
    check_sketch_dim(settings.sketch_dim)  # before any model work
    check_grad_autocast(settings.method, settings.grad_autocast)
    if settings.proxy_init is not None:
        if settings.proxy != "builtin":
            raise ValueError("--proxy-init starts the built-in proxy; it cannot be combined "
                             f"with --proxy {settings.proxy}")  # fmt: skip
        if not is_saved_proxy(str(settings.proxy_init)):
            raise ValueError(f"--proxy-init {settings.proxy_init}: not a saved proxy folder "
                             "(no proxy.json)")  # fmt: skip
    torch.manual_seed(settings.seed)
    with clock.stage("load"):
        pool, anchor_records, problems = load_inputs(
            candidates, anchors, settings.image_root, settings.skip_invalid
        )
    # a bad anchor group field or fold count stops the run before any model work
    check_group_mode(settings.anchor_groups)
    build_views(anchor_records, settings.anchor_folds, group_field(settings), settings.seed)
    decisive = decisive_settings(settings, candidates, anchors)
    files = input_files(candidates, anchors, settings)
    run_id = fingerprint(files, decisive)  # the same for every shard of one run
    shard = settings.shard
    final = shard.output(out) if shard else out
    parts_id = fingerprint(files, {**decisive, "shard": str(shard)}) if shard else run_id
    if final.exists() and not settings.overwrite:
        recorded = read_settings(final)
        if recorded.get("fingerprint") != parts_id:
            raise ValueError(
                f"{final} exists and was made from other inputs or settings; pass --overwrite"
            )
        return finished_summary(final, recorded, problems, start)  # nothing left to do
    store = PartStore(final)
    store.open(parts_id, settings.overwrite)
    rejected_path = None
    if problems:
        rejected_path = rejected_path_for(final)
        write_rejected(problems, rejected_path)

    shared = shared_proxy_dir(out) if shard else None
    with clock.stage("load"):  # the model's loading (and saving); the warm-up is its own
        proxy, warmup_report = resumable_proxy(settings, LazyRecords(pool), store, shared, run_id)
        if settings.save_proxy is not None:
            proxy.save(settings.save_proxy)
    if warmup_report is not None and warmup_report.steps:
        clock.take("load", warmup_report.seconds)
        clock.add("warm-up", warmup_report.seconds)

    done = store.done().id
    # batches (positions in the pool index) are cut from the whole pool in length order,
    # so a resumed run or another shard forms the same batches
    ordered = pool.length_order()
    batches = [
        ordered[s : s + settings.batch_size] for s in range(0, len(ordered), settings.batch_size)
    ]
    if shard:
        batches = shard.take(batches)
    todo = remaining(batches, pool, done)
    total = sum(len(b) for b in batches)
    if settings.engine == "ray":
        from stepsift.engine.ray_engine import score_on_ray  # ray only when asked for

        proxy_home = shared or store.proxy_dir
        if wants_found_groups(settings, anchor_records):  # found once here, loaded by actors
            Scorer.build(
                proxy, anchor_records, settings, state_dir=proxy_home, pool=pool, clock=clock
            )
        scored = score_on_ray(settings, pool, anchors, proxy_home, todo)
    else:
        state_dir = shared or store.proxy_dir  # the anchor state is saved once, beside the proxy
        scorer = Scorer.build(
            proxy, anchor_records, settings, state_dir=state_dir, pool=pool, clock=clock
        )
        scored = ((scorer(pool.load(chunk)), scorer.facts()) for chunk in todo)
    # the bar starts once the set-up (its own bars) is done: it shows scoring only
    bar = tqdm(total=total, initial=total - sum(len(b) for b in todo), desc="scoring",
               unit="sample", disable=not settings.progress, file=sys.stderr,
               dynamic_ncols=True)  # fmt: skip
    scoring_started = time.perf_counter()
    pending, last_flush = ScoreRows(), time.monotonic()
    about: dict = {}  # what the estimator says of itself, from whichever engine ran it
    try:
        for rows, facts in scored:
            about = facts
            pending.add(vars(rows))
            bar.update(len(rows))
            if time.monotonic() - last_flush >= settings.flush_seconds:
                store.write_part(pending)
                pending, last_flush = ScoreRows(), time.monotonic()
    finally:
        # on Ctrl-C or an error, keep every finished batch: the rerun starts after them
        store.write_part(pending)
        bar.close()
        clock.add("scoring", time.perf_counter() - scoring_started)
    if not about:  # nothing was left to score: ask the estimator once
        about = Scorer.build(
            proxy, anchor_records, settings, state_dir=shared or store.proxy_dir, clock=clock
        ).facts()
    rows = store.done()  # read the parts once: checked, then merged
    check_finite(rows, candidates)
    run_seconds = sum(clock.seconds.values())
    with clock.stage("audit"):
        audit = run_audit(settings, proxy, anchor_records, pool, batches, store, rows, run_seconds)

    recorded = {
        **decisive,
        "fingerprint": parts_id,
        "run_fingerprint": run_id,
        "pool_candidates": len(ordered),
        "n_anchors": len(anchor_records),
        "engine": settings.engine,
        DIGEST_KEY: file_digest(candidates),
        REJECTED_KEY: len({(p.file, p.line) for p in problems}),
        **about,
        **({"audit": audit} if audit else {}),
        # this invocation's stages (a resumed run's own, not the interrupted one's); the
        # file's own writing comes after, so only the printed summary has it
        "stage_seconds": clock.record(),
        "threads": threads,
        "proxy_origin": proxy.origin(),
    }
    if shard:
        recorded |= {"shard": str(shard), "shard_candidates": sum(len(b) for b in batches)}
    with clock.stage("write"):
        store.finish(rows, settings.harmful_below, recorded)
    return ScoreSummary(
        out=final,
        scored=len(rows),
        resumed=len(done),
        rejected=len({(p.file, p.line) for p in problems}),
        rejected_path=rejected_path,
        truncated=sum(rows.truncated),
        harmful=sum(u < settings.harmful_below for u in rows.utility),
        base_anchor_loss=about["base_anchor_loss"],
        warmup=warmup_report,
        audit=audit,
        seconds=time.perf_counter() - start,
        settings=recorded,
        stages=clock.record(),
    )


def remaining(
    batches: Sequence[np.ndarray], pool: RecordIndex, done: Sequence[str]
) -> list[np.ndarray]:
    """The batches' positions whose ids are not scored yet (empty batches dropped)."""
    if not done:
        return [b for b in batches if len(b)]
    scored = pc.is_in(pool.ids, value_set=pa.array(list(done), pa.string()))
    is_done = scored.to_numpy(zero_copy_only=False)
    return [rest for b in batches if len(rest := b[~is_done[b]])]


def finished_summary(out: Path, recorded: dict, problems: list[Problem], start: float):
    """The summary of a run whose score file is already complete."""
    table = read_scores(out).select(["id", "truncated", "harmful"]).to_pydict()
    return ScoreSummary(
        out=out,
        scored=len(table["id"]),
        resumed=len(table["id"]),
        rejected=len({(p.file, p.line) for p in problems}),
        rejected_path=rejected_path_for(out) if problems else None,
        truncated=sum(table["truncated"]),
        harmful=sum(table["harmful"]),
        base_anchor_loss=recorded["base_anchor_loss"],
        warmup=None,
        audit=recorded.get("audit"),
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
