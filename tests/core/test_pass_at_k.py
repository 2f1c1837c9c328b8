"""Unbiased pass@k: the product form matches brute-force enumeration of k-subsets, and stays finite at n = 256."""

from itertools import combinations
from math import comb

import pytest
import torch

from neggrad.core.pass_at_k import pass_at_k, pass_at_k_auc


def brute_force(n: int, c: int, k: int) -> float:
    """Fraction of the k-subsets of n samples (the first c correct) that hold at least one correct sample."""
    subsets = list(combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_matches_enumeration_for_every_c_and_k(n):
    counts = torch.arange(n + 1)  # c = 0 .. n
    for k in range(1, n + 1):
        expected = torch.tensor([brute_force(n, c, k) for c in range(n + 1)], dtype=torch.float64)
        torch.testing.assert_close(pass_at_k(counts, n, k), expected, atol=1e-12, rtol=0)


def test_worked_example():
    # n = 4, c = 1, k = 2: C(3, 2) / C(4, 2) = 3 / 6 fail, so pass@2 = 0.5; pass@1 is c / n = 0.25
    assert pass_at_k(torch.tensor([1]), 4, 2).item() == pytest.approx(0.5)
    assert pass_at_k(torch.tensor([1]), 4, 1).item() == pytest.approx(0.25)


def test_large_n_is_stable():
    # c = 1 of n = 256: pass@k = k / n exactly; C(256, 128) alone is ~5.8e75
    values = pass_at_k(torch.tensor([1, 0, 256]), 256, 128)
    torch.testing.assert_close(values, torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64), atol=1e-12, rtol=0)
    exact = 1 - comb(256 - 3, 64) / comb(256, 64)
    assert pass_at_k(torch.tensor([3]), 256, 64).item() == pytest.approx(exact, abs=1e-12)


def test_bad_k_or_counts_are_refused():
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(torch.tensor([1]), 4, 5)
    with pytest.raises(ValueError, match=r"lie in \[0, 4\]"):
        pass_at_k(torch.tensor([5]), 4, 1)


def test_auc_over_log_k():
    # constant curve -> its value; linear in log k from 0 to 1 -> 0.5
    assert pass_at_k_auc([1, 4, 16], [0.3, 0.3, 0.3]) == pytest.approx(0.3)
    assert pass_at_k_auc([1, 2, 4], [0.0, 0.5, 1.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="two distinct k"):
        pass_at_k_auc([4], [0.5])
