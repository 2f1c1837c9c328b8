"""Per-token log-probabilities and entropy of completions from a causal LM's logits."""

from __future__ import annotations

import torch
from torch import Tensor


def token_logprobs(logits: Tensor, token_ids: Tensor, *, temperature: float = 1.0) -> Tensor:
    """Log-probability of each given token under ``softmax(logits / temperature)``.

    The rollout temperature is applied (docs/algorithms.md §1.1), as TRL and verl do, so that the
    old-policy log-probs match the distribution the completions were sampled from.

    Args:
        logits: (B, T, V) logits at the positions that predict ``token_ids``.
        token_ids: (B, T) the tokens taken.
        temperature: sampling temperature.

    Returns:
        (B, T) log-probabilities (float32).
    """
    scaled = logits.float() / temperature  # (B, T, V)
    picked = scaled.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked - torch.logsumexp(scaled, dim=-1)
