"""What the trainer needs of generation: the ``Rollout`` batch type and the ``Engine`` interface.

Every engine (``hf.HFRollout``, ``lean.LeanHFRollout``, ``vllm.VLLMRollout``) implements ``Engine``; the loop and the
strategies see only this interface, never an engine's class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass
class Rollout:
    """Completions of a batch of prompts, each prompt's group contiguous.

    Shapes: ``B`` completions, ``Tp`` prompt tokens (left padded), ``T`` completion tokens.
    """

    prompt_ids: Tensor  # (B, Tp) left padded
    prompt_mask: Tensor  # (B, Tp) 1 for real prompt tokens
    completion_ids: Tensor  # (B, T) pad after the first EOS
    completion_mask: Tensor  # (B, T) 1 up to and including the first EOS
    truncated: Tensor  # (B,) bool: no EOS within max_completion_length
    texts: list[str]  # (B,) decoded completions without EOS and padding
    offpolicy: Tensor | None = None  # (B, T) bool: hint tokens written into the completion, not sampled

    @property
    def lengths(self) -> Tensor:
        """(B,) completion tokens, EOS included."""
        return self.completion_mask.sum(dim=1)

    def to(self, device: torch.device | str) -> Rollout:
        """The same completions with every tensor on ``device`` (a no-op copy-free view where they already are).

        Convention: a batch lives on the CPU (indexing, concatenating refill rounds, per-row bookkeeping);
        a micro-batch moves to the model's device just before a forward pass."""
        return Rollout(
            self.prompt_ids.to(device),
            self.prompt_mask.to(device),
            self.completion_ids.to(device),
            self.completion_mask.to(device),
            self.truncated.to(device),
            self.texts,
            None if self.offpolicy is None else self.offpolicy.to(device),
        )

    def select(self, rows: Tensor) -> Rollout:
        """The completions at ``rows`` (a (B,) bool mask or index tensor)."""
        index = rows.nonzero().squeeze(1) if rows.dtype == torch.bool else rows
        return Rollout(
            self.prompt_ids[index],
            self.prompt_mask[index],
            self.completion_ids[index],
            self.completion_mask[index],
            self.truncated[index],
            [self.texts[i] for i in index.tolist()],
            None if self.offpolicy is None else self.offpolicy[index],
        )

    def trimmed(self) -> Rollout:
        """The same rows without the columns that are padding in every row: prompt columns on the left, completion
        columns after the longest completion. Scores at the kept positions are unchanged (padding is masked)."""
        first = int(self.prompt_mask.any(dim=0).int().argmax()) if self.prompt_mask.numel() else 0
        width = max(int(self.lengths.max()), 1) if self.completion_mask.numel() else self.completion_mask.shape[1]
        return Rollout(
            self.prompt_ids[:, first:],
            self.prompt_mask[:, first:],
            self.completion_ids[:, :width],
            self.completion_mask[:, :width],
            self.truncated,
            self.texts,
            None if self.offpolicy is None else self.offpolicy[:, :width],
        )


def distinct_rows(input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T) prompt rows -> ``first``: (U,) the first row of each distinct (ids, mask) row, in batch order, and
    ``inverse``: (B,) which of them each row equals (``input_ids[first][inverse] == input_ids``)."""
    batch = input_ids.shape[0]
    _, inverse = torch.unique(
        torch.cat([input_ids, attention_mask.to(input_ids.dtype)], 1), dim=0, return_inverse=True
    )
    rows = torch.arange(batch, device=input_ids.device)
    first = torch.full((int(inverse.max()) + 1,), batch, device=input_ids.device).scatter_reduce(
        0, inverse, rows, reduce="amin"
    )
    order = first.argsort()  # number the distinct rows by first appearance
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=input_ids.device)
    return first[order], rank[inverse]


def concat(parts: list[Rollout], pad_token_id: int) -> Rollout:
    """Join rollouts of different padded widths into one (prompts re-padded on the left)."""
    if len(parts) == 1:
        return parts[0]
    tp = max(p.prompt_ids.shape[1] for p in parts)
    t = max(p.completion_ids.shape[1] for p in parts)

    def left(x: Tensor, width: int, value: int) -> Tensor:
        return torch.nn.functional.pad(x, (width - x.shape[1], 0), value=value)

    def right(x: Tensor, width: int, value: int) -> Tensor:
        return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)

    return Rollout(
        torch.cat([left(p.prompt_ids, tp, pad_token_id) for p in parts]),
        torch.cat([left(p.prompt_mask, tp, 0) for p in parts]),
        torch.cat([right(p.completion_ids, t, pad_token_id) for p in parts]),
        torch.cat([right(p.completion_mask, t, 0) for p in parts]),
        torch.cat([p.truncated for p in parts]),
        [text for p in parts for text in p.texts],
        _concat_offpolicy(parts, t),
    )


def _concat_offpolicy(parts: list[Rollout], width: int) -> Tensor | None:
    """The parts' off-policy masks side by side (all False for parts without one), or None if no part has one."""
    if all(p.offpolicy is None for p in parts):
        return None
    masks = [
        torch.zeros(p.completion_ids.shape, dtype=torch.bool, device=p.completion_ids.device)
        if p.offpolicy is None
        else p.offpolicy
        for p in parts
    ]
    return torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1]), value=False) for m in masks])


@runtime_checkable
class Engine(Protocol):
    """A rollout engine: samples groups of completions from the current policy.

    ``tokenizer`` is the policy's; ``generate`` returns ``len(prompts) * num_generations`` completions, each
    prompt's group contiguous (greedy: one per prompt, no sampling); ``generate_with_prefix`` continues a given
    response prefix (the hint ladder; an engine that cannot raises ``NotImplementedError`` and the hint strategy
    refuses it at load). ``separate_weights`` is True where the engine samples from its own copy of the weights
    (vLLM): the loop then calls ``sync_weights`` after every optimizer step so the next batch comes from the
    updated policy; engines that sample from the training model itself keep it a no-op.
    """

    tokenizer: Any
    separate_weights: bool

    def generate(self, prompts: list[str], *, num_generations: int = 1, greedy: bool = False) -> Rollout: ...

    def generate_with_prefix(self, prompt: str, prefix: str, *, num_generations: int) -> Rollout: ...

    def sync_weights(self, model) -> None: ...
