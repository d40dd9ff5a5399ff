"""Extra cost of the score file's optional columns for the `exact` estimator, side by side
in one run: seconds per candidate with no optional column, with K anchor folds, with
folds and anchor groups, with the gradient sketch only, and with all three (the default).

The proxy is the built-in one, warmed up on the pool; the step is the default Adam from
its warm-up state; the anchors are the benchmark's (their `group` field names the problem
template). Configurations are timed in interleaved rounds (the median round is kept), so
machine load hits them alike. Also prints how well sketch inner products track the
gradients' own over the candidates' pairs, and the sketch's projection memory for
transformers of Hugging Face size (meta tensors: nothing is allocated).

    OMP_NUM_THREADS=1 python benchmarks/score_columns_cost.py --candidates 64 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from stepsift.bench.generate import write_benchmark
from stepsift.data import read_records
from stepsift.proxy.builtin import BuiltinProxy
from stepsift.proxy.warmup import WarmupSettings, warm_up
from stepsift.utility.anchor_views import build_views
from stepsift.utility.exact import ExactUtility
from stepsift.utility.gradients import per_sample_grads
from stepsift.utility.sketch import GradientSketch
from stepsift.utility.steps import make_step_rule

CONFIGS = {  # name -> (folds, group field, sketch dim)
    "none": (0, "", 0),
    "folds (K=10)": (10, "", 0),
    "folds + groups": (10, "group", 0),
    "sketch (D=64)": (0, "", 64),
    "all (default)": (10, "group", 64),
}


def hf_sized_params(layers: int, width: int, vocab: int, mlp: int) -> dict[str, torch.Tensor]:
    """A decoder's parameter shapes (q/k/v/o, gate/up/down, norms, embeddings), on meta."""
    shapes = {"embed": (vocab, width), "head": (vocab, width), "final_norm": (width,)}
    for i in range(layers):
        for name in ("q", "k", "v", "o"):
            shapes[f"l{i}.{name}"] = (width, width)
        shapes[f"l{i}.gate"], shapes[f"l{i}.up"] = (mlp, width), (mlp, width)
        shapes[f"l{i}.down"] = (width, mlp)
        shapes[f"l{i}.norm1"], shapes[f"l{i}.norm2"] = (width,), (width,)
    return {n: torch.empty(s, device="meta") for n, s in shapes.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=64)
    ap.add_argument("--anchors", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_benchmark(Path(tmp), n_pool=args.candidates, n_anchors=args.anchors, n_test=1)
        pool = read_records(paths.pool).records
        anchors = read_records(paths.anchors).records
        proxy = BuiltinProxy(seed=0)
        warm_up(proxy, pool, WarmupSettings(), progress=False)
        rule = make_step_rule("adam", None, proxy, 0.01)
        anchor_batch = proxy.collate(anchors)
        batches = [
            proxy.collate(pool[s : s + args.batch_size])
            for s in range(0, len(pool), args.batch_size)
        ]
        estimators = {}
        for name, (folds, field, dim) in CONFIGS.items():
            views = build_views(anchors, folds, field, seed=0)
            estimators[name] = ExactUtility(
                proxy, anchor_batch, rule, views=views, sketch_dim=dim, sketch_seed=0
            )
        n_params = sum(p.numel() for p in proxy.step_parameters().values())
        print(
            f"exact on the built-in proxy ({n_params:,} step parameters), "
            f"{len(pool)} candidates, {len(anchors)} anchors, batch {args.batch_size}, "
            f"torch threads {torch.get_num_threads()}"
        )
        views = build_views(anchors, 10, "group", seed=0)
        groups = dict(zip(views.groups, views.group_sizes, strict=True))
        print(f"anchor folds {views.fold_sizes}, groups {groups}")
        times: dict[str, list[float]] = {name: [] for name in CONFIGS}
        reference = None
        for _ in range(args.rounds):
            for name, est in estimators.items():
                start = time.perf_counter()
                utility = torch.cat([est(b).utility for b in batches])
                times[name].append((time.perf_counter() - start) / len(pool))
                if reference is None:
                    reference = utility
                assert torch.equal(utility, reference), f"{name} changed the utility"
        base = statistics.median(times["none"])
        print(f"{'columns':<16} {'s/candidate':>12} {'vs none':>8}")
        for name, ts in times.items():
            t = statistics.median(ts)
            print(f"{name:<16} {t:>12.5f} {t / base:>7.3f}x")
        print("(utility identical bit for bit in every configuration)")

        print("\nsketch agreement: Pearson r of <s_i, s_j> with <g_i, g_j> over candidate pairs")
        params = proxy.step_parameters()
        with torch.no_grad():
            grads = [per_sample_grads(proxy, params, b.tensors)[0] for b in batches]
        g = {n: torch.cat([part[n] for part in grads]) for n in params}
        flat = torch.cat([t.reshape(t.shape[0], -1) for t in g.values()], dim=1).double()
        pairs = torch.triu_indices(len(flat), len(flat), offset=1)
        exact = (flat @ flat.T)[pairs[0], pairs[1]]
        for dim in (64, 512):
            rs = []
            for seed in range(5):
                s = GradientSketch(params, dim, seed)(g).double()
                approx = (s @ s.T)[pairs[0], pairs[1]]
                rs.append(float(torch.corrcoef(torch.stack([exact, approx]))[0, 1]))
            print(f"  D={dim}: r = " + ", ".join(f"{r:.3f}" for r in rs) + " (seeds 0-4)")

    print("\nsketch projection memory at D=64 (float32), Kronecker for large tensors:")
    for label, shape in {
        "built-in proxy": None,
        "0.5B-shaped decoder (24 x 896, vocab 151936)": (24, 896, 151936, 4864),
        "1.5B-shaped decoder (28 x 1536, vocab 151936)": (28, 1536, 151936, 8960),
    }.items():
        params = proxy.step_parameters() if shape is None else hf_sized_params(*shape)
        n = sum(p.numel() for p in params.values())
        sketch = GradientSketch(params, 64, seed=0)
        dense_mb, kept_mb = n * 64 * 4 / 2**20, sketch.floats * 4 / 2**20
        print(
            f"  {label}: {n / 1e6:,.1f}M parameters, projection {kept_mb:,.1f} MB "
            f"(a dense 64 x P matrix: {dense_mb:,.0f} MB)"
        )


if __name__ == "__main__":
    main()
