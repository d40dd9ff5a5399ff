"""The `stepsift` command. Thin: it parses arguments and calls the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stepsift.data import DataValidationError
from stepsift.engine.scorer import DEFAULT_SGD_LR
from stepsift.engine.scoring import score
from stepsift.engine.settings import DEFAULT_OPTIMIZER, METHODS, ScoreSettings
from stepsift.engine.shards import Shard, merge
from stepsift.proxy.hf_loading import HF_DTYPES, HFOptions
from stepsift.proxy.warmup import WarmupSettings
from stepsift.select.harmful import COVERAGE_MODES, HARMFUL_MODES, Policy
from stepsift.select.topk import parse_keep, select
from stepsift.utility.gradients import AUTOCASTS
from stepsift.utility.steps import OPTIMIZERS

EXIT_BAD_INPUT = 2


def add_score_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score every candidate's one-step utility")
    p.add_argument("candidates", type=Path, help="candidate pool (JSONL or JSON array)")
    p.add_argument("--anchors", type=Path, required=True, help="trusted anchor set (same formats)")
    p.add_argument("--out", type=Path, required=True, help="score file to write (.parquet)")
    p.add_argument(
        "--proxy",
        default="builtin",
        help="'builtin' (tiny VLM, warmed up on the pool), a folder from --save-proxy, or a "
        "Hugging Face causal LM / image-text-to-text model: a local folder or a hub id",
    )
    p.add_argument(
        "--proxy-init",
        type=Path,
        default=None,
        help="with the built-in proxy: a saved proxy folder (a pre-trained checkpoint) whose "
        "weights it starts from instead of random ones; the warm-up on the pool still runs",
    )
    p.add_argument(
        "--method",
        choices=METHODS,
        default=ScoreSettings.method,
        help="utility estimator (see README: cost and agreement with exact)",
    )
    p.add_argument(
        "--less-dim",
        type=int,
        default=ScoreSettings.less_dim,
        help="projection size for --method less",
    )
    p.add_argument(
        "--exact-anchors",
        type=int,
        default=ScoreSettings.exact_anchors,
        help="for --method anchor-subsample: how many of the anchors (a seeded random "
        "subset) the exact utility is evaluated on",
    )
    p.add_argument(
        "--forward-directions",
        type=int,
        default=ScoreSettings.forward_directions,
        metavar="K",
        help="for --method forward: the strongest curvature directions of the anchors' "
        "Gauss-Newton matrix its second-order term is kept to (each adds about one "
        "forward-mode tangent per candidate; 0: first order only)",
    )
    p.add_argument(
        "--streamed-sketch",
        action="store_true",
        help="for --method curvature: build the Gauss-Newton sketch through a frequent-"
        "directions buffer, so its set-up memory is (2 x 64 + 32) parameter vectors "
        "instead of up to 1 GiB (it ranked worse under Adam: see README)",
    )
    p.add_argument(
        "--grad-autocast",
        choices=AUTOCASTS,
        default=ScoreSettings.grad_autocast,
        help="for --method curvature or less: take the candidates' per-sample gradients "
        "under bfloat16 autocast (for a GPU; the anchors' state and the audit stay full "
        "precision; see README)",
    )
    p.add_argument(
        "--audit",
        type=int,
        default=ScoreSettings.audit,
        metavar="N",
        help="with a method other than exact: also score N random candidates exactly and "
        "record how well the method's ranking agrees (Spearman ρ, top-20%% overlap) in the "
        "score file; default the larger of 128 and 1%% of the pool; 0: off",
    )
    p.add_argument(
        "--anchor-folds",
        type=int,
        default=ScoreSettings.anchor_folds,
        metavar="K",
        help="also score each candidate on K disjoint anchor folds (fold_utility column; "
        "what select's reliability and calibrated harmful flags use); 0: off",
    )
    p.add_argument(
        "--anchor-group-field",
        default=ScoreSettings.anchor_group_field,
        metavar="NAME",
        help="anchor records' field naming their group (task, benchmark, ...): a utility per "
        "group (group_utility column) when the anchors carry it; a dotted NAME reaches into "
        "nested objects (meta.task); '' turns groups off",
    )
    p.add_argument(
        "--sketch-dim",
        type=int,
        default=ScoreSettings.sketch_dim,
        metavar="D",
        help="keep a D-dim random projection of each candidate's gradient (sketch column, for "
        "select --diverse); 0: off",
    )
    p.add_argument(
        "--params",
        default=ScoreSettings.params,
        help="parameters the simulated step moves: all, lora, or a regex on their names",
    )
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=DEFAULT_OPTIMIZER,
        help="whose first step to simulate (adam continues the warm-up's state)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"step size; default {DEFAULT_SGD_LR} for sgd, the warm-up's lr for adam",
    )
    w = WarmupSettings()
    p.add_argument(
        "--warmup-fraction",
        type=float,
        default=w.fraction,
        help="fraction of the pool the proxy warms up on (0: no warm-up; a saved proxy never)",
    )
    p.add_argument("--warmup-min-samples", type=int, default=w.min_samples)
    p.add_argument("--warmup-min-steps", type=int, default=w.min_steps)
    p.add_argument("--warmup-lr", type=float, default=w.lr)
    p.add_argument("--batch-size", type=int, default=16, help="candidates per batched step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--image-root",
        type=Path,
        default=None,
        help="resolve relative image paths here (default: each data file's folder)",
    )
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="go on past invalid candidates, writing them to OUT.rejected.jsonl",
    )
    p.add_argument(
        "--harmful-below",
        type=float,
        default=0.0,
        help="flag a candidate harmful when its utility is below this",
    )
    p.add_argument("--save-proxy", type=Path, default=None, help="save the warmed-up proxy here")
    p.add_argument("--dtype", choices=tuple(HF_DTYPES), default="float32")
    p.add_argument(
        "--shard",
        type=Shard.parse,
        default=None,
        metavar="I/N",
        help="score only shard I (0-based) of N into OUT.shard-I-of-N.parquet, for N processes "
        "a scheduler starts; then `stepsift merge OUT`",
    )
    r = p.add_argument_group("distributed scoring (Ray)")
    r.add_argument(
        "--engine",
        choices=("local", "ray"),
        default=ScoreSettings.engine,
        help="score in this process, or as a Ray Data pipeline of --workers actors",
    )
    r.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: local)")
    r.add_argument("--workers", type=int, default=ScoreSettings.workers, help="Ray actors")
    r.add_argument("--cpus-per-worker", type=float, default=ScoreSettings.cpus_per_worker)
    r.add_argument("--gpus-per-worker", type=float, default=ScoreSettings.gpus_per_worker)
    add_hf_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing score file or unfinished run made with other settings",
    )
    p.add_argument(
        "--flush-seconds",
        type=float,
        default=ScoreSettings.flush_seconds,
        help="write finished scores to disk at least this often (what a crash can cost)",
    )
    p.set_defaults(run=run_score)


def add_hf_arguments(p: argparse.ArgumentParser) -> None:
    h = HFOptions()
    g = p.add_argument_group("Hugging Face proxies")
    g.add_argument("--device", default=h.device, help="cpu, cuda, cuda:1, ...")
    g.add_argument(
        "--max-length",
        type=int,
        default=h.max_length,
        help="tokens per record; longer ones are cut at the right and counted as truncated",
    )
    g.add_argument(
        "--attn-implementation",
        default=h.attn_implementation,
        help="eager (default: forward-mode AD and vmap need it) or sdpa, flash_attention_2",
    )
    g.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory")
    g.add_argument("--gguf-file", default=None, help="a GGUF file inside the --proxy folder")
    g.add_argument(
        "--lora-rank", type=int, default=h.lora_rank, help="add LoRA adapters of this rank (peft)"
    )
    g.add_argument("--lora-alpha", type=float, default=h.lora_alpha)
    g.add_argument(
        "--lora-targets",
        default=",".join(h.lora_targets),
        help="comma-separated module names the adapters go on",
    )
    g.add_argument(
        "--chat-template",
        type=Path,
        default=None,
        help="a Jinja chat template file to render records with instead of the model's",
    )


def hf_options_from(args: argparse.Namespace) -> HFOptions:
    return HFOptions(
        device=args.device,
        max_length=args.max_length,
        attn_implementation=args.attn_implementation,
        gradient_checkpointing=args.gradient_checkpointing,
        gguf_file=args.gguf_file,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_targets=[t for t in args.lora_targets.split(",") if t],
        chat_template=args.chat_template.read_text() if args.chat_template else None,
    )


def run_score(args: argparse.Namespace) -> int:
    settings = ScoreSettings(
        proxy=args.proxy,
        proxy_init=args.proxy_init,
        hf=hf_options_from(args),
        method=args.method,
        params=args.params,
        less_dim=args.less_dim,
        exact_anchors=args.exact_anchors,
        forward_directions=args.forward_directions,
        streamed_sketch=args.streamed_sketch,
        grad_autocast=args.grad_autocast,
        audit=args.audit,
        anchor_folds=args.anchor_folds,
        anchor_group_field=args.anchor_group_field,
        sketch_dim=args.sketch_dim,
        optimizer=args.optimizer,
        lr=args.lr,
        warmup=WarmupSettings(
            fraction=args.warmup_fraction,
            min_samples=args.warmup_min_samples,
            min_steps=args.warmup_min_steps,
            lr=args.warmup_lr,
        ),
        batch_size=args.batch_size,
        seed=args.seed,
        image_root=args.image_root,
        skip_invalid=args.skip_invalid,
        harmful_below=args.harmful_below,
        save_proxy=args.save_proxy,
        dtype=args.dtype,
        progress=not args.quiet,
        overwrite=args.overwrite,
        flush_seconds=args.flush_seconds,
        shard=args.shard,
        engine=args.engine,
        ray_address=args.ray_address,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
    )
    summary = score(args.candidates, args.anchors, args.out, settings)
    print("\n".join(summary.lines()))
    return 0


def add_select_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("select", help="write the top candidates by utility, in the input's format")
    p.add_argument("candidates", type=Path)
    p.add_argument("--scores", type=Path, required=True)
    p.add_argument(
        "--keep",
        required=True,
        help="20%%, 0.2, a count such as 5000, a token budget (2M-tokens, 500k-tokens: "
        "supervised tokens from the score file), or auto (the knee of cumulative utility "
        "against tokens over the positive-utility candidates; select prints the cut and why)",
    )
    p.add_argument(
        "--diverse",
        action="store_true",
        help="set-wise greedy selection that leaves out near-duplicates of better candidates "
        "(their gradient sketches' similarity takes away their gain); needs the score "
        "file's `sketch` column",
    )
    p.add_argument(
        "--coverage",
        choices=COVERAGE_MODES,
        default="auto",
        help="auto (default): when the score file has utilities towards 2+ anchor groups "
        "(`score --anchor-group-field`), fill the budget by group in proportion to the "
        "anchors, each group's share by its own utility, so no part of the anchors' task "
        "starves; off: the plain top-k by utility (the paper's OST)",
    )
    p.add_argument(
        "--harmful",
        choices=HARMFUL_MODES,
        default="auto",
        help="which candidates are harmful: calibrated (utility below 0 beyond the anchors' "
        "noise, from the fold_utility column), threshold (utility < the score run's "
        "--harmful-below), auto (calibrated when the file has fold_utility, else the "
        "file's own harmful column)",
    )
    p.add_argument(
        "--harmful-level",
        type=float,
        default=0.05,
        help="one-sided significance level of calibrated harmful flags (default 0.05)",
    )
    p.add_argument(
        "--harmful-correction",
        choices=("none", "bh"),
        default="none",
        help="bh: control the false discovery rate of the calibrated flags over the whole "
        "pool (Benjamini-Hochberg) instead of each flag's level",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--drop-harmful", action="store_true", help="never keep a harmful candidate")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="ignore invalid candidate records (those `score --skip-invalid` rejected)",
    )
    p.add_argument(
        "--image-root",
        type=Path,
        default=None,
        help="as for score: where relative image paths resolve (images are re-validated)",
    )
    p.add_argument(
        "--order",
        choices=("input", "utility"),
        default="input",
        help="write kept records in the input's order or best first",
    )
    p.add_argument(
        "--llamafactory-info",
        metavar="NAME",
        default=None,
        help="also register the output for LLaMA-Factory: add or replace the entry NAME in "
        "dataset_info.json in the output's folder (other entries are kept), with formatting, "
        "columns and tags read from the selected records; train with `dataset: NAME` and "
        "`dataset_dir:` that folder. The output must be *.jsonl or *.json. Image paths are "
        "kept as written: LLaMA-Factory resolves relative ones against its media_dir "
        "(default: the dataset folder), so a warning says when that is not where stepsift "
        "found them. If LLaMA-Factory could not read the selection as one dataset (mixed "
        "formats, content parts, turns not in user/assistant pairs, images without <image> "
        "placeholders) or dataset_info.json is not valid JSON, nothing is written (exit 2)",
    )
    p.set_defaults(run=run_select)


def run_select(args: argparse.Namespace) -> int:
    options = dict(
        drop_harmful=args.drop_harmful,
        skip_invalid=args.skip_invalid,
        order=args.order,
        image_root=args.image_root,
        policy=Policy(
            harmful=args.harmful,
            level=args.harmful_level,
            correction=args.harmful_correction,
            diverse=args.diverse,
            coverage=args.coverage,
        ),
    )
    keep = parse_keep(args.keep)
    info = None
    if args.llamafactory_info is None:
        selection = select(args.candidates, args.scores, keep, args.out, **options)
    else:
        from stepsift.select.llamafactory import select_with_dataset_info

        selection, info = select_with_dataset_info(
            args.candidates, args.scores, keep, args.out, args.llamafactory_info, **options
        )
    print("\n".join(selection.lines()))
    for warning in selection.warnings:
        print(f"stepsift select: warning: {warning}", file=sys.stderr)
    print(f"wrote {args.out}")
    if info is not None:
        for warning in info.warnings:
            print(f"stepsift select: warning: {warning}", file=sys.stderr)
        print(info.line())
    return 0


def add_merge_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="combine the shard files of a `score --shard` run")
    p.add_argument("out", type=Path, help="the --out every shard was given")
    p.set_defaults(run=run_merge)


def run_merge(args: argparse.Namespace) -> int:
    rows, shards = merge(args.out)
    print(f"merged {shards} shards: {rows} candidates, each once -> {args.out}")
    return 0


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the quick benchmark: one seed, protocol B, the main methods (< 10 min)"
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--pool", type=int, default=2000, help="candidate pool size")
    p.add_argument("--noise", type=float, default=0.4, help="fraction of noisy pool samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=None, help="base checkpoint cache folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from stepsift.bench.demo import demo_config
    from stepsift.bench.demo import run_demo as demo

    demo(
        demo_config(
            args.out, args.pool, args.noise, args.seed, not args.quiet, cache_dir=args.cache
        )
    )
    return 0


def _floats(text: str) -> tuple[float, ...]:
    """'0.1,20%,0.5' -> (0.1, 0.2, 0.5)"""
    out = []
    for part in text.split(","):
        part = part.strip()
        out.append(float(part[:-1]) / 100 if part.endswith("%") else float(part))
    return tuple(out)


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split(",") if w.strip())


def _noise_mix(text: str) -> dict[str, float]:
    """'near_duplicate=6,misread=1' -> {"near_duplicate": 6.0, "misread": 1.0}."""
    out: dict[str, float] = {}
    for part in _words(text):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT, got {part!r}")
    return out


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    from stepsift.bench.runner import METHODS as BENCH_METHODS
    from stepsift.bench.runner import PROXY_STARTS, BenchConfig

    d = BenchConfig(out=Path("runs/bench"))  # every default comes from the config itself

    def listed(values: tuple) -> str:
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)

    p = sub.add_parser("bench", help="the full benchmark: every method, protocols A and B, seeds")
    p.add_argument("--out", type=Path, default=d.out)
    p.add_argument(
        "--methods", type=_words, default=d.methods, help=f"of {','.join(BENCH_METHODS)}"
    )
    p.add_argument(
        "--fractions",
        type=_floats,
        default=d.fractions,
        help=f"OST keep fractions (default {listed(d.fractions)})",
    )
    p.add_argument(
        "--random-fractions",
        type=_floats,
        default=d.random_fractions,
        help=f"random-k keep fractions (default {listed(d.random_fractions)})",
    )
    p.add_argument(
        "--baseline-fraction",
        type=float,
        default=d.baseline_fraction,
        help=f"keep fraction of ost_drop_harmful, high_loss, ifd, deita "
        f"(default {d.baseline_fraction:g})",
    )
    p.add_argument("--protocols", type=_words, default=d.protocols)
    p.add_argument("--seeds", type=lambda t: tuple(int(x) for x in _words(t)), default=d.seeds)
    p.add_argument(
        "--noise", type=_floats, default=d.noise_rates, help="noise rate(s), e.g. 0,0.2,0.4,0.6"
    )
    p.add_argument(
        "--noise-mix",
        type=_noise_mix,
        default=d.noise_mix,
        help="weights of the noise types, e.g. near_duplicate=6,misread=1,arithmetic=1 "
        "(unnamed types 0; default: all equal). A near-duplicate-heavy pool: "
        "near_duplicate=6 with the others 1",
    )
    p.add_argument(
        "--target",
        type=_words,
        default=d.target,
        help=f"the target task family/families: anchors and test come from them only "
        f"(default {listed(d.target)}; see bench/families.py)",
    )
    p.add_argument(
        "--target-share",
        type=float,
        default=d.target_share,
        help=f"share of the pool from the target families (default {d.target_share:g}; "
        "1: the old single-family pool)",
    )
    p.add_argument(
        "--families",
        type=_noise_mix,
        default=d.other_families,
        help="weights of the other families in the rest of the pool, e.g. "
        "transcribe=2,text_arith=1 (unnamed ones 0; default: all equal)",
    )
    p.add_argument(
        "--proxy-start",
        choices=PROXY_STARTS,
        default=d.proxy_start,
        help="the proxy starts from a checkpoint pre-trained on a generic corpus of the "
        "world (cached), or from random weights; both are then warmed up on 5%% of the pool",
    )
    p.add_argument(
        "--audit",
        type=int,
        default=d.audit,
        help=f"candidates scored exactly to audit a fast estimator (default {d.audit}; 0 off)",
    )
    p.add_argument("--pool", type=int, default=d.pool_size, help="candidate pool size")
    p.add_argument("--test", type=int, default=d.n_test, help="test set size")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="target batch size")
    p.add_argument("--epochs", type=int, default=d.epochs, help="protocol A's epochs (B: full's)")
    p.add_argument("--lr", type=float, default=d.lr, help="target fine-tuning learning rate")
    p.add_argument(
        "--estimator",
        choices=METHODS,
        default=d.estimator,
        help=f"how OST's scores are computed (default: {d.estimator}, audited against exact)",
    )
    p.add_argument("--cache", type=Path, default=None, help="base checkpoint cache folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from stepsift.bench.runner import BenchConfig
    from stepsift.bench.runner import run_bench as bench

    bench(
        BenchConfig(
            out=args.out,
            methods=args.methods,
            fractions=args.fractions,
            random_fractions=args.random_fractions,
            baseline_fraction=args.baseline_fraction,
            protocols=args.protocols,
            seeds=args.seeds,
            noise_rates=args.noise,
            noise_mix=args.noise_mix,
            target=args.target,
            target_share=args.target_share,
            other_families=args.families,
            proxy_start=args.proxy_start,
            audit=args.audit,
            pool_size=args.pool,
            n_test=args.test,
            batch_size=args.batch_size,
            epochs=args.epochs,
            lr=args.lr,
            estimator=args.estimator,
            cache_dir=args.cache,
            progress=not args.quiet,
        )
    )
    return 0


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    from stepsift.report import DEFAULT_TOP, PAGE_NAME

    p = sub.add_parser(
        "report", help="write a self-contained HTML page (and PNG plots) about a score file"
    )
    p.add_argument("scores", type=Path, help="score file written by `stepsift score`")
    p.add_argument("--candidates", type=Path, required=True, help="the pool that was scored")
    p.add_argument("--out", type=Path, required=True, help=f"folder for {PAGE_NAME} and plots")
    p.add_argument(
        "--top",
        type=int,
        default=DEFAULT_TOP,
        help="how many of the most harmful and of the most useful samples to show",
    )
    p.add_argument(
        "--image-root",
        type=Path,
        default=None,
        help="as for score: where relative image paths resolve",
    )
    p.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    from stepsift.report import write_report

    files = write_report(args.scores, args.candidates, args.out, args.top, args.image_root)
    print("\n".join(files.lines()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stepsift", description="Pick the training data worth training on (one-step utility)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_score_parser(sub)
    add_select_parser(sub)
    add_merge_parser(sub)
    add_demo_parser(sub)
    add_bench_parser(sub)
    add_report_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except DataValidationError as e:
        print(f"stepsift {args.command}: invalid input\n{e}", file=sys.stderr)
        if args.command == "score" and not getattr(args, "skip_invalid", False):
            print("(pass --skip-invalid to go on without these records)", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, ValueError, FloatingPointError) as e:
        print(f"stepsift {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"stepsift {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
