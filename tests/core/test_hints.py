"""Hand-computed values for docs/algorithms.md §11: the hint ladder and LUFFY's shaped loss."""

import pytest
import torch

from neggrad.core.advantages import group_advantages
from neggrad.core.hints import hint_levels, shaped_offpolicy_loss


def test_ladders():
    assert hint_levels(1) == [] and hint_levels(2) == [1]
    assert hint_levels(5) == [2, 3, 4] and hint_levels(8) == [2, 4, 6]


def test_shaped_loss_values_and_gradients():
    p = torch.tensor([[0.01, 0.1, 0.5, 0.9]])
    logp = p.log().requires_grad_(True)
    loss = shaped_offpolicy_loss(logp, torch.full_like(p, -1.0))  # A = -1: loss = f(p)
    assert loss.tolist() == [pytest.approx([0.090909, 0.5, 0.833333, 0.9], abs=1e-6)]
    loss.sum().backward()
    assert logp.grad.tolist() == [pytest.approx([0.082645, 0.25, 0.138889, 0.09], abs=1e-6)]  # df/dlogp


def test_hinted_response_vector():
    logp = torch.tensor([[0.05, 0.6]]).log().requires_grad_(True)
    loss = shaped_offpolicy_loss(logp, torch.full((1, 2), 0.75))
    assert loss.tolist() == [pytest.approx([-0.25, -0.642857], abs=1e-6)]
    loss.sum().backward()
    assert logp.grad.tolist() == [pytest.approx([-0.166667, -0.091837], abs=1e-6)]


def test_group_advantages_of_the_vector():
    c = torch.tensor([[False, True, False, True]])
    adv = group_advantages(c.float(), method="grpo", correct=c)
    assert adv.tolist() == [pytest.approx([-0.866024, 0.866024, -0.866024, 0.866024], abs=1e-6)]
    seven = torch.tensor([[True] + [False] * 7])
    assert group_advantages(seven.float(), method="grpo", correct=seven, scale_rewards="none")[0, :2].tolist() == (
        pytest.approx([0.875, -0.125])
    )
    assert group_advantages(seven.float(), method="grpo", correct=seven)[0, :2].tolist() == pytest.approx(
        [2.474867, -0.353552], abs=1e-5
    )
