"""The exact one-step utility against a slow, obviously-correct reference, in float64.

The reference does what training would do, one candidate at a time: deep-copy the
model, backpropagate the candidate's own loss (collated alone), take a real
`torch.optim` step, then average the anchors' losses, each evaluated alone.
U = anchor loss before - anchor loss after.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor
from utility_reference import (
    RTOL,
    adam,
    anchor_mean,
    loss_alone,
    reference,
    sgd,
)

from stepsift.proxy.warmup import WarmupSettings, warm_up
from stepsift.utility.exact import ExactUtility
from stepsift.utility.steps import AdamStep, SGDStep, make_step_rule


def stepsift(proxy, candidates, anchors, rule, **kwargs):
    utility = ExactUtility(proxy, proxy.collate(anchors), rule, **kwargs)
    return utility(proxy.collate(candidates))


def assert_close(actual: Tensor, expected: np.ndarray, rtol: float = RTOL) -> None:
    np.testing.assert_allclose(actual.numpy(), expected, rtol=rtol, atol=0)


# -- tests ------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_sgd_utility_matches_real_sgd_step(proxy, candidates, anchors, strategy) -> None:
    """SGD: U equals the anchor-loss drop after a real torch.optim.SGD step per candidate,
    whichever way the anchors are evaluated at the stacked parameter sets."""
    rule = make_step_rule("sgd", 0.5, proxy, 0.0)
    assert isinstance(rule, SGDStep)
    result = stepsift(proxy, candidates, anchors, rule, strategy=strategy)
    expected, _ = reference(proxy, candidates, anchors, sgd(0.5))
    assert result.utility.dtype == torch.float64 and result.utility.shape == (5,)
    assert np.all(np.abs(expected) > 1e-8), "reference utilities should be clearly non-zero"
    assert_close(result.utility, expected)


def test_fresh_adam_utility_matches_real_adam_step(proxy, candidates, anchors) -> None:
    """Adam from a fresh state (the near-sign step) matches a real torch.optim.Adam step."""
    rule = AdamStep(lr=3e-3, beta1=0.8, beta2=0.99, eps=1e-6)
    result = stepsift(proxy, candidates, anchors, rule)
    expected, _ = reference(proxy, candidates, anchors, adam(3e-3, (0.8, 0.99), 1e-6))
    assert np.all(np.abs(expected) > 1e-8)
    assert_close(result.utility, expected)


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_adam_continuing_warmup_state_matches_real_adam(
    proxy, candidates, anchors, strategy
) -> None:
    """Adam continuing the warm-up's state equals a real Adam loaded with that state."""
    pool = candidates + anchors
    settings = WarmupSettings(min_samples=4, min_steps=3, batch_size=2, fraction=1.0)
    warm_up(proxy, pool, settings, progress=False)
    assert proxy.adam_state and all(st["step"] >= 3 for st in proxy.adam_state.values())
    rule = make_step_rule("adam", None, proxy, 0.0)
    assert isinstance(rule, AdamStep) and rule.state
    result = stepsift(proxy, candidates, anchors, rule, strategy=strategy)
    expected, _ = reference(
        proxy,
        candidates,
        anchors,
        adam(settings.lr, settings.betas, settings.eps, proxy.adam_state),
    )
    # the warm state must matter: a fresh-state Adam gives different utilities
    fresh, _ = reference(proxy, candidates, anchors, adam(settings.lr))
    assert not np.allclose(fresh, expected, rtol=1e-3)
    assert_close(result.utility, expected)


def test_padding_and_images_do_not_change_values(proxy, candidates, anchors) -> None:
    """Each candidate scored in a padded, mixed image/no-image batch equals it scored alone."""
    batch = proxy.collate(candidates)
    assert len(set(batch.tensors["loss_mask"].sum(1).tolist())) > 1  # really different lengths
    assert set(batch.tensors["has_image"].tolist()) == {0.0, 1.0}
    utility = ExactUtility(proxy, proxy.collate(anchors), SGDStep(lr=0.5))
    together = utility(batch)
    for i, cand in enumerate(candidates):
        alone = utility(proxy.collate([cand]))
        torch.testing.assert_close(together.utility[i : i + 1], alone.utility, rtol=1e-9, atol=0)
        torch.testing.assert_close(together.loss[i : i + 1], alone.loss, rtol=1e-9, atol=0)


def test_padded_anchor_batch_matches_anchors_alone(proxy, candidates, anchors) -> None:
    """The anchors' padding in their shared batch does not change the base anchor loss."""
    utility = ExactUtility(proxy, proxy.collate(anchors), SGDStep(lr=0.5))
    assert utility.base_anchor_loss == pytest.approx(
        anchor_mean(proxy, proxy.model, anchors), rel=1e-12
    )


def test_batch_split_gives_same_utilities(proxy, candidates, anchors) -> None:
    """Scoring 5 candidates at once or as 2 + 3 gives the same utilities and losses."""
    utility = ExactUtility(proxy, proxy.collate(anchors), AdamStep(lr=1e-3))
    whole = utility(proxy.collate(candidates))
    first, second = utility(proxy.collate(candidates[:2])), utility(proxy.collate(candidates[2:]))
    split_u = torch.cat([first.utility, second.utility])
    split_l = torch.cat([first.loss, second.loss])
    torch.testing.assert_close(whole.utility, split_u, rtol=1e-9, atol=0)
    torch.testing.assert_close(whole.loss, split_l, rtol=1e-9, atol=0)


def test_max_sequences_chunking_does_not_change_values(proxy, candidates, anchors) -> None:
    """Evaluating the anchors in tiny chunks, either strategy, changes nothing."""
    rule = SGDStep(lr=0.5)
    wide = stepsift(proxy, candidates, anchors, rule)
    for max_sequences, strategy in [(1, "loop"), (1, "vmap"), (2, "vmap"), (7, "vmap")]:
        narrow = stepsift(
            proxy, candidates, anchors, rule, max_sequences=max_sequences, strategy=strategy
        )
        torch.testing.assert_close(narrow.utility, wide.utility, rtol=1e-9, atol=0)


def test_loss_is_the_candidates_own_loss_alone(proxy, candidates, anchors) -> None:
    """`loss` is each candidate's mean token loss before any step, as computed alone."""
    result = stepsift(proxy, candidates, anchors, SGDStep(lr=0.5))
    with torch.no_grad():
        expected = np.array([loss_alone(proxy, proxy.model, c).item() for c in candidates])
    assert result.loss.dtype == torch.float64
    assert_close(result.loss, expected, rtol=1e-10)


@pytest.mark.parametrize(
    ("rule", "make_optimizer"),
    [(SGDStep(lr=0.5), sgd(0.5)), (AdamStep(lr=1e-3), adam(1e-3))],
    ids=["sgd", "adam"],
)
def test_restricted_step_matches_reference_stepping_only_those(
    proxy, candidates, anchors, monkeypatch, rule, make_optimizer
) -> None:
    """With step_parameter_names limited to head + blocks.1, only those params move."""
    names = [
        n
        for n, _ in proxy.model.named_parameters()
        if n == "head.weight" or n.startswith("blocks.1.")
    ]
    all_names = [n for n, _ in proxy.model.named_parameters()]
    assert "head.weight" in names and len(names) < len(all_names)
    monkeypatch.setattr(proxy, "step_parameter_names", lambda: list(names))
    assert sorted(proxy.step_parameters()) == sorted(names)
    result = stepsift(proxy, candidates, anchors, rule)
    expected, _ = reference(proxy, candidates, anchors, make_optimizer, names)
    # stepping everything would give different numbers: the restriction is really applied
    unrestricted, _ = reference(proxy, candidates, anchors, make_optimizer)
    assert not np.allclose(unrestricted, expected, rtol=1e-3)
    assert_close(result.utility, expected)


def test_small_sgd_step_is_first_order(proxy, candidates, anchors) -> None:
    """For a tiny SGD lr, U ~ lr * <g_A, g_i>; a candidate equal to the anchor has U > 0."""
    lr = 1e-5
    model = proxy.model
    params = list(model.parameters())

    def flat_grad(loss: Tensor) -> Tensor:
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])

    g_anchor = flat_grad(sum(loss_alone(proxy, model, a) for a in anchors) / len(anchors))
    first_order = np.array(
        [lr * float(g_anchor @ flat_grad(loss_alone(proxy, model, c))) for c in candidates]
    )
    result = stepsift(proxy, candidates, anchors, SGDStep(lr=lr))
    assert_close(result.utility, first_order, rtol=1e-2)

    # a candidate identical to the (single) anchor: U ~ lr * |g|^2 > 0
    same = stepsift(proxy, [anchors[1]], [anchors[1]], SGDStep(lr=lr))
    g = flat_grad(loss_alone(proxy, model, anchors[1]))
    assert same.utility.item() > 0
    assert same.utility.item() == pytest.approx(lr * float(g @ g), rel=1e-2)
