"""The training-side forward pass: completion logits of a causal LM, positions matching generation."""

from __future__ import annotations

import contextlib
import inspect

import torch
from torch import Tensor
from transformers import DynamicCache

from neggrad.models.packed import packed_pass
from neggrad.rollout.base import Rollout, distinct_rows


def completion_forward(
    model, rollout: Rollout, *, return_hidden: bool = False, share_prompt: bool = False, packed: bool = False
) -> tuple[Tensor, Tensor | None]:
    """Logits (and optionally LM-head inputs) at the positions that predict each completion token.

    Position ids count real tokens only (``cumsum(mask) - 1``), as ``generate`` does for left-padded
    prompts, so the first training pass reproduces the sampling distribution (ratio 1).

    The hidden states are what the output embedding (LM head) receives, caught by a forward pre-hook:
    the last layer after the final norm, for any architecture, without ``output_hidden_states`` (which
    keeps every layer). NTHR needs exactly this h (arXiv:2505.18830 Eq. 7, the h of docs/algorithms.md §7.1).

    ``share_prompt``: rows with the same prompt run it once (``shared_prompt_pass``) when any two rows share one.
    ``packed``: the forward over real tokens only (``neggrad.models.packed``, option ``remove_padding``); logits and
    hidden states are zeros at padding positions.

    Returns:
        ``(logits, hidden)``: (B, T, V) logits, row i column t predicting ``rollout.completion_ids[i, t]``,
        and (B, T, H) hidden states at the same positions (None unless ``return_hidden``).
    """
    if packed:
        logits, hidden = packed_pass(model, rollout, share_prompt=share_prompt, logits=True)
        return logits, hidden if return_hidden else None
    if share_prompt and (shared := shared_prompt_pass(model, rollout, starve=False, return_hidden=return_hidden)):
        return shared
    inputs, start, t = _scored_inputs(model, rollout)
    caught: list[Tensor] = []
    with _head_hook(model, caught, starve=False) if return_hidden else _nothing():
        out = model(**inputs)
    logits = out.logits[:, start : start + t]  # (B, T, V)
    if not return_hidden:
        return logits, None
    _check_caught(caught, out.logits.shape[1])
    return logits, caught[0][:, start : start + t]  # (B, T, H)


def completion_hidden(model, rollout: Rollout, *, share_prompt: bool = False, packed: bool = False) -> Tensor:
    """(B, T, H) LM-head inputs at the positions that predict each completion token, without the logits.

    The same forward as ``completion_forward`` (through ``model``, so a DDP wrapper's hooks still run), but
    the forward pre-hook hands the LM head an empty slice of positions: the head computes (B, 0, V) logits, and
    the hidden states it was given are returned for ``core.logprobs.chunked_logprobs`` (issue 17: an update
    that never holds a micro-batch's full logits). ``share_prompt`` and ``packed`` as in ``completion_forward``.
    """
    if packed:
        return packed_pass(model, rollout, share_prompt=share_prompt, logits=False)[1]
    if share_prompt and (shared := shared_prompt_pass(model, rollout, starve=True, return_hidden=True)):
        return shared[1]
    inputs, start, t = _scored_inputs(model, rollout)
    caught: list[Tensor] = []
    with _head_hook(model, caught, starve=True):
        model(**inputs)
    _check_caught(caught, t + 1 if "logits_to_keep" in inputs else inputs["input_ids"].shape[1])
    return caught[0][:, start : start + t]  # (B, T, H)


def shared_prompt_pass(model, rollout: Rollout, *, starve: bool, return_hidden: bool):
    """``(logits, hidden)`` as ``completion_forward`` returns them, with each distinct prompt run once.

    A GRPO micro-batch holds G completions of each prompt, and a causal model's states over a prompt do not depend
    on what follows it, so the training forward need not run the prompt G times (the shared-prefix forward of
    Prefix Grouper, arXiv:2506.05433). The distinct prompts run once (U rows) into a KV cache; the cache rows are
    gathered to the B completions (an index, so the backward sums each prompt's gradient over its rows, exactly
    what B separate prompt forwards give); then the completions run on top of it. The last prompt position's
    output predicts the first completion token; the completion's own positions predict the rest, so the last
    completion token is never run. Logits and gradients equal ``completion_forward``'s to float rounding
    (tests/test_shared_prompt.py). Tokens run: U * Tp + B * (T - 1) instead of B * (Tp + T).

    With ``starve`` the LM head gets no positions (``completion_hidden``: logits None). Returns None when no two
    rows share a prompt (nothing to save: the caller runs the plain forward).
    """
    rollout = rollout.to(next(model.parameters()).device)
    first = int(rollout.prompt_mask.any(dim=0).int().argmax())  # columns left of it are padding in every row
    ids, mask = rollout.prompt_ids[:, first:], rollout.prompt_mask[:, first:]  # (B, Tp)
    first_rows, inverse = distinct_rows(ids, mask)  # (U,), (B,)
    if len(first_rows) == len(ids):
        return None
    tp, t = ids.shape[1], rollout.completion_ids.shape[1]
    whole = torch.cat([mask, rollout.completion_mask], dim=1)  # (B, Tp + T)
    positions = (whole.cumsum(dim=1) - 1).clamp(min=0)  # (B, Tp + T), numbered as _scored_inputs numbers them
    store = DynamicCache(config=_unwrapped(model).config)
    cache = {_cache_keyword(model): store}
    keep = {"logits_to_keep": 1} if _takes_logits_to_keep(model) else {}
    heads: list[Tensor] = []  # the LM head's inputs: the prompt pass's, then the completion pass's
    want_heads = return_hidden or starve
    with _head_hook(model, heads, starve=starve) if want_heads else _nothing():
        u_ids, u_mask = ids[first_rows], mask[first_rows]  # (U, Tp)
        u_positions = (u_mask.cumsum(dim=1) - 1).clamp(min=0)
        out = model(input_ids=u_ids, attention_mask=u_mask, position_ids=u_positions, use_cache=True, **cache, **keep)
        logits = [] if starve else [out.logits[:, -1:][inverse]]  # (B, 1, V): predicts the first completion token
        store.batch_select_indices(inverse)  # cache rows (U, ...) -> (B, ...)
        if t > 1:
            out = model(
                input_ids=rollout.completion_ids[:, :-1],
                attention_mask=whole[:, :-1],
                position_ids=positions[:, tp:-1],
                use_cache=True,
                **cache,
            )
            logits += [] if starve else [out.logits]  # (B, T - 1, V)
    if want_heads:
        if [h.shape[1] for h in heads] != [1 if keep else tp] + ([t - 1] if t > 1 else []):
            _check_caught([], 0)  # raises: the head did not see the positions it should have
        heads[0] = heads[0][:, -1:][inverse]  # (B, 1, H)
    hidden = torch.cat(heads, dim=1) if return_hidden else None  # (B, T, H)
    return (None if starve else torch.cat(logits, dim=1)), (hidden if return_hidden else None)


def _cache_keyword(model) -> str:
    """The forward's name for the KV cache: ``cache`` (transformers >= 5.x) or ``past_key_values``."""
    inner = _unwrapped(model)
    forward = getattr(inner, "forward", None) or inner.model.forward  # the LoRA reference wraps the policy in .model
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def _scored_inputs(model, rollout: Rollout) -> tuple[dict, int, int]:
    """The forward's keyword arguments for prompt + completion, the first scored position and T.

    With ``logits_to_keep = T + 1`` the head sees positions Tp - 1 .. Tp + T - 1 (start 0); without it, every
    position (start Tp - 1)."""
    rollout = rollout.to(next(model.parameters()).device)  # batches live on the CPU (Rollout.to)
    input_ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], dim=1)  # (B, Tp + T)
    attention_mask = torch.cat([rollout.prompt_mask, rollout.completion_mask], dim=1)  # (B, Tp + T)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, Tp + T)
    tp, t = rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "use_cache": False,
    }
    if _takes_logits_to_keep(model):  # the LM head sees only the positions that predict
        return {**inputs, "logits_to_keep": t + 1}, 0, t
    return inputs, tp - 1, t


@contextlib.contextmanager
def _head_hook(model, caught: list[Tensor], *, starve: bool):
    """Catch the LM head's input into ``caught`` while the block runs; with ``starve``, hand the head no
    position, so it computes no logits."""

    def hook(module, args):
        caught.append(args[0])
        return (args[0][:, :0], *args[1:]) if starve else None

    head = _unwrapped(model).get_output_embeddings()
    handle = head.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def _nothing():
    yield


def _check_caught(caught: list[Tensor], width: int) -> None:
    if len(caught) != 1 or caught[0].shape[1] != width:
        raise RuntimeError(
            "could not read the LM-head input of this model (NTHR and logprob_chunk need the last hidden state "
            "at every position); its forward does not call get_output_embeddings() once on the positions it scores"
        )


def _unwrapped(model):
    """The model inside a DDP / FSDP wrapper (which has no ``get_output_embeddings``)."""
    while not hasattr(model, "get_output_embeddings") and hasattr(model, "module"):
        model = model.module
    return model


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


def linear_head(model, needed_by: str = "nthr.scope 'batch'") -> tuple[Tensor, Tensor | None]:
    """(weight, bias) of the model's LM head when logits are exactly ``h W^T + b``; ValueError otherwise.

    Cross-group NTHR (``nthr.scope: batch``) and ``logprob_chunk`` recompute the softmax from the hidden states
    through this head instead of holding the logits; a head that is not one linear layer, or a model that softcaps
    its logits (Gemma 2), would give other probabilities than the policy's. ``needed_by`` names the option in the
    error.
    """
    head = model.get_output_embeddings()
    config = getattr(model, "config", None)
    softcap = getattr(config, "final_logit_softcapping", None)
    if not isinstance(head, torch.nn.Linear) or softcap:
        what = type(head).__name__ + (" with logit softcapping" if softcap else "")
        instead = "nthr.scope: group" if needed_by.startswith("nthr") else f"{needed_by.split()[0]}: 0"
        raise ValueError(
            f"{needed_by} needs a plain linear LM head (Llama, Qwen, SmolLM2); this model's is {what}: use {instead}"
        )
    if type(head.weight).__name__ == "DTensor":  # FSDP2 shards it: h W^T would need the gathered weight
        raise ValueError(
            f"{needed_by} reads the LM head's whole weight, which FSDP shards: use {needed_by.split()[0]}: 0"
        )
    return head.weight, head.bias
