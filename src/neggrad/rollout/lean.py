"""Lean Hugging Face rollouts (``rollout.backend: hf_lean``): a pre-allocated static KV cache and a plain decode loop.

``generate`` pays, every token, for input preparation, a growing (concatenated) KV cache, a fresh attention mask
built from the 2D padding mask, logits-processor and stopping-criteria objects. Here the cache is allocated once
(``transformers.StaticCache``, prompt + ``max_new_tokens`` long), the decode mask is one comparison against a
pre-computed key mask, and sampling is a few tensor ops, while the model's forward is the same call.

Same semantics as ``generate`` in ``HFRollout``: positions from the left-padded mask, temperature, then top-k, then
top-p (the same rules: top-k keeps ties with the k-th score, top-p keeps the smallest set whose mass exceeds
``top_p``), one ``torch.multinomial`` draw per step for the whole batch (so a seed gives the same tokens), pad
after EOS, stop when every row has ended. What can differ is float rounding: attention runs over the whole
pre-allocated cache (masked) instead of the keys seen so far, so logits may differ from ``generate``'s in the
last bits and, rarely, a draw that falls on a boundary picks a neighbouring token. tests/test_lean_rollout.py
checks both: the same tokens as ``generate`` on a tiny model, and the distribution of every sampled token equal
to the model's own (a full forward over the finished sequences) to float tolerance.

``rollout.compact`` (``LeanHFRollout(compact=True)``, ``decode_compact``) does less work per rollout. Rollouts come
as P prompts x G completions, so each distinct prompt row is prefilled once and its KV-cache rows copied to the
rows that share it; rows that have sampled EOS leave the batch (the cache rows with them, in bulk once they are
1/8 of it), so later steps decode only the live rows; and where ``rollout.slim`` supports the model (Llama and
Qwen2, default rotary embedding, float32 on the CPU) the decode steps run its slim step instead of the model's
forward. Its random numbers are drawn for the rows in the batch only, so it does not give ``generate``'s tokens
for a seed. Its contract instead, checked by tests/test_lean_compact.py:

- the same seed gives the same tokens (reproducible);
- each sampled token is drawn from the model's own distribution, temperature, top-k and top-p applied (the scores
  of every step equal a full forward's over the finished sequences, to float tolerance);
- the same output: left-padded prompts, pad after EOS, the same ``Rollout`` fields and truncated flags, hints
  (``generate_with_prefix``) included;
- greedy decoding gives ``generate``'s greedy tokens (up to float rounding on exact ties).
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import GenerationConfig, StaticCache

from neggrad.rollout.base import distinct_rows
from neggrad.rollout.hf import HFRollout
from neggrad.rollout.slim import slim_decode_step

UNSUPPORTED = (
    "repetition_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "min_length",
    "min_new_tokens",
    "sequence_bias",
    "suppress_tokens",
    "begin_suppress_tokens",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "exponential_decay_length_penalty",
    "remove_invalid_values",
    "renormalize_logits",
    "min_p",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "top_h",
    "guidance_scale",
    "watermarking_config",
)
"""Settings of a model's ``generation_config`` that ``generate`` would apply and this loop does not."""


def filter_scores(scores: Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """(B, V) float32 logits -> the scores sampling draws from: divided by ``temperature``, then every token below
    the k-th highest score and outside the top-p nucleus set to -inf (``top_k`` 0 / ``top_p`` 1: off)."""
    if temperature != 1.0:
        scores = scores / temperature
    if top_k and top_k < scores.shape[-1]:
        kth = scores.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        # ascending: a token is dropped when the mass of it and every smaller one is at most 1 - top_p;
        # the most likely token always stays
        ordered, order = scores.sort(dim=-1)
        drop = ordered.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
        drop[:, -1] = False
        scores = scores.masked_fill(torch.zeros_like(drop).scatter(1, order, drop), float("-inf"))
    return scores


class LeanHFRollout(HFRollout):
    """``HFRollout`` whose sampling loop is ``decode`` below instead of ``model.generate``."""

    def __init__(self, model, tokenizer, *, compact: bool = False, **kwargs):
        super().__init__(model, tokenizer, **kwargs)
        self.compact = compact  # rollout.compact: decode_compact instead of decode
        self.forward_rows: list[int] = []  # decode_compact: the batch of each forward of the last call
        # decode_compact drops ended rows once they are at least this share of the batch: a drop copies every live
        # row's cache (on the testbed a quarter of a row's decode forward), so dropping after every EOS cost more
        # than it saved (rollout_speed.py --stop eos --num-generations 8, model forward: 0.27 s against 0.22 s at 1/8)
        self.compact_at = 1 / 8
        # decode_compact's decode steps run rollout.slim's SlimDecodeStep where it supports the model (Llama and
        # Qwen2 with the default rotary embedding): 1.25-2x faster per forward than the model's on the testbed
        self.slim = True
        config = getattr(model, "generation_config", None) or GenerationConfig()
        default = GenerationConfig()
        extra = [k for k in UNSUPPORTED if getattr(config, k, None) != getattr(default, k, None)]
        if extra:
            raise ValueError(
                f"rollout.backend hf_lean samples with temperature, top-k and top-p only, but the model's "
                f"generation_config also sets {', '.join(extra)}: use rollout.backend hf (transformers generate)"
            )

    @classmethod
    def from_config(cls, model, tokenizer, config) -> LeanHFRollout:
        """``HFRollout.from_config``, plus ``rollout.compact``."""
        engine = super().from_config(model, tokenizer, config)
        engine.compact = config.rollout.compact
        return engine

    @torch.no_grad()
    def _sample(self, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int, *, greedy: bool) -> Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            decode = self.decode_compact if self.compact else self.decode
            return decode(input_ids, attention_mask, max_new_tokens, greedy=greedy)[0]
        finally:
            self.model.train(was_training)

    def decode(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        max_new_tokens: int,
        *,
        greedy: bool = False,
        keep_scores: bool = False,
    ) -> tuple[Tensor, list[Tensor]]:
        """(B, Tp) left-padded prompts -> (B, Tp + n) with n <= ``max_new_tokens`` new tokens, as ``_sample``; and,
        with ``keep_scores``, the n (B, V) filtered float32 scores each step drew from (for tests)."""
        model, eos, pad = self.model, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        batch, prompt_len = input_ids.shape
        total = prompt_len + max_new_tokens
        device = input_ids.device
        cache = StaticCache(config=model.config, max_cache_len=total)
        # key j is attended by the query at cache slot i when j <= i and j is not left padding
        keys_valid = torch.ones(batch, total, dtype=torch.bool, device=device)
        keys_valid[:, :prompt_len] = attention_mask.bool()
        slots = torch.arange(total, device=device)
        step_mask = self._mask_maker(model, keys_valid)
        # positions as generate numbers them: 0 from each row's first real token (pads: 0)
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        next_position = positions[:, -1:] + 1  # (B, 1)
        out = torch.full((batch, max_new_tokens), pad, dtype=input_ids.dtype, device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        scores_kept = []
        # prefill: the model builds its own mask from the 2D one (pad query rows as generate has them)
        logits = model(
            input_ids=input_ids,
            attention_mask=keys_valid.long(),
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits
        steps = 0
        for step in range(max_new_tokens):
            token, scores = self._draw(logits[:, -1], greedy)
            if keep_scores:
                scores_kept.append(scores)
            token = token.masked_fill(done, pad)
            out[:, step] = token
            done |= token == eos
            steps = step + 1
            if steps == max_new_tokens or bool(done.all()):
                break
            slot = prompt_len + step
            logits = model(
                input_ids=token[:, None],
                attention_mask=step_mask(slots <= slot),
                position_ids=next_position + step,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits
        return torch.cat([input_ids, out[:, :steps]], dim=1), scores_kept

    def _draw(self, logits: Tensor, greedy: bool) -> tuple[Tensor, Tensor]:
        """(n, V) logits of the last position -> (n,) tokens and the (n, V) float32 scores they came from: the argmax
        when ``greedy``, else one ``torch.multinomial`` draw per row from the filtered scores."""
        scores = logits.to(dtype=torch.float32)
        if greedy:
            return scores.argmax(dim=-1), scores
        scores = filter_scores(scores, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        return torch.multinomial(scores.softmax(dim=-1), num_samples=1).squeeze(1), scores

    def decode_compact(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        max_new_tokens: int,
        *,
        greedy: bool = False,
        keep_scores: bool = False,
    ) -> tuple[Tensor, list[Tensor]]:
        """``decode`` doing less work (``rollout.compact``): each distinct prompt row is prefilled once and its KV
        cache copied to the rows that share it, and rows that have sampled EOS leave the batch (cache rows included)
        once they are ``compact_at`` of it, so later steps decode only the live rows. Returns what ``decode`` does;
        the kept (B, V) scores are NaN on rows that had already ended. ``self.forward_rows`` records the batch of
        each forward (prefill first)."""
        model, eos, pad = self.model, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        batch, prompt_len = input_ids.shape
        total = prompt_len + max_new_tokens
        device = input_ids.device
        cache = StaticCache(config=model.config, max_cache_len=total)
        valid = torch.ones(batch, total, dtype=torch.bool, device=device)  # (live, L): keys that are not padding
        valid[:, :prompt_len] = attention_mask.bool()
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        logits = self._shared_prefill(input_ids, valid, positions, cache)  # (B, V)
        slim = slim_decode_step(model) if self.slim else None  # None: the model's own forward decodes
        live = torch.arange(batch, device=device)  # the batch row each cache row holds
        next_position = positions[:, -1:] + 1  # (live, 1)
        slots = torch.arange(total, device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)  # (live,): ended, not yet dropped
        out = torch.full((batch, max_new_tokens), pad, dtype=input_ids.dtype, device=device)
        scores_kept, steps = [], 0
        for step in range(max_new_tokens):
            token, scores = self._draw(logits, greedy)
            token = token.masked_fill(done, pad)
            out[live, step] = token
            if keep_scores:
                scores = scores.masked_fill(done[:, None], float("nan"))
                scores_kept.append(
                    scores.new_full((batch, scores.shape[-1]), float("nan")).index_copy_(0, live, scores)
                )
            steps, done = step + 1, done | (token == eos)
            ended = int(done.sum())
            if steps == max_new_tokens or ended == len(live):
                break
            if ended and ended >= self.compact_at * len(live):  # drop the ended rows from the batch and the cache
                keep = (~done).nonzero().squeeze(1)
                cache.reorder_cache(keep)
                live, token, valid, next_position, done = (x[keep] for x in (live, token, valid, next_position, done))
            self.forward_rows.append(len(live))
            allowed, slot = valid & (slots <= prompt_len + step), prompt_len + step
            if slim is not None:
                logits = slim(token, next_position + step, allowed, slot, cache)
                continue
            logits = model(
                input_ids=token[:, None],
                attention_mask=self._attention_mask(model, allowed),
                position_ids=next_position + step,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1]
        return torch.cat([input_ids, out[:, :steps]], dim=1), scores_kept

    def _shared_prefill(self, input_ids: Tensor, valid: Tensor, positions: Tensor, cache: StaticCache) -> Tensor:
        """Prefill each distinct prompt row once into ``cache``, then copy its cache rows to every row of the batch
        that holds the same prompt; return the (B, V) logits of the last prompt position."""
        first, inverse = distinct_rows(input_ids, valid[:, : input_ids.shape[1]])
        self.forward_rows = [len(first)]
        logits = self.model(
            input_ids=input_ids[first],
            attention_mask=valid[first].long(),
            position_ids=positions[first],
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]
        if len(first) < len(inverse):
            cache.reorder_cache(inverse)
            logits = logits[inverse]
        return logits

    @staticmethod
    def _mask_maker(model, keys_valid: Tensor):
        """``f((L,) bool: slots filled so far) -> the 4D mask of one decode step`` over the rows of ``keys_valid``."""
        return lambda filled: LeanHFRollout._attention_mask(model, keys_valid & filled)

    @staticmethod
    def _attention_mask(model, allowed: Tensor) -> Tensor:
        """(B, L) bool, key j visible to the step's query -> the mask in the form the model's attention takes: 4D
        bool for SDPA, 4D additive for eager; other kernels get the 2D mask and build their own."""
        kind = getattr(model.config, "_attn_implementation", None)
        if kind == "sdpa":
            return allowed[:, None, None, :]
        if kind == "eager":
            return torch.zeros(allowed[:, None, None, :].shape, dtype=model.dtype, device=allowed.device).masked_fill(
                ~allowed[:, None, None, :], torch.finfo(model.dtype).min
            )
        return allowed.long()
