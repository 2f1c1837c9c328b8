"""Partial rewards of docs/algorithms.md §10.2 against hand-computed vectors."""

import math

import pytest
import torch

from neggrad.core.advantages import group_advantages
from neggrad.core.partial_reward import judged_rewards, partial_reward, step_fraction


def test_logistic_values_of_spec_9_9():
    # r = 0.5 * sigmoid(10 * (f - 0.5)); f = 0: 0.5 / (1 + e^5) = 0.5 / 149.413 = 0.003346
    f = torch.tensor([0.0, 0.25, 1 / 3, 0.5, 2 / 3, 0.75, 0.9], dtype=torch.float64)
    expected = [0.003346, 0.037929, 0.079435, 0.25, 0.420565, 0.462071, 0.491007]
    torch.testing.assert_close(partial_reward(f), torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0)
    assert partial_reward(torch.tensor(0.0)).item() == pytest.approx(0.5 / (1 + math.exp(5)))


def test_step_fraction_is_steps_before_the_first_wrong_one():
    # (k, n) = (1, 4) -> 0; (3, 4) -> 2/4; none wrong in 4 steps -> k = n = 4 -> 3/4; (1, 1) -> 0
    f = step_fraction(torch.tensor([1, 3, 4, 1]), torch.tensor([4, 4, 4, 1]))
    assert f.tolist() == [0.0, 0.5, 0.75, 0.0]


@pytest.mark.parametrize(("k", "n"), [(0, 4), (5, 4), (1, 0)])
def test_step_fraction_refuses_impossible_steps(k, n):
    with pytest.raises(ValueError, match="1 <= first_wrong <= num_steps"):
        step_fraction(torch.tensor([k]), torch.tensor([n]))


def _spec_group() -> torch.Tensor:
    # (k, n) = (1,4), (3,4), (4,4), failure -> f 0, 0.5, 0.75, - -> [0.003346, 0.25, 0.462071, 0]
    fraction = step_fraction(torch.tensor([1, 3, 4, 1]), torch.tensor([4, 4, 4, 1]))
    failed = torch.tensor([False, False, False, True])
    return judged_rewards(fraction, failed).view(1, 4)  # (P=1, G=4), unrounded float64


def test_failure_gets_zero_and_the_group_gets_variance():
    rewards = _spec_group()
    torch.testing.assert_close(
        rewards, torch.tensor([[0.003346, 0.25, 0.462071, 0.0]], dtype=torch.float64), atol=1e-6, rtol=0
    )
    assert rewards.std() > 0


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"method": "grpo"}, [-0.790003, 0.320244, 1.274826, -0.805066]),
        ({"method": "grpo", "scale_rewards": "none"}, [-0.175508, 0.071146, 0.283217, -0.178854]),  # Dr. GRPO
        ({"method": "ngrpo"}, [-0.819481, -0.224527, 0.287010, -0.827553]),  # virtual reward 1 joins mean/std
    ],
)
def test_chained_advantages_of_spec_9_9(kwargs, expected):
    # Dr. GRPO by hand: mean = (0.003346 + 0.25 + 0.462071 + 0) / 4 = 0.178854; 0.003346 - 0.178854 = -0.175508
    adv = group_advantages(_spec_group(), **kwargs)
    torch.testing.assert_close(adv, torch.tensor([expected], dtype=torch.float64), atol=1e-6, rtol=0)


def test_pm1_maps_to_between_wrong_and_correct():
    # -1 + 2r: 0.25 -> -0.5; a failure keeps the wrong answer's -1
    rewards = judged_rewards(torch.tensor([0.5, 0.2]), torch.tensor([False, True]), reward_scheme="pm1")
    torch.testing.assert_close(rewards, torch.tensor([-0.5, -1.0]))
    with pytest.raises(ValueError, match="reward_scheme"):
        judged_rewards(torch.tensor([0.5]), torch.tensor([False]), reward_scheme="pm2")


def test_scale_keeps_a_wrong_answer_below_a_correct_one():
    assert partial_reward(torch.tensor(1.0), beta=50.0, gamma=0.0, scale=1.0).item() < 1.0 + 1e-12
    assert partial_reward(torch.tensor(0.99), scale=0.5).item() < 0.5
