"""The gradient sketch: inner products of sketches track the gradients' own (on real
per-sample gradients of the tiny proxy), they are unbiased, the Kronecker projection
stays small for big matrices, and the same seed gives the same sketch in another process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from utility_reference import make_record

from stepsift.utility.gradients import per_sample_grads
from stepsift.utility.sketch import GradientSketch, factor

WORDS = "alpha beta gamma delta prime seven eleven noise pixel strip red blue".split()


def records(n: int):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        q = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 7))))
        a = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 6))))
        out.append(make_record(f"r{i}", q + "?", a))
    return out


@pytest.fixture
def grads(proxy):
    params = proxy.step_parameters()
    with torch.no_grad():
        g, _ = per_sample_grads(proxy, params, proxy.collate(records(14)).tensors)
    return params, g


def pair_products(x: torch.Tensor) -> np.ndarray:
    gram = (x.double() @ x.double().T).numpy()
    return gram[np.triu_indices(len(gram), k=1)]


@pytest.mark.parametrize("dense_limit", [1 << 20, 0], ids=["mixed", "kronecker-only"])
def test_sketch_inner_products_track_gradient_inner_products(grads, dense_limit):
    params, g = grads
    flat = torch.cat([t.reshape(t.shape[0], -1) for t in g.values()], dim=1)
    sketch = GradientSketch(params, dim=512, seed=0, dense_limit=dense_limit)
    if dense_limit == 0:
        assert all(kind == "kron" for kind, *_ in sketch.maps.values())
    s = sketch(g)
    assert s.shape == (14, 512) and s.dtype == torch.float32
    exact, approx = pair_products(flat), pair_products(s)
    corr = np.corrcoef(exact, approx)[0, 1]
    assert corr > 0.9, corr
    # squared norms too, within a loose relative band
    ratio = (s.double() ** 2).sum(1) / (flat**2).sum(1)
    assert ratio.min() > 0.5 and ratio.max() < 1.5, ratio


def test_sketch_is_unbiased_over_seeds():
    """Averaged over independent projections, <s_i, s_j> converges to <g_i, g_j>."""
    gen = torch.Generator().manual_seed(0)
    params = {"w": torch.zeros(30, 40), "v": torch.zeros(50), "u": torch.zeros(6, 5, 4)}
    g = {n: torch.randn(3, *p.shape, generator=gen, dtype=torch.float64) for n, p in params.items()}
    flat = torch.cat([t.reshape(3, -1) for t in g.values()], dim=1)
    exact = flat @ flat.T
    for dense_limit in (1 << 20, 0):
        runs = torch.stack(
            [GradientSketch(params, 16, seed, dense_limit)(g).double() for seed in range(400)]
        )
        gram = runs @ runs.transpose(1, 2)  # (seeds, 3, 3)
        mean, sem = gram.mean(0), gram.std(0) / 400**0.5
        assert torch.all((mean - exact).abs() < 4 * sem + 1e-9), (dense_limit, mean, exact)


def test_kronecker_projection_keeps_a_few_floats_per_row_and_column():
    big = {"w": torch.empty(4096, 4096, device="meta"), "b": torch.empty(4096, device="meta")}
    sketch = GradientSketch(big, dim=64, seed=0)
    assert factor(64) == (8, 8) and factor(61) == (1, 61) and factor(512) == (16, 32)
    kind, a, b = sketch.maps["w"]
    assert kind == "kron" and a.shape == (8, 4096) and b.shape == (8, 4096)
    assert sketch.maps["b"][0] == "dense"  # 4096 x 64 is small
    assert sketch.floats == 2 * 8 * 4096 + 64 * 4096  # not 64 x 16.8M


def test_same_seed_same_sketch_in_another_process(grads):
    params, g = grads
    shapes = {n: tuple(p.shape) for n, p in params.items()}
    here = GradientSketch(params, dim=32, seed=5, dense_limit=4096)(g)
    gen = torch.Generator().manual_seed(1)
    fixed = {n: torch.randn(2, *s, generator=gen, dtype=torch.float64) for n, s in shapes.items()}
    expected = GradientSketch(params, dim=32, seed=5, dense_limit=4096)(fixed)
    code = textwrap.dedent(
        f"""
        import sys, torch
        from stepsift.utility.sketch import GradientSketch
        shapes = {shapes!r}
        params = {{n: torch.zeros(s, dtype=torch.float64) for n, s in shapes.items()}}
        gen = torch.Generator().manual_seed(1)
        g = {{n: torch.randn(2, *s, generator=gen, dtype=torch.float64) for n, s in shapes.items()}}
        torch.save(GradientSketch(params, dim=32, seed=5, dense_limit=4096)(g), sys.argv[1])
        """
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/sketch.pt"
        subprocess.run([sys.executable, "-c", code, out], check=True)
        there = torch.load(out)
    assert torch.equal(there, expected)
    assert here.shape == (14, 32)
    other = GradientSketch(params, dim=32, seed=6, dense_limit=4096)(fixed)
    assert not torch.allclose(other, expected)  # another seed, another projection
