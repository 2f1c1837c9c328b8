"""Rewards from binary correctness (the reward scheme) and DAPO's soft overlong penalty.

Shaping changes the reward r fed to the advantage only; group kinds, filters, NTHR and accuracy
keep reading the binary correctness c [neggrad choice, docs/algorithms.md §1.1].
"""

import torch
from torch import Tensor


def binary_rewards(correct: Tensor) -> Tensor:
    """r = c: 1 for a correct completion, 0 for a wrong one."""
    return correct.float()


def pm1_rewards(correct: Tensor) -> Tensor:
    """r = 2c - 1: +1 for a correct completion, -1 for a wrong one (DAPO, Reinforce-Rej)."""
    return 2.0 * correct.float() - 1.0


REWARD_SCHEMES = {"binary": binary_rewards, "pm1": pm1_rewards}

REWARD_MAX = {"binary": 1.0, "pm1": 1.0}
"""The reward of a correct completion under each scheme: NGRPO's default ``virtual_reward`` (docs/algorithms.md §2)."""


def scheme_rewards(correct: Tensor, *, reward_scheme: str) -> Tensor:
    """Rewards from binary verifier outcomes under ``reward_scheme`` ("binary": 1/0, "pm1": +1/-1).

    docs/algorithms.md §1.1. ``pm1`` is DAPO's rule-based reward (Yu et al. 2025, arXiv:2503.14476,
    Sec. 2.4) and Reinforce-Rej's (Xiong et al. 2025, arXiv:2504.11343) [neggrad choice for the latter].

    Args:
        correct: (P, G) bool verifier outcomes (any shape is accepted; groups are not needed here).
        reward_scheme: one of ``REWARD_SCHEMES``.

    Returns:
        Float rewards of the same shape.
    """
    if reward_scheme not in REWARD_SCHEMES:
        raise ValueError(f"unknown reward_scheme {reward_scheme!r}: choose one of {sorted(REWARD_SCHEMES)}.")
    if correct.dtype != torch.bool:
        raise ValueError(
            f"correct must be a bool tensor of verifier outcomes, got dtype {correct.dtype}: "
            "pass the verifier's pass/fail as bool."
        )
    return REWARD_SCHEMES[reward_scheme](correct)


def overlong_penalty(lengths: Tensor, *, max_completion_length: int, buffer_len: int, factor: float = 1.0) -> Tensor:
    """DAPO's soft overlong punishment: a penalty that grows linearly over the last ``buffer_len`` tokens.

    Yu et al. 2025, arXiv:2503.14476, Sec. 3.4 (R_length). With L = ``max_completion_length`` and
    L_b = ``buffer_len``:
        0                                   if |y| <= L - L_b
        factor * ((L - L_b) - |y|) / L_b    if L - L_b < |y| <= L
        -factor                             if |y| > L
    The paper's penalty is factor 1; ``factor`` scales it (``overlong_penalty_factor``). It is added
    to the reward. ``buffer_len = 0`` turns it off.

    Args:
        lengths: (B,) integer completion lengths |y| in tokens.
        max_completion_length: L.
        buffer_len: L_b, 0 <= L_b <= L; the DAPO preset uses L // 5 [neggrad choice].
        factor: the penalty at and beyond L, >= 0.

    Returns:
        (B,) float penalties in [-factor, 0].
    """
    if not 0 <= buffer_len <= max_completion_length:
        raise ValueError(
            f"buffer_len must be in [0, max_completion_length={max_completion_length}], got {buffer_len}: "
            "set overlong_buffer_len to e.g. max_completion_length // 5, or 0 to turn the penalty off."
        )
    if factor < 0:
        raise ValueError(f"factor must be >= 0, got {factor}: it is the size of the penalty, subtracted from r.")
    if buffer_len == 0:
        return torch.zeros(lengths.shape, device=lengths.device)
    slope = ((max_completion_length - buffer_len) - lengths).float() / buffer_len  # (B,), > 0 before the buffer
    return factor * slope.clamp(min=-1.0, max=0.0)  # 0 before the buffer, -1 at L and beyond, times factor
