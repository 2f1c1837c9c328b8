"""THR: token hidden reward, NTHR's influence score extended to every token of a mixed group (docs/algorithms.md §8).

Deng et al. 2025, arXiv:2510.03669 (ICLR 2026). Only the abstract and reviews were readable, so the form
is reconstructed [docs/algorithms.md §8]: s_t = g_t^T M+ h_t exactly as NTHR (``nthr.influence_scores``, the same
code path), THR_t = A_t * s_t (the first-order change of the correct answers' log-likelihood caused by
t's update), tau = beta * min over correct responses of their mean s, and a token is *dominant* when
|s_t| > |tau|. ``reweight``: A'_t = A_t (1 + p sign(THR_t)) on dominant tokens (p > 0 exploits: more
weight where the update helps the correct answers; p < 0 explores); ``dominant_only``: A'_t = A_t on
dominant tokens, 0 elsewhere. p = 0 reproduces GRPO exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def thr_token_advantages(
    scores: Tensor,
    anchors: Tensor,
    token_adv: Tensor,
    mask: Tensor,
    *,
    p: float,
    beta: float = 1.0,
    mode: str = "reweight",
) -> tuple[Tensor, Tensor]:
    """New (G, T) token advantages of one mixed group from its NTHR scores.

    Args:
        scores: (G, T) s_t of every token (``nthr_group(...).scores``).
        anchors: (N+,) mean s of each correct response (``nthr_group(...).anchors``).
        token_adv: (G, T) token advantages before THR.
        mask: (G, T) completion tokens.
        p: exploitation (> 0) or exploration (< 0) strength, |p| <= 1.
        beta: threshold scale (tau = beta * min anchors).
        mode: "reweight" or "dominant_only".

    Returns:
        ``(token_adv', dominant)``: (G, T) advantages and the (G, T) bool dominant tokens.
    """
    if abs(p) > 1.0:
        raise ValueError(f"thr.p must be in [-1, 1] so that every factor 1 + p*sign stays >= 0, got {p}")
    tau = -math.inf if beta == -math.inf else beta * float(anchors.min())
    dominant = mask.bool() & (scores.abs() > abs(tau))  # (G, T)
    if mode == "dominant_only":
        return torch.where(dominant, token_adv, torch.zeros_like(token_adv)), dominant
    if mode != "reweight":
        raise ValueError(f'thr.mode must be "reweight" or "dominant_only", got {mode!r}')
    sign = torch.sign(token_adv * scores)  # sign of THR_t
    return torch.where(dominant, token_adv * (1.0 + p * sign), token_adv), dominant
