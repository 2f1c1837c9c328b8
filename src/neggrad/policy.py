"""The training-side forward pass: completion logits of a causal LM, positions matching generation."""

from __future__ import annotations

import torch
from torch import Tensor

from neggrad.rollout.hf import Rollout


def completion_logits(model, rollout: Rollout) -> Tensor:
    """Logits at the positions that predict each completion token.

    Position ids count real tokens only (``cumsum(mask) - 1``), as ``generate`` does for left-padded
    prompts, so the first training pass reproduces the sampling distribution (ratio 1).

    Returns:
        (B, T, V) logits; row i, column t predicts ``rollout.completion_ids[i, t]``.
    """
    input_ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], dim=1)  # (B, Tp + T)
    attention_mask = torch.cat([rollout.prompt_mask, rollout.completion_mask], dim=1)  # (B, Tp + T)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, Tp + T)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    tp, t = rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
    return out.logits[:, tp - 1 : tp - 1 + t]  # (B, T, V)
