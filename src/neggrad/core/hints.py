"""Guidance for groups nobody solves: the hint ladder and LUFFY's shaped loss for off-policy tokens.

docs/algorithms.md §11. When every answer of a group is wrong, G - 1 rollouts are regenerated with the first k steps
of the reference solution as a response prefix, k rising in a ladder until one answer is right. The prefix
tokens were not sampled by the policy, so they never get a PPO ratio: LUFFY's policy shaping (Yan et al.
2025, arXiv:2504.14945, Sec. 3.2, Eq. 6-7) trains them with l_t = -A f(pi_theta(y_t)), f(x) = x / (x + gamma),
whose gradient -A gamma pi / (pi + gamma)^2 grad log pi lifts unlikely tokens more than likely ones.
"""

from __future__ import annotations

import math

from torch import Tensor


def hint_levels(num_steps: int, fractions: tuple[float, ...] = (0.25, 0.5, 0.75)) -> list[int]:
    """The ladder: sorted unique min(ceil(f * S), S - 1) >= 1 over ``fractions``; never the last step (the
    answer); empty when the reference has one step (unhintable) [neggrad choice, docs/algorithms.md §11]."""
    return sorted({min(math.ceil(f * num_steps), num_steps - 1) for f in fractions} - {0}) if num_steps >= 2 else []


def shaped_offpolicy_loss(logp: Tensor, token_adv: Tensor, *, gamma: float = 0.1) -> Tensor:
    """LUFFY's per-token loss on off-policy (hint) tokens: -A * pi / (pi + gamma), pi = exp(logp); no ratio,
    no clip (arXiv:2504.14945 Eq. 6 with pi_phi := 1; gamma 0.1 as the paper).

    Args:
        logp: (B, T) current log-probs of the hint tokens (with grad).
        token_adv: (B, T) advantages.
        gamma: shaping constant.

    Returns:
        (B, T) token losses.
    """
    prob = logp.exp()
    return -token_adv * prob / (prob + gamma)
