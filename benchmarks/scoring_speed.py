"""What each utility estimator costs per candidate, and how faithfully it ranks.

On the built-in proxy warmed up on the benchmark's pool, side by side in one run:
  - cost per candidate of a plain forward pass (the floor), one training step
    (forward + backward of the batch), and every estimator, in seconds and as
    forward-equivalents (seconds / the forward's seconds), with peak memory;
  - agreement of each estimator with `exact` (Spearman, and the overlap of the top 20%)
    under SGD at η = 1e-3, 1e-2, 1e-1 and under the default step (Adam continuing the
    warm-up's state at its lr).

Timing is interleaved: every method runs on batch 1, then every method on batch 2, ...,
so a machine that slows down mid-run slows all of them alike.

    python benchmarks/scoring_speed.py --candidates 96 --json runs/scoring_speed.json
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from stepsift.bench.generate import write_benchmark
from stepsift.data import read_records
from stepsift.engine.scoring import length_sorted
from stepsift.proxy.base import Batch, Proxy
from stepsift.proxy.builtin import BuiltinProxy
from stepsift.proxy.warmup import WarmupSettings, warm_up
from stepsift.utility.base import UtilityEstimator
from stepsift.utility.curvature import CurvatureUtility
from stepsift.utility.exact import ExactUtility
from stepsift.utility.first_order import FirstOrderUtility
from stepsift.utility.forward_only import ForwardUtility
from stepsift.utility.less import LessScore
from stepsift.utility.steps import SGDStep, StepRule, make_step_rule
from stepsift.utility.subsample import AnchorSubsampleUtility

try:
    from peers import PEER_NAMES, available_peers  # run as a script: its folder is on sys.path
    from tov import ToVStyle
except ImportError:  # imported as a module from the repository root
    from benchmarks.peers import PEER_NAMES, available_peers
    from benchmarks.tov import ToVStyle

ETAS = (1e-3, 1e-2, 1e-1)
# each estimator with its defaults (as `--method` gives it), plus cheaper settings
VARIANTS: dict[str, Callable[[Proxy, Batch, StepRule], UtilityEstimator]] = {
    "exact": ExactUtility,
    "first-order": FirstOrderUtility,
    "curvature": CurvatureUtility,
    "curvature K=4": partial(CurvatureUtility, label_draws=4),
    "curvature r=16": partial(CurvatureUtility, rank=16),
    # the GGN sketch streamed through a frequent-directions buffer (bounded set-up memory)
    "curvature FD": partial(CurvatureUtility, streaming=True),
    # the candidates' per-sample gradients under bf16 autocast (`--grad-autocast`: meant
    # for GPUs; on a CPU without bf16 matrix units it measures fidelity, not speed)
    "curvature bf16": partial(CurvatureUtility, grad_autocast="bfloat16"),
    # forward-only: directional derivatives alone, K curvature directions (default K = 1)
    "forward K=1": ForwardUtility,  # `--method forward` as it is by default
    "forward K=0": partial(ForwardUtility, directions=0),
    "forward K=4": partial(ForwardUtility, directions=4),
    "forward K=16": partial(ForwardUtility, directions=16),
    # the same directional derivatives as ghost products of one batched backward
    # (utility/ghost.py) instead of forward-mode AD: what "auto" falls back to
    "first-order ghost": partial(FirstOrderUtility, mode="ghost"),
    "forward K=1 ghost": partial(ForwardUtility, mode="ghost"),
    "anchor-subsample": AnchorSubsampleUtility,  # exact on a seeded 32 of the anchors
    "less": LessScore,
    "less d=1024": partial(LessScore, dim=1024),
    "ToV-style": ToVStyle,  # benchmarks/tov.py: the anchors' step once, then forwards
}
# peer libraries' scores (benchmarks/peers.py), where the library is installed
PEERS = available_peers()
VARIANTS.update(PEERS)


def step_rule_named(name: str, proxy: Proxy) -> StepRule:
    """The step rule a benchmark's `--rules` item names: "adam" (continuing the proxy's
    warm-up state at its lr), "adam η" (the same state at lr η) or "sgd η"."""
    kind, *lr = name.split()
    if kind == "adam":
        return make_step_rule("adam", float(lr[0]) if lr else None, proxy, 0.0)
    return SGDStep(float(lr[0]))


def top_overlap(reference: np.ndarray, estimate: np.ndarray, fraction: float = 0.2) -> float:
    k = max(1, int(len(reference) * fraction))
    top = set(np.argsort(-reference)[:k])
    return len(top & set(np.argsort(-estimate)[:k])) / k


def floors(proxy: BuiltinProxy) -> dict[str, Callable[[Batch], object]]:
    params = dict(proxy.model.named_parameters())

    def forward(batch: Batch) -> object:
        with torch.no_grad():
            return proxy.per_sample_loss(params, batch.tensors)

    def train_step(batch: Batch) -> object:
        loss = proxy.per_sample_loss(params, batch.tensors).mean()
        return torch.autograd.grad(loss, list(params.values()))

    return {"forward": forward, "train step": train_step}


def warmed_setup(
    pool_size: int, candidates: int, batch_size: int, out: Path, device: torch.device
) -> tuple[BuiltinProxy, list[Batch], Batch]:
    """The benchmark pool (generated once), the built-in proxy warmed up on it (saved
    once), and a seeded sample of candidates cut into length-sorted batches."""
    data = out / f"data-{pool_size}"
    if not (data / "anchors.jsonl").is_file():  # generated once: generation's memory peak
        write_benchmark(data, n_pool=pool_size, n_anchors=100, n_test=10)  # spoils the probes
    pool = read_records(data / "pool.jsonl").records
    anchors = read_records(data / "anchors.jsonl").records
    proxy_dir = out / f"proxy-{pool_size}"
    if (proxy_dir / "proxy.json").is_file():
        proxy = BuiltinProxy.load(proxy_dir)
    else:
        proxy = BuiltinProxy(seed=0)
        warm_up(proxy, pool, WarmupSettings(seed=0), progress=False)
        proxy.save(proxy_dir)
    proxy.model.to(device)
    sample = length_sorted(random.Random(0).sample(pool, min(candidates, len(pool))))
    batches = [proxy.collate(sample[s : s + batch_size]) for s in range(0, len(sample), batch_size)]
    return proxy, batches, proxy.collate(anchors)


def time_methods(
    methods: dict[str, Callable[[Batch], object]],
    batches: list[Batch],
    device: torch.device,
    progress: bool = False,
) -> dict[str, float]:
    """Seconds per candidate of each method, interleaved batch by batch. `progress` prints
    each batch's seconds as they come, so a run cut short still leaves figures."""
    seconds: dict[str, float] = defaultdict(float)
    for i, batch in enumerate(batches):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            took = time.perf_counter() - start
            seconds[name] += took
            if progress:
                print(
                    f"batch {i + 1}/{len(batches)} ({len(batch)}) {name}: {took:.1f} s", flush=True
                )
    n = sum(len(b) for b in batches)
    return {k: v / n for k, v in seconds.items()}


def peak_memory_mb(name: str, argv: list[str]) -> float:
    """Peak memory of a fresh process that sets up `name` and scores the sample with it:
    resident set on CPU (Python and torch included), the allocator's peak on CUDA."""
    out = subprocess.run(
        [sys.executable, __file__, *argv, "--memory-probe", name],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return float(out.strip().splitlines()[-1])


def probe(name: str, timed: dict[str, Callable[[Batch], object]], batches, device) -> None:
    for batch in batches:
        timed[name](batch)
    if device.type == "cuda":
        print(torch.cuda.max_memory_allocated() / 2**20)
        return
    # VmHWM, not getrusage: ru_maxrss carries the parent's peak over fork + exec
    status = Path("/proc/self/status").read_text().splitlines()
    print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024)


def per_rule(agreement: dict, key: str) -> dict[str, dict[str, float]]:
    return {m: {r: a[key] for r, a in by_rule.items()} for m, by_rule in agreement.items()}


def scores(estimator, batches: list[Batch]) -> np.ndarray:
    return np.concatenate([estimator(b).utility.cpu().numpy() for b in batches])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pool", type=int, default=600, help="benchmark pool to warm up on")
    ap.add_argument("--candidates", type=int, default=160, help="candidates scored per method")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--methods", default=",".join(VARIANTS), help="of " + ",".join(VARIANTS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("runs/scoring_speed"))
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument(
        "--memory-only",
        action="store_true",
        help="only measure peak memory (and update peak_mb in --json if it exists)",
    )
    args = ap.parse_args()
    device = torch.device(args.device)
    methods = args.methods.split(",")

    proxy, batches, anchor_batch = warmed_setup(
        args.pool, args.candidates, args.batch_size, args.out, device
    )
    n_candidates = sum(len(b) for b in batches)
    n_params = sum(p.numel() for p in proxy.model.parameters())
    rules: dict[str, StepRule] = {f"sgd {eta:g}": SGDStep(eta) for eta in ETAS}
    rules["adam (default)"] = make_step_rule("adam", None, proxy, 0.0)
    default_rule = rules["adam (default)"]
    timed = floors(proxy)
    clash = set(timed) & set(methods)
    if clash:  # a method named like a floor would replace the unit it is measured in
        raise SystemExit(f"method names clash with the floors: {sorted(clash)}")
    if args.memory_probe:
        name = args.memory_probe
        if name not in timed:
            timed[name] = VARIANTS[name](proxy, anchor_batch, default_rule)
        probe(name, timed, batches, device)
        return
    print(f"proxy: {n_params:,} parameters; {n_candidates} candidates; {len(anchor_batch)} anchors")
    for name in PEER_NAMES:
        if name not in PEERS:
            print(f"{name}: skipped, its library is not installed (pip install stepsift[peers])")
    probe_argv = [
        f"--pool={args.pool}", f"--candidates={args.candidates}",
        f"--batch-size={args.batch_size}", f"--device={args.device}", f"--out={args.out}",
    ]  # fmt: skip
    if args.memory_only:
        peak_mb = {name: peak_memory_mb(name, probe_argv) for name in [*timed, *methods]}
        for name, mb in peak_mb.items():
            print(f"| {name} | {mb:.0f} MB |")
        if args.json and args.json.is_file():
            report = json.loads(args.json.read_text())
            report["peak_mb"] = peak_mb
            args.json.write_text(json.dumps(report, indent=1) + "\n")
        return

    # -- agreement with exact, per step rule ---------------------------------------------
    agreement: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    setup_seconds: dict[str, float] = {}
    for rule_name, rule in rules.items():
        exact = scores(ExactUtility(proxy, anchor_batch, rule), batches)
        for method in methods:
            if method == "exact":
                continue
            start = time.perf_counter()
            est = VARIANTS[method](proxy, anchor_batch, rule)
            setup_seconds[method] = time.perf_counter() - start
            got = scores(est, batches)
            rho = float(spearmanr(exact, got).statistic)
            agreement[method][rule_name] = {"spearman": rho, "top20": top_overlap(exact, got)}
            print(f"{rule_name:>15} {method:>12}: spearman {rho:+.3f}, "
                  f"top-20% overlap {top_overlap(exact, got):.2f}", flush=True)  # fmt: skip

    # -- cost, interleaved --------------------------------------------------------------
    for method in methods:
        timed[method] = VARIANTS[method](proxy, anchor_batch, default_rule)
    per_candidate = time_methods(timed, batches, device)
    peak_mb = {name: peak_memory_mb(name, probe_argv) for name in timed}
    forward = per_candidate["forward"]
    equivalents = {k: v / forward for k, v in per_candidate.items()}

    print("\n| method | s / candidate | forward-equivalents | peak MB | set-up s |"
          + "".join(f" ρ {r} | top-20% {r} |" for r in rules))  # fmt: skip
    print("|---" * (5 + 2 * len(rules)) + "|")
    for name in timed:
        cells = [
            f"{per_candidate[name]:.4f}",
            f"{equivalents[name]:.1f}",
            f"{peak_mb[name]:.0f}",
            f"{setup_seconds.get(name, 0.0):.1f}",
        ]
        for r in rules:
            a = agreement.get(name, {}).get(r)
            cells += [f"{a['spearman']:.3f}", f"{a['top20']:.2f}"] if a else ["", ""]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "forward_equivalents": equivalents,
            "seconds_per_candidate": per_candidate,
            "spearman_vs_exact": per_rule(agreement, "spearman"),
            "top20_overlap_vs_exact": per_rule(agreement, "top20"),
            "peak_mb": peak_mb,
            "setup_seconds": setup_seconds,
            "candidates": n_candidates,
            "parameters": n_params,
            "device": str(device),
            "threads": torch.get_num_threads(),
        }
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
