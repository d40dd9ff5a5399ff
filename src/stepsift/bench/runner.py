"""`stepsift bench`: the paper's experiment in miniature, end to end.

For each noise rate: generate a pool (with hidden noise tags), anchors and a clean test set;
score the pool with OST through the public `score`; run every selector; then, for every seed
and protocol, fine-tune the target's base checkpoint on each selected subset and measure
exact-match accuracy on the test set. The noise tags are read only to report how well each
selector's ranking separates wrong samples from clean ones.

What is charged as selection cost (`select_seconds`): OST's whole `score` run (proxy warm-up
included) for the score-table selectors (ost, ost_drop_harmful, high_loss); the proxy forward
passes plus the shared warm-up for ifd and deita; the judge's inference over the pool for
judge. Protocol A trains `epochs` passes over each subset; protocol B trains as many steps as
full-SFT takes under A, whatever the subset size.

Every finished fine-tune is appended to `OUT/runs.jsonl` at once, and scores, selections and
the judge are cached under OUT, so rerunning the same command after an interrupt continues
where it stopped. See `bench/report.py` for the files written at the end.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stepsift.bench.base_model import BaseConfig, get_base_model
from stepsift.bench.family_mix import FamilyMix
from stepsift.bench.generate import BenchmarkPaths, write_benchmark
from stepsift.bench.judge import (
    Judge,
    JudgeSettings,
    judge_accuracy,
    judge_select,
    train_judge,
)
from stepsift.bench.metrics import (
    NOT_WRONG,
    flag_quality,
    harmful_precision,
    noise_auroc,
    noise_tags,
    per_type_auroc,
)
from stepsift.bench.problems import DEFAULT_NOISE_RATE
from stepsift.bench.proxy_base import ProxyBaseConfig, get_proxy_base
from stepsift.bench.report import write_reports
from stepsift.bench.score_runs import (
    ScoreCost,
    ScoreRecipe,
    audit,
    cached_json,
    less_scores,
    loss_pass_seconds,
    ost_scores,
)
from stepsift.bench.selectors import (
    SELECTORS,
    SelectionResult,
    SelectorInputs,
    stepsift_default,
)
from stepsift.bench.target import TargetModel
from stepsift.bench.trainer import TrainStats, evaluate, finetune
from stepsift.data import read_records
from stepsift.data.atomic import atomic_write_text
from stepsift.data.record import Record
from stepsift.engine.store import read_scores, read_settings
from stepsift.proxy.builtin import BuiltinProxy
from stepsift.proxy.warmup import WarmupSettings

METHODS = (
    "full",
    "random",
    "stepsift",
    "ost",
    "loss_filter",
    "less",
    "oracle_clean",
    "oracle_clean_all",
    "oracle_target",
    "judge",
    "deita",
    "ifd",
    "high_loss",
    "ost_drop_harmful",
    "ost_auto",
    "ost_diverse",
)
# the paper's comparison plus the baselines a reviewer asks for; the other OST variants on
# request
DEFAULT_METHODS = METHODS[:13]
PROTOCOLS = ("A", "B")
SCORE_TABLE_METHODS = (
    "stepsift",
    "ost",
    "ost_drop_harmful",
    "high_loss",
    "ost_auto",
    "ost_diverse",
)
PROXY_METHODS = ("ifd", "deita")
# at OST's budgets (`fractions`); the oracles that keep "all" of something decide their size
AT_OST_BUDGETS = ("stepsift", "ost", "ost_diverse", "loss_filter", "less", "oracle_clean")
METHOD_SIZED = ("full", "judge", "ost_auto", "oracle_clean_all", "oracle_target")
PROXY_STARTS = ("pretrained", "scratch")
LESS_BENCH_DIM = 1024  # LESS's 8192 costs 66x more per candidate for the same ranking (RESULTS)


ANCHOR_LABELS = ("shown", "hidden")


@dataclass
class BenchConfig:
    out: Path
    methods: tuple[str, ...] = DEFAULT_METHODS
    # exact costs ~129 forward-equivalents a candidate (hours at 10k on 2 cores); the bench
    # scores with `curvature` (~4) and audits it against exact on `audit` random candidates
    estimator: str = "curvature"
    audit: int = 200  # candidates scored exactly to measure the estimator (0: none)
    fractions: tuple[float, ...] = (0.2, 0.5)  # OST's keep fractions, and the loss filter's,
    # LESS's and oracle_clean's
    random_fractions: tuple[float, ...] = (0.2, 0.5)  # random-k controls
    baseline_fraction: float = 0.2  # ost_drop_harmful, high_loss, ifd, deita (the paper's 20%)
    # one pass of full-SFT over the pool sets protocol B's step budget (single epoch)
    protocols: tuple[str, ...] = ("B",)
    seeds: tuple[int, ...] = (0, 1, 2)
    noise_rates: tuple[float, ...] = (DEFAULT_NOISE_RATE,)
    # weights of the noise types (noise_kinds.ALL_NOISE_TYPES); None: the v2 default (random
    # and systematic; noise_kinds.DEFAULT_V2_NOISE_MIX), or for the old single-family pool
    # (target_share 1) the old equal random mix
    noise_mix: dict[str, float] | None = None
    # the pool's task families: `target` share of the pool from the target families
    # (anchors and test come from them only), the rest by `other_families` weights (None:
    # equal over every other family); target_share 1 is the old single-family pool
    target: tuple[str, ...] = ("chain",)
    target_share: float = 0.3
    other_families: dict[str, float] | None = None
    pool_size: int = 10000
    n_anchors: int = 100
    n_test: int = 1000
    data_seed: int = 0  # the pool is fixed across training seeds, as in the paper
    epochs: int = 1
    lr: float = 2e-3
    batch_size: int = 32
    judge: JudgeSettings = field(default_factory=lambda: JudgeSettings(n_train=4000))
    base: BaseConfig = field(default_factory=BaseConfig)
    # the proxy starts from a checkpoint pre-trained on a generic corpus of the world
    # (bench/proxy_base.py), as the paper's proxy is a pretrained model; or from scratch
    proxy_start: str = "pretrained"
    # shown: the anchors' template is their `group` field, as the generator knows it;
    # hidden: score never reads it and finds the groups itself, as on a user's anchors
    anchor_labels: str = "shown"
    proxy_base: ProxyBaseConfig = field(default_factory=ProxyBaseConfig)
    warmup: WarmupSettings = field(default_factory=WarmupSettings)  # the proxy's, for OST
    cache_dir: Path | None = None  # the base checkpoint cache (default: OUT/../cache, shared)
    progress: bool = True

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad:
            raise ValueError(f"unknown protocol(s) {bad}; use A and/or B")
        for f in (*self.fractions, *self.random_fractions, self.baseline_fraction):
            if not 0 < f <= 1:
                raise ValueError(f"keep fractions must be in (0, 1], got {f}")
        for r in self.noise_rates:
            if not 0 <= r <= 1:
                raise ValueError(f"noise rates must be in [0, 1], got {r}")
        if self.proxy_start not in PROXY_STARTS:
            raise ValueError(f"proxy_start must be one of {PROXY_STARTS}, got {self.proxy_start!r}")
        if self.anchor_labels not in ANCHOR_LABELS:
            raise ValueError(
                f"anchor_labels must be one of {ANCHOR_LABELS}, got {self.anchor_labels!r}"
            )
        if self.audit < 0:
            raise ValueError(f"audit must be >= 0, got {self.audit}")
        self.mix()  # unknown families or a bad share fail here, before any work

    def mix(self) -> FamilyMix | None:
        """The pool's family mix; None for the old single-family pool (`target_share` 1 of
        chain problems), which is then generated exactly as before."""
        if self.target_share == 1 and tuple(self.target) == ("chain",):
            return None
        return FamilyMix(
            target=tuple(self.target),
            target_share=self.target_share,
            others=self.other_families,
        )

    def judge_settings(self) -> JudgeSettings:
        """The judge trains on clean problems of the pool's own family mix."""
        mix = self.mix()
        return replace(self.judge, families=mix.weights() if mix else None)

    def plan(self) -> list[tuple[str, float | None]]:
        """(method, keep fraction) pairs; None: the method decides (full keeps all, the judge
        keeps what it agrees with)."""
        out: list[tuple[str, float | None]] = []
        for m in self.methods:
            if m in METHOD_SIZED:
                out.append((m, None))
            elif m in AT_OST_BUDGETS:  # the same budgets as OST's top-k
                out += [(m, f) for f in self.fractions]
            elif m == "random":
                out += [(m, f) for f in self.random_fractions]
            else:
                out.append((m, self.baseline_fraction))
        return out

    def full_steps(self) -> int:
        """Protocol B's step budget: what full-SFT takes under protocol A."""
        return self.epochs * math.ceil(self.pool_size / self.batch_size)

    def protocol_note(self) -> str:
        return (
            f"protocol B trains every subset for the steps of {self.epochs} pass(es) of "
            f"full-SFT over the pool ({self.full_steps()} steps of {self.batch_size}); "
            "protocol A trains each subset for that many passes over itself"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        d["cache_dir"] = str(self.cache_dir) if self.cache_dir else None
        return d


def run_key(noise: float, method: str, keep: float | None, protocol: str, seed: int) -> str:
    return f"{noise:g}|{method}|{keep if keep is not None else '-'}|{protocol}|{seed}"


SEEDED_SELECTIONS = ("random", "oracle_clean")  # drawn anew for every training seed


def selection_key(method: str, keep: float | None, seed: int) -> str:
    # only the random draws depend on the seed; the others are a property of the pool
    suffix = f"@seed{seed}" if method in SEEDED_SELECTIONS else ""
    return f"{method}@{keep if keep is not None else '-'}{suffix}"


# --- cached stages ------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def benchmark_data(cfg: BenchConfig, noise: float) -> BenchmarkPaths:
    """The generated files for one noise rate; written once, then reused (scores depend on
    their bytes, so they are not rewritten on a rerun)."""
    root = cfg.out / f"noise-{round(noise * 100):02d}" / "data"
    spec: dict[str, Any] = {
        "n_pool": cfg.pool_size,
        "n_anchors": cfg.n_anchors,
        "n_test": cfg.n_test,
        "noise_rate": noise,
        "seed": cfg.data_seed,
    }
    if cfg.noise_mix is not None:
        spec["noise_mix"] = dict(cfg.noise_mix)
    mix = cfg.mix()
    marker_spec = {**spec, "mix": mix.to_dict() if mix else None}
    marker = root / "spec.json"
    if marker.is_file() and json.loads(marker.read_text()) == marker_spec:
        return BenchmarkPaths(
            root, root / "pool.jsonl", root / "anchors.jsonl", root / "test.jsonl", root / "images"
        )
    paths = write_benchmark(root, **spec, mix=mix)
    atomic_write_text(marker, json.dumps(marker_spec) + "\n")
    return paths


@dataclass
class NoiseLevel:
    """Everything selection needs for one noise rate, computed once."""

    noise: float
    paths: BenchmarkPaths
    pool: list[Record]
    test: list[Record]
    ost: ScoreCost  # OST's score run
    less: ScoreCost | None  # LESS's, when it is among the methods
    audit: dict | None  # the estimator against exact on a random sample
    folder: Path

    @property
    def scores_path(self) -> Path:
        return self.folder / "scores.parquet"

    @property
    def score_seconds(self) -> float:  # the whole OST score run, warm-up included
        return self.ost.score_seconds

    @property
    def warmup_seconds(self) -> float:
        return self.ost.warmup_seconds


def proxy_start(cfg: BenchConfig) -> Path | None:
    """The pre-trained proxy checkpoint the score runs start from; None: from scratch."""
    if cfg.proxy_start == "scratch":
        return None
    return get_proxy_base(cache_root(cfg), seed=cfg.data_seed, config=cfg.proxy_base, log=log)


def cache_root(cfg: BenchConfig) -> Path:
    return cfg.cache_dir or cfg.out.parent / "cache"


def prepare_level(cfg: BenchConfig, noise: float) -> NoiseLevel:
    paths = benchmark_data(cfg, noise)
    folder = paths.root.parent
    recipe = ScoreRecipe(
        pool=paths.pool,
        anchors=paths.anchors,
        folder=folder,
        warmup=cfg.warmup,
        proxy_init=proxy_start(cfg),
        seed=cfg.data_seed,
        progress=cfg.progress,
        anchor_group_field="group" if cfg.anchor_labels == "shown" else "",
    )
    log(f"noise {noise:.0%}: OST scores of {cfg.pool_size} candidates ({cfg.estimator})")
    ost = ost_scores(recipe, cfg.estimator, cfg.audit)
    checked = audit(recipe, cfg.estimator) if cfg.audit and cfg.estimator != "exact" else None
    if checked:
        log(
            f"audit: Spearman {checked['spearman']:.3f}, top-20% overlap "
            f"{checked['top20_overlap']:.2f} (n={checked['n']})"
        )
    less = None
    if "less" in cfg.methods:
        log(f"noise {noise:.0%}: LESS scores (d={LESS_BENCH_DIM})")
        less = less_scores(recipe, LESS_BENCH_DIM)
    pool = read_records(paths.pool).records
    test = read_records(paths.test).records
    return NoiseLevel(noise, paths, pool, test, ost, less, checked, folder)


def get_judge(cfg: BenchConfig, base: TargetModel, test: list[Record]) -> Judge:
    """The judge, trained once per bench folder and cached with its own test accuracy."""
    folder = cfg.out / "judge"
    settings = cfg.judge_settings()
    info = (
        json.loads((folder / "judge.json").read_text()) if (folder / "judge.json").is_file() else {}
    )
    if info.get("settings") == asdict(settings):
        return Judge(TargetModel.load(folder), info["train_seconds"], settings)
    log(f"training the judge on {settings.n_train} of its own clean problems")
    judge = train_judge(base, settings)
    accuracy = judge_accuracy(judge, test)
    judge.model.save(folder)
    info = {
        "settings": asdict(settings),
        "train_seconds": judge.train_seconds,
        "test_accuracy": accuracy,
    }
    atomic_write_text(folder / "judge.json", json.dumps(info, indent=1) + "\n")
    log(f"judge: test accuracy {accuracy:.3f}, trained in {judge.train_seconds:.0f}s")
    return judge


def select_all(
    cfg: BenchConfig, level: NoiseLevel, judge: Callable[[], Judge]
) -> dict[str, SelectionResult]:
    """Every selection the plan needs for this noise level, cached in selections.json."""
    path = level.folder / "selections.json"
    cache: dict[str, dict] = json.loads(path.read_text()) if path.is_file() else {}
    table = read_scores(level.scores_path)
    less_table = read_scores(level.folder / "less.parquet") if level.less else None
    proxy: BuiltinProxy | None = None
    out: dict[str, SelectionResult] = {}
    for method, keep in cfg.plan():
        for seed in cfg.seeds if method in SEEDED_SELECTIONS else cfg.seeds[:1]:
            key = selection_key(method, keep, seed)
            if key not in cache:
                if method in PROXY_METHODS and proxy is None:
                    proxy = BuiltinProxy.load(level.folder / "proxy")
                inputs = SelectorInputs(
                    level.pool,
                    scores=table,
                    proxy=proxy,
                    seed=seed,
                    less_scores=less_table,
                    target_families=tuple(cfg.target),
                )
                if method == "judge":
                    result = judge_select(judge(), level.pool)
                else:
                    result = SELECTORS[method](inputs, keep if keep is not None else 1.0)
                result.select_seconds += selection_overhead(method, level)
                cache[key] = asdict(result)
                atomic_write_text(path, json.dumps(cache) + "\n")
            out[key] = SelectionResult(**cache[key])
    return out


def selection_overhead(method: str, level: NoiseLevel) -> float:
    """Cost a selector depends on beyond its own timing: the OST score run it reads, or the
    proxy warm-up its forward passes use."""
    if method in SCORE_TABLE_METHODS:
        return level.score_seconds
    if method in PROXY_METHODS:
        return level.warmup_seconds
    if method == "loss_filter":  # a user's loss filter: the warm-up and one forward pass
        return level.warmup_seconds + loss_pass_seconds(level.folder, level.pool)
    if method == "less" and level.less is not None:
        return level.less.score_seconds
    return 0.0  # full, random, the oracles; the judge times its own inference


# --- the runs -----------------------------------------------------------------------------


def read_runs(path: Path) -> dict[str, dict]:
    """Finished runs by key; a torn last line (crash mid-write) is ignored and redone."""
    runs: dict[str, dict] = {}
    if not path.is_file():
        return runs
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        runs[row["key"]] = row
    return runs


def append_run(path: Path, row: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()


def training_jobs(cfg: BenchConfig) -> Iterator[tuple[str, float | None, str, int]]:
    for seed in cfg.seeds:
        for protocol in cfg.protocols:
            for method, keep in cfg.plan():
                yield method, keep, protocol, seed


def run_bench(cfg: BenchConfig) -> list[dict]:
    """Run (or continue) the bench; returns every finished run's row."""
    start = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg.out / "config.json", json.dumps(cfg.to_dict(), indent=1) + "\n")
    runs_path = cfg.out / "runs.jsonl"
    done = read_runs(runs_path)

    base = get_base_model(cache_root(cfg), seed=0, config=cfg.base)
    judge_box: dict[str, Judge] = {}
    context: dict[str, Any] = {
        "machine": machine(),
        "levels": {},
        "protocol_note": cfg.protocol_note(),
    }

    for noise in cfg.noise_rates:
        level = prepare_level(cfg, noise)
        base_acc = cached_json(
            level.folder / "base_accuracy.json",
            lambda level=level: {"accuracy": evaluate(base, level.test).accuracy},
        )["accuracy"]

        def lazy_judge(test: list[Record] = level.test) -> Judge:
            if "judge" not in judge_box:
                judge_box["judge"] = get_judge(cfg, base, test)
            return judge_box["judge"]

        selections = select_all(cfg, level, lazy_judge)
        found = detection(level, selections)
        context["levels"][f"{noise:g}"] = {
            "base_accuracy": base_acc,
            "detection": found,
            "score_seconds": level.score_seconds,
            "proxy": proxy_competence(cfg, level, found),
            **({"audit": level.audit} if level.audit else {}),
        }
        for method, keep, protocol, seed in training_jobs(cfg):
            key = run_key(noise, method, keep, protocol, seed)
            if key in done:
                continue
            twin = run_key(noise, method, keep, "A", seed)
            if method == "full" and protocol == "B" and twin in done:
                # full-SFT under A *is* protocol B's budget: the same run, not trained twice
                row = {**done[twin], "protocol": "B", "note": "the protocol-A run (same steps)"}
            else:
                sel = selections[selection_key(method, keep, seed)]
                row = train_and_evaluate(cfg, base, level, sel, method, keep, protocol, seed)
            row.update(key=key, base_accuracy=base_acc)
            append_run(runs_path, row)
            done[key] = row
            log(
                f"noise {noise:.0%} {protocol} seed {seed} {method} keep "
                f"{row['train_samples']}: accuracy {row['accuracy']:.3f} "
                f"(base {base_acc:.3f}), train {row['train_seconds']:.0f}s"
            )
    if "judge" in cfg.methods:
        context["judge"] = judge_info(cfg)
    context["seconds"] = time.perf_counter() - start
    # report what this command asked for, even when runs.jsonl holds other commands' runs
    planned = [
        run_key(noise, method, keep, protocol, seed)
        for noise in cfg.noise_rates
        for method, keep, protocol, seed in training_jobs(cfg)
    ]
    rows = [done[key] for key in planned if key in done]
    write_reports(cfg, rows, context)
    return rows


def judge_info(cfg: BenchConfig) -> dict:
    path = cfg.out / "judge" / "judge.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def train_and_evaluate(
    cfg: BenchConfig,
    base: TargetModel,
    level: NoiseLevel,
    sel: SelectionResult,
    method: str,
    keep: float | None,
    protocol: str,
    seed: int,
) -> dict:
    by_id = {r.id: r for r in level.pool}
    subset = [by_id[i] for i in sel.kept_ids]
    if not subset:  # e.g. a judge that agrees with nothing: training on nothing is the base
        model, stats = base, TrainStats(0.0, 0, 0)
    elif protocol == "A":
        model, stats = finetune(
            base, subset, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed
        )
    else:
        model, stats = finetune(
            base,
            subset,
            steps=cfg.full_steps(),
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            seed=seed,
        )
    result = evaluate(model, level.test)
    return {
        "method": method,
        "keep": keep if keep is not None else round(len(subset) / len(level.pool), 4),
        "keep_rule": "fraction" if keep is not None else "method",
        "protocol": protocol,
        "seed": seed,
        "noise": level.noise,
        "accuracy": result.accuracy,
        "train_seconds": stats.seconds,
        "select_seconds": sel.select_seconds,
        "train_samples": len(subset),
        "train_steps": stats.steps,
        "wrong_share": wrong_share(level.pool, sel.kept_ids),
        "target_share": target_share(level.pool, sel.kept_ids, cfg.target),
        "redundant_share": redundant_share(level.pool, sel.kept_ids),
        "eval_seconds": result.seconds,
    }


# --- noise detection ----------------------------------------------------------------------


def wrong_share(pool: list[Record], kept: list[str]) -> float:
    tags = noise_tags(pool)
    return float(np.mean([tags[i] not in NOT_WRONG for i in kept])) if kept else float("nan")


def target_share(pool: list[Record], kept: list[str], target: tuple[str, ...]) -> float:
    """Share of the kept samples from the target families (hidden `family` tag)."""
    if not kept:
        return float("nan")
    by_id = {r.id: r for r in pool}
    return float(np.mean([by_id[i].metadata["meta"].get("family", "chain") in target
                          for i in kept]))  # fmt: skip


def proxy_competence(cfg: BenchConfig, level: NoiseLevel, found: dict) -> dict:
    """How the proxy started, the anchors' loss on it after the warm-up, and whether its own
    loss sees misread digits (AUROC 0.5 = it cannot read)."""
    per_type = found["per_type"].get("proxy loss (low = keep)", {})
    return {
        "start": cfg.proxy_start,
        "anchor_loss": level.ost.anchor_loss,
        "misread_auroc": per_type.get("misread"),
        "sys_misread_auroc": per_type.get("sys_misread"),
    }


def redundant_share(pool: list[Record], kept: list[str]) -> float:
    """Share of the kept samples that repeat a problem already kept (a near-duplicate and
    the clean sample it copies count as one problem)."""
    if not kept:
        return float("nan")
    by_id = {r.id: r for r in pool}
    sources = [by_id[i].metadata["meta"].get("duplicate_of", i) for i in kept]
    return 1.0 - len(set(sources)) / len(kept)


def anchor_diagnostics(path: Path, noise: list[str]) -> dict:
    """Harmful flags before (utility < 0) and after calibration, anchor reliability, and
    the mean utility towards each anchor group per noise type, where the score file has the
    columns (fold_utility, group_utility)."""
    from stepsift.select.harmful import Policy, harmful_flags
    from stepsift.select.reliability import calibrated_harmful, split_half_reliability
    from stepsift.select.score_data import matrix_column, score_data

    table = read_scores(path)
    settings = read_settings(path)
    data = score_data(table, path, settings)
    out: dict[str, Any] = {"harmful_negative": flag_quality(data.utility < 0, noise)}
    if data.fold_utility is not None and data.fold_utility.shape[1] >= 2:
        sizes = data.fold_sizes
        for name, correction in (("harmful_calibrated", "none"), ("harmful_calibrated_bh", "bh")):
            flags = calibrated_harmful(data.utility, data.fold_utility, sizes,
                                       correction=correction)  # fmt: skip
            out[name] = flag_quality(flags, noise)
        out["harmful_default"] = flag_quality(harmful_flags(data, Policy())[0], noise)
        rel = split_half_reliability(data.fold_utility, sizes)
        out["reliability"] = asdict(rel)
    groups = matrix_column(table, "group_utility", path)
    names = settings.get("anchor_groups")
    if groups is not None and names:
        types = sorted(set(noise))
        tags = np.array(noise)
        out["group_utility"] = {
            "groups": list(names),
            "by_noise": {t: groups[tags == t].mean(axis=0).tolist() for t in types},
        }
    return out


def detection(level: NoiseLevel, selections: dict[str, SelectionResult]) -> dict:
    """AUROC of each selector's ranking against the noise tags, and harmful-flag precision."""
    scores = read_scores(level.scores_path)
    table = scores.to_pydict()
    tags = noise_tags(level.pool)
    ids = table["id"]
    noise = [tags[i] for i in ids]
    scorers: dict[str, np.ndarray] = {
        "ost (utility)": np.asarray(table["utility"], dtype=float),
        "proxy loss (low = keep)": -np.asarray(table["loss"], dtype=float),
        "high_loss (high = keep)": np.asarray(table["loss"], dtype=float),
    }
    # the whole pool (keep 100%) in the order the default selection takes it
    place = {i: p for p, i in enumerate(stepsift_default(scores, 1.0).kept_ids)}
    scorers["stepsift default (order)"] = -np.array([place[i] for i in ids], dtype=float)
    for key, sel in selections.items():
        if sel.scores and key.split("@")[0] in ("ifd", "deita", "judge"):
            name = {"ifd": "ifd (IFD <= 1, high = keep)", "deita": "deita (score)"}.get(
                sel.name, "judge (agrees)"
            )
            scorers[name] = np.array([sel.scores[i] for i in ids], dtype=float)
            if sel.name == "ifd":  # the selector excludes IFD > 1: rank those last
                scorers[name][scorers[name] > 1] = np.nan
    if level.less is not None:
        less = read_scores(level.folder / "less.parquet").to_pydict()
        by_id = dict(zip(less["id"], less["utility"], strict=True))
        scorers["less (cosine)"] = np.array([by_id[i] for i in ids], dtype=float)
    out: dict[str, Any] = {"auroc": {}, "per_type": {}}
    for name, s in scorers.items():
        s = np.where(np.isfinite(s), s, np.nanmin(s[np.isfinite(s)]) - 1.0)  # undefined: last
        out["auroc"][name] = noise_auroc(s, noise)
        out["per_type"][name] = per_type_auroc(s, noise)
    out["wrong_share_pool"] = float(np.mean([t not in NOT_WRONG for t in noise]))
    out["harmful_flagged"] = int(sum(table["harmful"]))
    out["harmful_precision"] = harmful_precision(table["harmful"], noise)
    out.update(anchor_diagnostics(level.scores_path, noise))
    return out


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
