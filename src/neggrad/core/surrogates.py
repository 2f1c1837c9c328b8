"""Sequence-level and capped-weight alternatives to PPO's token ratio clip: GSPO and CISPO.

Both return (B, T) token losses for ``aggregate_loss``, like ``losses.clipped_surrogate``
(docs/algorithms.md §3.3-3.4).
"""

from __future__ import annotations

import torch
from torch import Tensor

from neggrad.core.losses import LOG_RATIO_CLAMP


def sequence_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """log s_i = mean over the completion's tokens of (logp - old_logp): (B, 1), GSPO's length-normalised ratio."""
    mask = mask.float()
    return ((logp - old_logp) * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)


def gspo_surrogate(
    logp: Tensor,
    old_logp: Tensor,
    token_adv: Tensor,
    mask: Tensor,
    *,
    epsilon: float,
    epsilon_high: float | None = None,
    token_level: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GSPO's clipped objective with the sequence ratio s_i = (pi(y_i|x) / pi_old(y_i|x))^(1/|y_i|).

    Zheng et al. 2025, arXiv:2507.18071, Eq. 5: J = (1/G) sum_i min(s_i A_i, clip(s_i, 1 - eps_low,
    1 + eps_high) A_i). Returned per token (each token of row i carries row i's term), so ``loss_type:
    grpo`` (mean over a sequence's tokens, then over sequences) gives Eq. 5 exactly. ``token_level`` is
    GSPO-token: s_{i,t} = sg[s_i] * pi(y_t) / sg[pi(y_t)], the value of s_i with a per-token gradient,
    for per-token advantages (NTHR, THR); equal to GSPO when A is constant over a row. The log of s is
    clamped at +-20 before exp [neggrad choice; the LLDS code clamps at 10].

    Args:
        logp, old_logp: (B, T) current and sampling-policy token log-probs (old without grad).
        token_adv: (B, T) advantages.
        mask: (B, T) completion tokens.
        epsilon, epsilon_high: clip range of s (GSPO paper: 3e-4 and 4e-4).
        token_level: GSPO-token instead of GSPO.

    Returns:
        (B, T) token losses and ``{"seq_clip": (B,) bool rows whose ratio was clipped, "seq_ratio": (B,) s}``.
    """
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    log_s = sequence_log_ratio(logp, old_logp, mask).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (B, 1)
    if token_level:
        ratio = torch.exp(log_s.detach() + logp - logp.detach())  # (B, T): value s_i, gradient per token
    else:
        ratio = torch.exp(log_s).expand_as(logp)  # (B, T)
    clipped_ratio = ratio.clamp(1.0 - epsilon, 1.0 + epsilon_high)
    token_loss = torch.maximum(-token_adv * ratio, -token_adv * clipped_ratio)  # (B, T)
    s = torch.exp(log_s.detach()).squeeze(1)  # (B,)
    return token_loss, {"seq_clip": (s < 1.0 - epsilon) | (s > 1.0 + epsilon_high), "seq_ratio": s}


def cispo_loss(logp: Tensor, old_logp: Tensor, token_adv: Tensor, *, epsilon_high: float) -> tuple[Tensor, Tensor]:
    """CISPO: REINFORCE weighted by the stop-gradient, capped importance ratio.

    MiniMax-M1, arXiv:2506.13585, Sec. 3.1, Eq. 4-5: J = sum sg(r_hat) A log pi, r_hat = clip(rho, 1 - eps_low^IS,
    1 + eps_high^IS). As TRL's ``loss_type="cispo"`` [neggrad choice, docs/algorithms.md §3.4]: no lower bound and
    ``epsilon_high`` is the absolute cap, weight = min(rho, epsilon_high) (ScaleRL, arXiv:2510.13786,
    recommends 5.0). Unlike the PPO clip, a token above the cap keeps a (capped) gradient.

    Returns:
        (B, T) token losses -sg(w) * A * logp, and (B, T) bool where the cap binds.
    """
    rho = torch.exp((logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)).detach()  # (B, T)
    weight = rho.clamp(max=epsilon_high)
    return -weight * token_adv * logp, rho > epsilon_high
