"""Advantages for groups whose answers are all right or all wrong: RL-ZVP and LENS (docs/algorithms.md §9).

GRPO gives such groups zero advantage. These give them a signal without a reward difference: RL-ZVP
from the policy's token entropy, LENS from the policy's confidence in each wrong answer.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rl_zvp_advantages(entropy: Tensor, mask: Tensor, *, all_correct: bool, alpha: float = 0.1) -> Tensor:
    """RL-ZVP token advantages of one zero-variance group (Le et al. 2025, arXiv:2509.21880, Sec. 3.2, Eq. 5).

    all correct: A_{i,t} = alpha * H_{i,t}; all wrong: A_{i,t} = -alpha * (max_k H_{i,k} - H_{i,t}), the max
    over the completion's unmasked tokens. High-entropy (forking) tokens of correct answers are pushed up
    most; in wrong answers low-entropy tokens are pushed down most and the highest-entropy one not at all.

    Args:
        entropy: (G, T) detached token entropies H at the sampling temperature.
        mask: (G, T) completion tokens.
        all_correct: which kind of zero-variance group this is (from binary correctness).
        alpha: scale (paper: 0.1).

    Returns:
        (G, T) token advantages, 0 at masked positions.
    """
    mask = mask.bool()
    entropy = entropy.detach().float()
    if all_correct:
        adv = alpha * entropy
    else:
        top = entropy.masked_fill(~mask, float("-inf")).max(dim=1, keepdim=True).values  # (G, 1)
        adv = -alpha * (top - entropy)
    return adv.masked_fill(~mask, 0.0)


def lens_rewards(correct: Tensor, mean_logp: Tensor) -> Tensor:
    """LENS confidence-calibrated rewards of one group (Feng et al. 2025, arXiv:2510.08696, Eq. 10, Sec. 5.1).

    pi_bar_i = exp(mean_t old_logp_{i,t}) (length-normalised confidence); D_imp = ((1/G) sum_i r_i / pi_bar_i)^-1
    (Eq. 14, pi_bar inside [neggrad choice]); D = max(D_imp, 2 max_j pi_bar_j) for a mixed group,
    2 max_j pi_bar_j for an all-wrong one; r~_i = r_i - (1 - r_i) (1/G) pi_bar_i / (D - pi_bar_i), in
    [-1/G, 1]: confident wrong answers are penalised most.

    Args:
        correct: (G,) bool binary correctness.
        mean_logp: (G,) mean old-policy token log-prob of each completion.

    Returns:
        (G,) float64 rewards r~.
    """
    r = correct.double()
    num = r.numel()
    pbar = torch.exp(mean_logp.double())  # (G,)
    floor = 2.0 * pbar.max()
    if bool(correct.any()):
        d_imp = 1.0 / ((r / pbar).sum() / num)
        d = torch.maximum(d_imp, floor)
    else:
        d = floor
    return r - (1.0 - r) * (1.0 / num) * pbar / (d - pbar)


def lens_advantages(correct: Tensor, mean_logp: Tensor, *, alpha: float = 0.25, eps: float = 1e-6) -> Tensor:
    """LENS advantages of one group: mixed -> GRPO of r~ (std-normalised); all wrong -> alpha (r~ - mean r~);
    all correct -> 0 (arXiv:2510.08696, Sec. 5.1; alpha 0.25 is the paper's only hyper-parameter).

    Args:
        correct: (G,) bool. mean_logp: (G,) mean old-policy token log-probs.

    Returns:
        (G,) float32 advantages.
    """
    if bool(correct.all()):
        return torch.zeros(correct.shape, dtype=torch.float32)
    rewards = lens_rewards(correct, mean_logp)
    centred = rewards - rewards.mean()
    if bool(correct.any()):
        return (centred / (rewards.std(correction=1) + eps)).float()
    return (alpha * centred).float()
