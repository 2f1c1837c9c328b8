"""Partial rewards for wrong answers from a judge's first wrong step (docs/algorithms.md §10.2).

SGPO (Chen et al. 2025, "Stepwise Guided Policy Optimization", arXiv:2505.11595) gives the wrong
answers of an all-wrong group graded rewards from the share of the answer before its first wrong
step, through a logistic function with constants beta and gamma. The paper prints no formula, so the
exact form below is [neggrad choice, docs/algorithms.md §10.2]:

    f = (k - 1) / n                 (k = n when the judge finds no wrong step in a verifier-wrong answer)
    r = scale * sigmoid(beta * (f - gamma))          (a failed judgement gives r = 0)
"""

import torch
from torch import Tensor


def step_fraction(first_wrong: Tensor, num_steps: Tensor) -> Tensor:
    """f = (k - 1) / n: the share of an answer's n steps written before its first wrong step k.

    docs/algorithms.md §10.2 [neggrad choice; SGPO, arXiv:2505.11595]. A judge that finds no wrong step in an
    answer the verifier marks wrong is read as k = n (the answer fails only at its end): pass ``n`` as
    ``first_wrong`` for those rows.

    Args:
        first_wrong: (B,) int, the 1-based first wrong step k, 1 <= k <= n.
        num_steps: (B,) int, the answer's step count n >= 1.

    Returns:
        (B,) float fractions in [0, 1).
    """
    if (num_steps < 1).any() or (first_wrong < 1).any() or (first_wrong > num_steps).any():
        raise ValueError(
            "step_fraction needs 1 <= first_wrong <= num_steps for every answer: count a judge failure "
            "separately (its reward is 0) and pass k = n for 'no wrong step'."
        )
    return (first_wrong.double() - 1.0) / num_steps.double()  # (B,)


def partial_reward(fraction: Tensor, *, beta: float = 10.0, gamma: float = 0.5, scale: float = 0.5) -> Tensor:
    """r = scale * sigmoid(beta * (f - gamma)): a wrong answer's reward from how far it got.

    docs/algorithms.md §10.2 [neggrad choice; SGPO, Chen et al. 2025, arXiv:2505.11595, "logistic function
    with beta and gamma"]. With the defaults, f = 0 gives 0.003346, f = gamma gives scale / 2 = 0.25
    and r stays below ``scale`` <= 1, so a wrong answer always stays below a correct one (reward 1).
    The scale cancels under std-normalised GRPO but not under Dr. GRPO, RLOO or NGRPO.

    Args:
        fraction: (B,) float f in [0, 1].
        beta: steepness of the logistic.
        gamma: the fraction that earns half of ``scale``.
        scale: the reward approached as f -> 1.

    Returns:
        (B,) partial rewards in (0, scale), in the dtype of ``fraction``.
    """
    return scale * torch.sigmoid(beta * (fraction - gamma))  # (B,)


def judged_rewards(
    fraction: Tensor,
    failed: Tensor,
    *,
    beta: float = 10.0,
    gamma: float = 0.5,
    scale: float = 0.5,
    reward_scheme: str = "binary",
) -> Tensor:
    """Rewards that replace those of an all-wrong group's answers after the judge has read them.

    ``partial_reward`` where the judge gave a verdict, 0 where it failed (docs/algorithms.md §10.2). Under
    the ``pm1`` reward scheme the value is mapped to -1 + 2r, between wrong (-1) and correct (+1), so a
    failed judgement keeps the answer's -1.

    Args:
        fraction: (B,) float f; ignored where ``failed``.
        failed: (B,) bool, True where the judge could not judge the answer.
        beta, gamma, scale: see ``partial_reward``.
        reward_scheme: "binary" (r) or "pm1" (-1 + 2r).

    Returns:
        (B,) float rewards in the dtype of ``fraction``.
    """
    if reward_scheme not in ("binary", "pm1"):
        raise ValueError(f'reward_scheme must be "binary" or "pm1", got {reward_scheme!r}')
    reward = partial_reward(fraction, beta=beta, gamma=gamma, scale=scale)  # (B,)
    reward = reward.masked_fill(failed, 0.0)
    return 2.0 * reward - 1.0 if reward_scheme == "pm1" else reward
