"""Batched rollouts with Hugging Face ``generate``: left-padded prompts, KV cache, stop at EOS."""

from __future__ import annotations

import torch
from torch import Tensor

from neggrad.rollout.base import Rollout, concat  # noqa: F401 (concat: re-exported)


def completion_mask_from_ids(completion_ids: Tensor, eos_token_id: int) -> tuple[Tensor, Tensor]:
    """Mask of the tokens up to and including the first EOS, and which rows never reached EOS.

    Args:
        completion_ids: (B, T) generated tokens.
        eos_token_id: the stop token.

    Returns:
        (B, T) long mask, (B,) bool ``truncated``.
    """
    is_eos = completion_ids == eos_token_id  # (B, T)
    truncated = ~is_eos.any(dim=1)
    first_eos = torch.where(truncated, completion_ids.shape[1], is_eos.int().argmax(dim=1))  # (B,)
    positions = torch.arange(completion_ids.shape[1], device=completion_ids.device)  # (T,)
    return (positions[None, :] <= first_eos[:, None]).long(), truncated


class HFRollout:
    """Sample completions with ``model.generate`` (the default backend; vLLM plugs in beside it). An ``Engine``
    (rollout/base.py)."""

    separate_weights = False  # samples from the training model itself

    def __init__(
        self,
        model,
        tokenizer,
        *,
        max_completion_length: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
    ):
        if tokenizer.padding_side != "left":
            raise ValueError("the tokenizer must pad on the left for batched generation (padding_side='left')")
        self.model = model
        self.tokenizer = tokenizer
        self.max_completion_length = max_completion_length
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k  # 0: off

    def sync_weights(self, model) -> None:
        """Nothing to copy: generation reads the training model's own weights."""

    @classmethod
    def from_config(cls, model, tokenizer, config) -> HFRollout:
        """The engine a run's config asks for (``max_completion_length``, ``temperature``, ``top_p``)."""
        return cls(
            model,
            tokenizer,
            max_completion_length=config.max_completion_length,
            temperature=config.temperature,
            top_p=config.top_p,
        )

    @torch.no_grad()
    def generate(self, prompts: list[str], *, num_generations: int = 1, greedy: bool = False) -> Rollout:
        """``num_generations`` completions of each prompt, groups contiguous: B = len(prompts) * G."""
        expanded = [p for p in prompts for _ in range(num_generations)]
        enc = self.tokenizer(expanded, return_tensors="pt", padding=True, add_special_tokens=False)
        device = next(self.model.parameters()).device
        prompt_ids, prompt_mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        out = self._sample(prompt_ids, prompt_mask, self.max_completion_length, greedy=greedy)
        completion_ids, completion_mask, truncated, texts = self._completions(out[:, prompt_ids.shape[1] :])
        return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, truncated, texts).to("cpu")

    def _sample(self, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int, *, greedy: bool) -> Tensor:
        """(B, Tp + n) prompt ids then n <= ``max_new_tokens`` sampled ones (pad after a row's EOS), from the model in
        eval mode; the engine's temperature, top-k and top-p unless ``greedy``."""
        was_training = self.model.training
        self.model.eval()
        sampling = {} if greedy else {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}
        try:
            return self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=not greedy,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
                use_cache=True,
                **sampling,
            )
        finally:
            self.model.train(was_training)

    def _completions(self, completion_ids: Tensor) -> tuple[Tensor, Tensor, Tensor, list[str]]:
        """(B, T) generated ids -> ids padded after the first EOS, their mask, ``truncated`` and the texts."""
        completion_mask, truncated = completion_mask_from_ids(completion_ids, self.tokenizer.eos_token_id)
        completion_ids = completion_ids.masked_fill(completion_mask == 0, self.tokenizer.pad_token_id)
        return (
            completion_ids,
            completion_mask,
            truncated,
            self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True),
        )

    @torch.no_grad()
    def generate_with_prefix(self, prompt: str, prefix: str, *, num_generations: int) -> Rollout:
        """``num_generations`` continuations of ``prompt`` whose response starts with ``prefix`` (a hint).

        The prefix is tokenized on its own and appended to the prompt's ids, so the completion the trainer sees
        (``prefix ids + sampled ids``) is exactly what the model was conditioned on; ``offpolicy`` marks the
        prefix tokens. The sampled part may be shortened so the completion fits ``max_completion_length``.
        """
        device = next(self.model.parameters()).device
        p_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        h_ids = self.tokenizer(prefix, add_special_tokens=False)["input_ids"][: self.max_completion_length - 1]
        ids = torch.tensor([p_ids + h_ids] * num_generations, device=device)  # (G, Tp + Th), no padding needed
        out = self._sample(ids, torch.ones_like(ids), self.max_completion_length - len(h_ids), greedy=False)
        # (G, Th + new): the prefix, then the sampled tokens
        completion_ids, completion_mask, truncated, texts = self._completions(out[:, len(p_ids) :])
        offpolicy = torch.zeros(completion_ids.shape, dtype=torch.bool, device=device)
        offpolicy[:, : len(h_ids)] = True
        prompt_ids = torch.tensor([p_ids] * num_generations, device=device)
        return Rollout(
            prompt_ids, torch.ones_like(prompt_ids), completion_ids, completion_mask, truncated, texts, offpolicy
        ).to("cpu")
