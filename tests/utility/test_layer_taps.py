"""Per-sample gradients read off one batched backward pass (utility/layer_taps.py) equal
the per-sample loop's, in float64; whatever the read-off cannot see falls back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stepsift.utility.ghost import ghost_sq_norms, tapped_dots
from stepsift.utility.gradients import looped_grads, per_sample_grads, per_sample_method
from stepsift.utility.layer_taps import NotReadable, TapPlan, tapped_grads


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12, msg=name)


def test_builtin_proxy_gradients_are_read_off_and_equal_the_loop(proxy, candidates):
    tensors = proxy.collate(candidates).tensors
    params = proxy.step_parameters()
    assert per_sample_method(proxy, params) == "vmap"  # auto: vmap where it works
    proxy.per_sample_mode = "read-off"
    assert per_sample_method(proxy, params) == "layer read-off"
    got, loss = per_sample_grads(proxy, params, tensors)
    want, want_loss = looped_grads(proxy, params, tensors)
    assert_same(got, want)
    torch.testing.assert_close(loss, want_loss)
    # every kind of layer is in there: convolutions, embeddings, norms, linears
    assert any("conv" in n for n in got) and any("ln" in n for n in got)
    assert all(got[n].abs().sum() > 0 for n in ("token_emb.weight", "pos_emb.weight"))


def test_a_restricted_step_reads_off_only_its_parameters(proxy, candidates):
    tensors = proxy.collate(candidates).tensors
    proxy.restrict_step(r"head|blocks\.1\.fc")
    proxy.per_sample_mode = "read-off"
    params = proxy.step_parameters()
    assert per_sample_method(proxy, params) == "layer read-off"
    got, _ = per_sample_grads(proxy, params, tensors)
    assert_same(got, looped_grads(proxy, params, tensors)[0])


def test_ghost_norms_equal_the_read_off_gradients_norms():
    torch.manual_seed(0)
    x, g = torch.randn(3, 5, 7, dtype=torch.float64), torch.randn(3, 5, 4, dtype=torch.float64)
    full = torch.einsum("bto,bti->boi", g, x)
    torch.testing.assert_close(ghost_sq_norms(x, g), (full**2).sum((1, 2)))


class SlicedTable(nn.Module):
    """A positional table sliced by hand as well as called: the read-off misses a use."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4).double()
        self.lin = nn.Linear(4, 1).double()

    def forward(self, ids):
        return self.lin(self.emb(ids) + self.emb.weight[: ids.shape[1]]).sum((1, 2))


def test_a_parameter_used_outside_its_module_fails_the_check():
    model = SlicedTable()
    params = {n: p.detach() for n, p in model.named_parameters()}
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])

    def loss(p):
        return torch.func.functional_call(model, p, (ids,))

    plan = TapPlan.build(model, list(params))
    with pytest.raises(NotReadable, match="emb.weight is used outside"):
        tapped_grads(model, plan, loss, params, 2)
    assert not plan.checked


def per_sample_by_loop(model: nn.Module, params: dict, loss, n: int) -> dict:
    """Reference: a backward pass per sample."""
    out = {name: [] for name in params}
    for i in range(n):
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        grads = torch.autograd.grad(
            loss(leaves)[i], list(leaves.values()), allow_unused=True, materialize_grads=True
        )
        for name, g in zip(leaves, grads, strict=True):
            out[name].append(g)
    return {name: torch.stack(gs) for name, gs in out.items()}


class RMSNorm(nn.Module):
    """Hugging Face's (LlamaRMSNorm's) formula, under a name the read-off recognises."""

    def __init__(self, d: int, scale: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(d, dtype=torch.float64) + 0.5)
        self.variance_epsilon = 1e-6
        self.scale = scale  # anything but 1: a variant the read-off's formula gets wrong

    def forward(self, x):
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * (self.scale * x32.to(x.dtype))


class TiedHeadOnPickedRows(nn.Module):
    """An HF-shaped language model: embedding, RMS norm, and an output head tied to the
    embedding and applied only to picked positions, flattened into rows."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.emb = nn.Embedding(11, 6).double()
        self.norm = RMSNorm(6, scale)
        self.head = nn.Linear(6, 11, bias=False).double()
        self.head.weight = self.emb.weight

    def forward(self, ids, mask):
        rows, cols = mask.nonzero(as_tuple=True)
        logits = self.head(self.norm(self.emb(ids))[rows, cols])
        labels = (ids[rows, cols] + 1) % 11
        token = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        return torch.zeros(ids.shape[0], dtype=token.dtype).index_add(0, rows, token)


def tied_case(scale: float = 1.0):
    torch.manual_seed(0)
    model = TiedHeadOnPickedRows(scale)
    ids = torch.randint(0, 11, (3, 5))
    mask = torch.tensor([[0, 1, 1, 0, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p):
        return torch.func.functional_call(model, p, (ids, mask))

    return model, params, loss, (model.head,), mask.nonzero(as_tuple=True)[0]


def test_a_tied_head_on_picked_rows_and_an_rms_norm_are_read_off():
    model, params, loss, flat_modules, rows = tied_case()
    assert set(params) == {"emb.weight", "norm.weight"}  # the head's weight is the embedding's
    plan = TapPlan.build(model, list(params))
    assert len(plan.owners["emb.weight"]) == 2
    got, _ = tapped_grads(model, plan, loss, params, 3, (flat_modules, rows))
    assert plan.checked
    assert_same(got, per_sample_by_loop(model, params, loss, 3))


def test_a_flattened_call_not_declared_as_such_is_refused():
    model, params, loss, _, _ = tied_case()
    plan = TapPlan.build(model, list(params))
    with pytest.raises(NotReadable, match="Linear called on 7 rows"):
        tapped_grads(model, plan, loss, params, 3)


def test_an_rms_norm_computing_otherwise_fails_the_check():
    model, params, loss, flat_modules, rows = tied_case(scale=2.0)
    plan = TapPlan.build(model, list(params))
    with pytest.raises(NotReadable, match="norm.weight is used outside"):
        tapped_grads(model, plan, loss, params, 3, (flat_modules, rows))


def test_unreadable_modules_are_refused():
    grouped = nn.Conv2d(4, 4, 3, groups=2)
    with pytest.raises(NotReadable, match="grouped"):
        TapPlan.build(grouped, ["weight"])
    with pytest.raises(NotReadable, match="GRU is not one of"):
        TapPlan.build(nn.GRU(3, 3), ["weight_ih_l0"])


def test_loop_mode_turns_the_read_off_off(proxy, candidates):
    proxy.per_sample_mode = "loop"
    params = proxy.step_parameters()
    assert per_sample_method(proxy, params) == "vmap"
    got, _ = per_sample_grads(proxy, params, proxy.collate(candidates).tensors)
    assert not proxy.__dict__.get("_tap_plans")
    assert got["head.weight"].shape[0] == len(candidates)


def test_an_unknown_mode_is_refused(proxy):
    proxy.per_sample_mode = "fast"
    with pytest.raises(ValueError, match="unknown per_sample_mode 'fast'"):
        per_sample_method(proxy, proxy.step_parameters())


def test_ghost_products_equal_the_read_off_gradients_products(proxy, candidates):
    """<g_i, d_m> without forming g_i, through convolutions, embeddings, norms and
    linears (the built-in proxy) and a tied head on flattened rows with an RMS norm."""
    tensors = proxy.collate(candidates).tensors
    params = proxy.step_parameters()
    torch.manual_seed(1)
    directions = {n: torch.randn(3, *p.shape, dtype=p.dtype) for n, p in params.items()}
    n = len(candidates)
    plan = TapPlan.build(proxy.model, list(params))
    losses, dots = tapped_dots(
        proxy.model, plan, lambda p: proxy.per_sample_loss(p, tensors), params, n, directions
    )
    assert plan.checked and dots.shape == (3, n)
    grads, want_losses = looped_grads(proxy, params, tensors)
    want = sum(
        torch.einsum("mk,nk->mn", directions[k].reshape(3, -1), g.reshape(n, -1))
        for k, g in grads.items()
    )
    torch.testing.assert_close(dots, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(losses, want_losses)

    model, params, loss, flat_modules, rows = tied_case()
    directions = {k: torch.randn(2, *p.shape, dtype=p.dtype) for k, p in params.items()}
    plan = TapPlan.build(model, list(params))
    _, dots = tapped_dots(model, plan, loss, params, 3, directions, (flat_modules, rows))
    grads = per_sample_by_loop(model, params, loss, 3)
    want = sum(
        torch.einsum("mk,nk->mn", directions[k].reshape(2, -1), g.reshape(3, -1))
        for k, g in grads.items()
    )
    torch.testing.assert_close(dots, want, rtol=1e-10, atol=1e-12)


def test_ghost_products_check_their_first_batch():
    model = SlicedTable()
    params = {n: p.detach() for n, p in model.named_parameters()}
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    directions = {n: torch.ones(1, *p.shape, dtype=p.dtype) for n, p in params.items()}

    def loss(p):
        return torch.func.functional_call(model, p, (ids,))

    plan = TapPlan.build(model, list(params))
    with pytest.raises(NotReadable, match="emb.weight is used outside"):
        tapped_dots(model, plan, loss, params, 2, directions)


class OneBranch(nn.Module):
    """A layer this batch never calls (a vision tower's adapters on a text batch)."""

    def __init__(self):
        super().__init__()
        self.used = nn.Linear(3, 2).double()
        self.unused = nn.Linear(3, 2).double()

    def forward(self, x):
        return self.used(x).sum((1, 2))


def test_a_module_the_batch_never_calls_reads_as_zero():
    model = OneBranch()
    params = {n: p.detach() for n, p in model.named_parameters()}
    x = torch.randn(4, 5, 3, dtype=torch.float64)

    def loss(p):
        return torch.func.functional_call(model, p, (x,))

    plan = TapPlan.build(model, list(params))
    got, _ = tapped_grads(model, plan, loss, params, 4)
    assert plan.checked
    assert_same(got, per_sample_by_loop(model, params, loss, 4))
    assert got["unused.weight"].shape == (4, 2, 3) and not got["unused.weight"].any()
    directions = {n: torch.ones(2, *p.shape, dtype=p.dtype) for n, p in params.items()}
    _, dots = tapped_dots(model, TapPlan.build(model, list(params)), loss, params, 4, directions)
    want = sum(g.reshape(4, -1).sum(1) for g in got.values())
    torch.testing.assert_close(dots, want.expand(2, 4))
