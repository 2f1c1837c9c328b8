"""Lazy Likelihood Displacement: how an update moved the log-likelihood of the correct answers it saw.

Deng et al. 2025, arXiv:2505.18830, Sec. 4, Def. 4.1: LLD holds for a correct response y+ when an
update that lowers the loss leaves ln pi_after(y+|x) - ln pi_before(y+|x) <= eps, eps >= 0 small.
docs/algorithms.md §6.1 fixes the online measurement: for every correct completion trained on in a step,

    delta_seq = sum_t mask_t (logp_after_t - logp_before_t)      delta_tok = delta_seq / n

with before = the step's old-policy log-probs and after = a no-grad pass after the step's last
optimizer step; a completion is *displaced* iff delta_seq < 0 (eps = 0). The same numbers are split
by the group's success rate p into the bins (0, 1/4], (1/4, 1/2], (1/2, 3/4], (3/4, 1) and p = 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

P_BINS = (("p_q1", 0.0, 0.25), ("p_q2", 0.25, 0.5), ("p_q3", 0.5, 0.75), ("p_q4", 0.75, 1.0))
"""(name, low, high]: success-rate bins; p = 1 (all correct) is its own bin ``p_all``."""


def likelihood_deltas(before: Tensor, after: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sequence change of log-likelihood, summed and per token (docs/algorithms.md §6.1).

    Args:
        before: (B, T) token log-probs before the update.
        after: (B, T) token log-probs after it.
        mask: (B, T) 0/1 tokens of each completion.

    Returns:
        ``(delta_seq, delta_tok)``, each (B,).
    """
    mask = mask.float()
    delta_seq = ((after - before) * mask).sum(dim=1)  # (B,)
    return delta_seq, delta_seq / mask.sum(dim=1).clamp(min=1.0)


def lld_metrics(
    before: Tensor, after: Tensor, mask: Tensor, success_rate: Tensor, *, prefix: str = "lld/"
) -> dict[str, float]:
    """Mean delta_seq, mean delta_tok and displaced fraction, overall and per success-rate bin.

    Args:
        before: (B, T) token log-probs of the measured completions before the update.
        after: (B, T) the same after the update.
        mask: (B, T) their token masks.
        success_rate: (B,) the success rate p of each completion's group.
        prefix: key prefix, ``"lld/"`` for correct completions, ``"lld/wrong/"`` for wrong ones.

    Returns:
        ``{prefix + "delta_seq_mean", ..."delta_tok_mean", ..."displaced_frac", ...}`` and the same three
        with a ``_p_q1`` .. ``_p_q4`` / ``_p_all`` suffix for every bin that has completions, plus
        ``prefix + "count"``. Empty input gives only ``count`` = 0.
    """
    delta_seq, delta_tok = likelihood_deltas(before, after, mask)
    out = {f"{prefix}count": float(delta_seq.numel())}
    if delta_seq.numel() == 0:
        return out
    bins = [("", torch.ones_like(success_rate, dtype=torch.bool))]
    bins += [(f"_{name}", (success_rate > lo) & (success_rate <= hi)) for name, lo, hi in P_BINS[:-1]]
    bins += [("_p_q4", (success_rate > 0.75) & (success_rate < 1.0)), ("_p_all", success_rate >= 1.0)]
    for suffix, sel in bins:
        if not bool(sel.any()):
            continue
        out[f"{prefix}delta_seq_mean{suffix}"] = float(delta_seq[sel].mean())
        out[f"{prefix}delta_tok_mean{suffix}"] = float(delta_tok[sel].mean())
        out[f"{prefix}displaced_frac{suffix}"] = float((delta_seq[sel] < 0).float().mean())
    return out
