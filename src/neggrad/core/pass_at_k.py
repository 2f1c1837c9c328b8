"""Unbiased pass@k from n samples per problem, and the area under the pass@k curve over log k.

pass@k is the chance that at least one of k completions is correct. Drawing k of the n samples without
replacement gives the unbiased estimator (Chen et al. 2021, arXiv:2107.03374v2, Sec. 2.1, Eq. 1):

    pass@k = 1 - C(n - c, k) / C(n, k)        (c correct among n, k <= n)

The binomials overflow for n = 256, so we use the product form of the same ratio (their Fig. 3):
C(n - c, k) / C(n, k) = prod_{i = n - c + 1}^{n} (1 - k / i), summed in log space. It is 0 when n - c < k.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def pass_at_k(num_correct: Tensor, n: int, k: int) -> Tensor:
    """Unbiased pass@k of each problem from ``num_correct`` right answers among ``n`` samples.

    Args:
        num_correct: (P,) integer count of correct samples per problem, each in [0, n].
        n: samples drawn per problem.
        k: the k of pass@k, 1 <= k <= n.

    Returns:
        (P,) float64 pass@k per problem; average it over problems for the benchmark figure.
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}: sample at least k completions per problem")
    c = num_correct.to(torch.int64)
    if c.numel() and (c.min() < 0 or c.max() > n):
        raise ValueError(f"num_correct must lie in [0, {n}], got values from {int(c.min())} to {int(c.max())}")
    i = torch.arange(1, n + 1, dtype=torch.float64)  # (n,)
    log_terms = torch.where(i > k, torch.log1p(-k / i), torch.zeros_like(i))  # log(1 - k/i); unused where i <= k
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), log_terms.cumsum(0)])  # (n + 1,) sum over i <= j
    wrong = n - c  # (P,)
    log_fail = cumulative[n] - cumulative[wrong]  # (P,) log prod_{i = n - c + 1}^{n} (1 - k / i)
    return torch.where(wrong < k, torch.ones_like(log_fail), 1.0 - torch.exp(log_fail))


def pass_at_k_auc(ks: list[int], values: list[float]) -> float:
    """Area under pass@k against log k, divided by the log-k range: a number in [0, 1] summarising the curve.

    Trapezoids between the given k (sorted ascending, at least two distinct). NGRPO (Nan et al. 2025,
    arXiv:2509.18851) reports an AUC of pass@k for k up to 256; this normalisation by log(k_max / k_min) is ours,
    so a policy with pass@k = 1 for every k scores 1.
    """
    if len(ks) != len(values) or len(set(ks)) < 2 or list(ks) != sorted(ks):
        raise ValueError(f"need at least two distinct k in ascending order, one value each; got ks={ks}")
    logs = [math.log(k) for k in ks]
    area = sum((logs[j + 1] - logs[j]) * (values[j] + values[j + 1]) / 2 for j in range(len(ks) - 1))
    return area / (logs[-1] - logs[0])
