"""The training-side forward pass: completion logits of a causal LM, positions matching generation."""

from __future__ import annotations

import torch
from torch import Tensor

from neggrad.rollout.hf import Rollout


def completion_forward(model, rollout: Rollout, *, return_hidden: bool = False) -> tuple[Tensor, Tensor | None]:
    """Logits (and optionally LM-head inputs) at the positions that predict each completion token.

    Position ids count real tokens only (``cumsum(mask) - 1``), as ``generate`` does for left-padded
    prompts, so the first training pass reproduces the sampling distribution (ratio 1).

    The hidden states are what the output embedding (LM head) receives, caught by a forward pre-hook:
    the last layer after the final norm, for any architecture, without ``output_hidden_states`` (which
    keeps every layer). NTHR needs exactly this h (ALGORITHMS.md 3.1).

    Returns:
        ``(logits, hidden)``: (B, T, V) logits, row i column t predicting ``rollout.completion_ids[i, t]``,
        and (B, T, H) hidden states at the same positions (None unless ``return_hidden``).
    """
    rollout = rollout.to(next(model.parameters()).device)  # batches live on the CPU (Rollout.to)
    input_ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], dim=1)  # (B, Tp + T)
    attention_mask = torch.cat([rollout.prompt_mask, rollout.completion_mask], dim=1)  # (B, Tp + T)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, Tp + T)
    caught: list[Tensor] = []
    handle = None
    if return_hidden:
        head = model.get_output_embeddings()
        handle = head.register_forward_pre_hook(lambda module, args: caught.append(args[0]))
    try:
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    finally:
        if handle is not None:
            handle.remove()
    tp, t = rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
    logits = out.logits[:, tp - 1 : tp - 1 + t]  # (B, T, V)
    if not return_hidden:
        return logits, None
    if len(caught) != 1 or caught[0].shape[1] != input_ids.shape[1]:
        raise RuntimeError(
            "could not read the LM-head input of this model (NTHR needs the last hidden state at every "
            "position); its forward does not call get_output_embeddings() once on the full sequence"
        )
    return logits, caught[0][:, tp - 1 : tp - 1 + t]  # (B, T, H)


def completion_logits(model, rollout: Rollout) -> Tensor:
    """(B, T, V) logits predicting each completion token (``completion_forward`` without hidden states)."""
    return completion_forward(model, rollout)[0]
