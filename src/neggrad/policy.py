"""The training-side forward pass: completion logits of a causal LM, positions matching generation."""

from __future__ import annotations

import inspect

import torch
from torch import Tensor

from neggrad.rollout.hf import Rollout


def completion_forward(model, rollout: Rollout, *, return_hidden: bool = False) -> tuple[Tensor, Tensor | None]:
    """Logits (and optionally LM-head inputs) at the positions that predict each completion token.

    Position ids count real tokens only (``cumsum(mask) - 1``), as ``generate`` does for left-padded
    prompts, so the first training pass reproduces the sampling distribution (ratio 1).

    The hidden states are what the output embedding (LM head) receives, caught by a forward pre-hook:
    the last layer after the final norm, for any architecture, without ``output_hidden_states`` (which
    keeps every layer). NTHR needs exactly this h (docs/algorithms.md §7.1).

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
    tp, t = rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
    keep = t + 1 if _takes_logits_to_keep(model) else None  # the LM head sees only the positions that predict
    kwargs = {"logits_to_keep": keep} if keep else {}
    try:
        out = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False, **kwargs
        )
    finally:
        if handle is not None:
            handle.remove()
    start = 0 if keep else tp - 1  # with logits_to_keep = T + 1 the logits hold positions Tp - 1 .. Tp + T - 1
    logits = out.logits[:, start : start + t]  # (B, T, V)
    if not return_hidden:
        return logits, None
    if len(caught) != 1 or caught[0].shape[1] != out.logits.shape[1]:
        raise RuntimeError(
            "could not read the LM-head input of this model (NTHR needs the last hidden state at every "
            "position); its forward does not call get_output_embeddings() once on the positions it scores"
        )
    return logits, caught[0][:, start : start + t]  # (B, T, H)


def _takes_logits_to_keep(model) -> bool:
    """Whether the model's forward accepts ``logits_to_keep`` (Hugging Face causal LMs since transformers 4.50).

    The prompt's positions need no logits: at a 150-token prompt and a 48-token completion the LM head (49k x 576
    in SmolLM2-135M, a fifth of its weights) would otherwise run on four times the positions it is needed on.
    A wrapper (PEFT, DDP) is looked through to the model it wraps.
    """
    inner = model
    for _ in range(4):
        forward = getattr(inner, "forward", None)
        if forward is not None and "logits_to_keep" in inspect.signature(forward).parameters:
            return True
        inner = getattr(inner, "module", None) or getattr(getattr(inner, "base_model", None), "model", None)
        if inner is None:
            return False
    return False


def completion_logits(model, rollout: Rollout) -> Tensor:
    """(B, T, V) logits predicting each completion token (``completion_forward`` without hidden states)."""
    return completion_forward(model, rollout)[0]


def linear_head(model) -> tuple[Tensor, Tensor | None]:
    """(weight, bias) of the model's LM head when logits are exactly ``h W^T + b``; ValueError otherwise.

    Cross-group NTHR (``nthr.scope: batch``) recomputes the softmax from the hidden states through this head
    instead of holding the batch's logits; a head that is not one linear layer, or a model that softcaps its
    logits (Gemma 2), would give other probabilities than the policy's.
    """
    head = model.get_output_embeddings()
    config = getattr(model, "config", None)
    softcap = getattr(config, "final_logit_softcapping", None)
    if not isinstance(head, torch.nn.Linear) or softcap:
        what = type(head).__name__ + (" with logit softcapping" if softcap else "")
        raise ValueError(
            f"nthr.scope 'batch' needs a plain linear LM head (Llama, Qwen, SmolLM2); this model's is {what}: "
            "use nthr.scope: group"
        )
    return head.weight, head.bias
