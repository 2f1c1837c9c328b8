"""Tests for neggrad.core.shaping: reward schemes and DAPO's soft overlong penalty (docs/algorithms.md §5.3)."""

import pytest
import torch

from neggrad.core.shaping import REWARD_MAX, REWARD_SCHEMES, overlong_penalty, scheme_rewards


def test_reward_schemes():
    correct = torch.tensor([[True, False, False, True]])
    assert torch.equal(scheme_rewards(correct, reward_scheme="binary"), torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    assert torch.equal(scheme_rewards(correct, reward_scheme="pm1"), torch.tensor([[1.0, -1.0, -1.0, 1.0]]))


def test_reward_max_is_the_reward_of_a_correct_completion():
    assert set(REWARD_MAX) == set(REWARD_SCHEMES)
    for scheme, reward_max in REWARD_MAX.items():
        assert scheme_rewards(torch.tensor([True]), reward_scheme=scheme).item() == reward_max


def test_vector_9_3_overlong_penalty():
    # L = 20, L_b = 4: no penalty up to L - L_b = 16; then (16 - |y|) / 4: 17 -> -0.25, 18 -> -0.5,
    # 19 -> -0.75, 20 -> -1; beyond L it stays at -1.
    lengths = torch.tensor([10, 16, 17, 18, 19, 20, 21])
    penalty = overlong_penalty(lengths, max_completion_length=20, buffer_len=4)
    expected = torch.tensor([0.0, 0.0, -0.25, -0.5, -0.75, -1.0, -1.0])
    assert torch.allclose(penalty, expected, atol=1e-6, rtol=0)
    # factor scales the whole penalty.
    scaled = overlong_penalty(lengths, max_completion_length=20, buffer_len=4, factor=0.5)
    assert torch.allclose(scaled, 0.5 * expected, atol=1e-6, rtol=0)


def test_zero_buffer_turns_the_penalty_off():
    penalty = overlong_penalty(torch.tensor([5, 20, 25]), max_completion_length=20, buffer_len=0)
    assert torch.equal(penalty, torch.zeros(3))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"unknown reward_scheme 'ternary'.*'binary', 'pm1'"):
        scheme_rewards(torch.tensor([True]), reward_scheme="ternary")
    with pytest.raises(ValueError, match="bool"):
        scheme_rewards(torch.tensor([1.0]), reward_scheme="binary")
    with pytest.raises(ValueError, match=r"buffer_len must be in \[0, max_completion_length=20\], got 21"):
        overlong_penalty(torch.tensor([5]), max_completion_length=20, buffer_len=21)
    with pytest.raises(ValueError, match="buffer_len must be in"):
        overlong_penalty(torch.tensor([5]), max_completion_length=20, buffer_len=-1)
    with pytest.raises(ValueError, match="factor must be >= 0"):
        overlong_penalty(torch.tensor([5]), max_completion_length=20, buffer_len=4, factor=-1.0)
