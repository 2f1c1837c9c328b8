"""Tests for neggrad.core.groups: group kinds, with and without abstentions, and bad input."""

import pytest
import torch

from neggrad.core.groups import group_kinds

# A mixed group, then the two zero-variance kinds.
CORRECT = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)


def test_group_kinds():
    kinds = group_kinds(CORRECT)
    assert kinds["mixed"].tolist() == [True, False, False]
    assert kinds["all_wrong"].tolist() == [False, True, False]
    assert kinds["all_correct"].tolist() == [False, False, True]


def test_group_kinds_partition_every_group():
    correct = torch.rand(50, 3, generator=torch.Generator().manual_seed(0)) < 0.5
    kinds = group_kinds(correct)
    assert torch.equal(sum(mask.long() for mask in kinds.values()), torch.ones(50, dtype=torch.long))


def test_bad_input_is_refused():
    function = group_kinds
    with pytest.raises(ValueError, match=r"shape \(P, G\) with G >= 2"):
        function(torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"shape \(P, G\) with G >= 2"):
        function(torch.ones(4, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        function(torch.ones(4, 2))


def test_abstained_answers_leave_the_kind_of_their_group():
    # docs/algorithms.md §1.3: abstentions (verifier timeouts) do not count; no scorable answer: unscorable
    correct = torch.tensor([[1, 0, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1]], dtype=torch.bool)
    scorable = torch.tensor([[1, 0, 1, 1], [1, 1, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    kinds = group_kinds(correct, scorable)
    assert kinds["all_correct"].tolist() == [True, False, False, False]
    assert kinds["all_wrong"].tolist() == [False, True, False, False]
    assert kinds["unscorable"].tolist() == [False, False, True, False]
    assert kinds["mixed"].tolist() == [False, False, False, True]
    assert not group_kinds(correct)["unscorable"].any()  # every answer scored
