"""LLDS: likelihood-displacement suppression, a loss that pushes back up what an update pushed down.

Deng et al. 2025, arXiv:2512.04220 v2, Sec. 5.5, Eq. 4-6, App. B.3 Eq. 9-10 (docs/algorithms.md §13). For responses
with A_i >= 0 (Ypre: correct and zero-advantage ones), with Delta_{i,t} = old_logp - logp (> 0: the
likelihood fell since the rollout):

    L_LLDS = lambda * sum_{i in Ypre} sum_t gate_{i,t} * max(0, Delta_{i,t}) / N_tok

gates (detached): ``token`` every t with Delta > 0 (Eq. 9); ``response`` 1[sum_t Delta > 0] (Eq. 10);
``step`` / ``action`` 1[sum over the step's tokens of Delta > 0] (Eq. 4), steps given as ids per token.
Returned per token so the run's ``aggregate_loss`` divides it (token-mean = the authors' code). On an
on-policy update logp = old_logp, so it is exactly 0: it acts on later mini-batches and iterations only.
"""

from __future__ import annotations

import torch
from torch import Tensor

GATES = ("token", "response", "step", "action")


def llds_token_loss(
    logp: Tensor,
    old_logp: Tensor,
    mask: Tensor,
    seq_adv: Tensor,
    *,
    coef: float = 0.2,
    gate: str = "step",
    step_ids: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-token LLDS penalty (B, T) to add to the policy token loss, and the (B, T) bool penalised tokens.

    Args:
        logp: (B, T) current log-probs (with grad). old_logp: (B, T) rollout log-probs (no grad).
        mask: (B, T) completion tokens.
        seq_adv: (B,) sequence advantages; rows with A >= 0 form Ypre.
        coef: lambda (paper 0.2).
        gate: "token", "response", "step" or "action" (step and action need ``step_ids``).
        step_ids: (B, T) long id of the step (action) each token belongs to; any value at masked positions.
    """
    mask = mask.bool()
    delta = (old_logp.detach() - logp).masked_fill(~mask, 0.0)  # (B, T), carries logp's gradient
    d = delta.detach()
    ypre = (seq_adv >= 0)[:, None] & mask  # (B, T)
    if gate == "token":
        on = d > 0
    elif gate == "response":
        on = (d.sum(dim=1, keepdim=True) > 0).expand_as(d)
    elif gate in ("step", "action"):
        if step_ids is None:
            raise ValueError(f"llds gate {gate!r} needs step_ids (one id per token)")
        on = torch.zeros_like(mask)
        for value in torch.unique(step_ids[mask]).tolist():
            in_step = (step_ids == value) & mask  # (B, T)
            total = (d * in_step).sum(dim=1, keepdim=True)  # (B, 1)
            on |= in_step & (total > 0)
    else:
        raise ValueError(f"llds gate must be one of {', '.join(GATES)}, got {gate!r}")
    penalised = ypre & on & (d > 0)
    return coef * torch.where(penalised, delta, torch.zeros_like(delta)), penalised


def action_ids(mask: Tensor) -> Tensor:
    """(B, T) long id of the maximal run of ``mask`` tokens each position belongs to (docs/algorithms.md §13: an
    action is one model turn between tool outputs). Positions outside the mask carry the id of the run
    before them (they are never gated). Single-turn responses are one action: the response gate."""
    on = mask.bool()
    starts = on & ~torch.nn.functional.pad(on[:, :-1], (1, 0), value=False)  # (B, T) first token of a run
    return (starts.long().cumsum(dim=1) - 1).clamp(min=0)
