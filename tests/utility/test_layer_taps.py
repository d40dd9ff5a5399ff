"""Per-sample gradients read off one batched backward pass (utility/layer_taps.py) equal
the per-sample loop's, in float64; whatever the read-off cannot see falls back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stepsift.utility.gradients import looped_grads, per_sample_grads, per_sample_method
from stepsift.utility.layer_taps import NotReadable, TapPlan, ghost_sq_norms, tapped_grads


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


def test_unreadable_modules_and_tied_weights_are_refused():
    tied = nn.Sequential(nn.Embedding(6, 4), nn.Linear(4, 6, bias=False))
    tied[1].weight = tied[0].weight
    with pytest.raises(NotReadable, match="shared by 2 modules"):
        TapPlan.build(tied, ["0.weight"])
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
