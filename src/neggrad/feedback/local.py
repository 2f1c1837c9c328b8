"""The ``local`` judge: any Hugging Face causal LM, run in-process, greedy, with the strict verdict parser.

The prompt is ``feedback.prompt_template`` (``judge.DEFAULT_TEMPLATE`` when unset), wrapped in the
tokenizer's chat template when it has one. A reply that does not end with a verdict line, a prompt too
long for the model's context, or an error inside ``generate`` is a failure for that response, never a
crash. Replies are cached on disk by (model, max_new_tokens, prompt).
"""

from __future__ import annotations

import logging
import time

import torch

from neggrad.feedback.cache import JudgeCache
from neggrad.feedback.judge import DEFAULT_TEMPLATE, JudgeRequest, Verdict, failure, parse_verdict, render_prompt

logger = logging.getLogger(__name__)


class LocalJudge:
    """A causal LM judge in this process (``feedback.judge: local``)."""

    name = "local"

    def __init__(
        self,
        model,
        tokenizer,
        *,
        model_id: str,
        template: str = DEFAULT_TEMPLATE,
        max_new_tokens: int = 512,
        batch_size: int = 8,
        cache: JudgeCache | None = None,
    ):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.template, self.max_new_tokens, self.batch_size = template, max_new_tokens, batch_size
        self.cache = cache
        self.model_id = model_id
        self.context = getattr(model.config, "max_position_embeddings", None)

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: str = "auto", **kwargs) -> LocalJudge:
        """Load a hub id or local folder; ``device`` "auto" picks CUDA when available."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path, padding_side="left")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype="auto")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(model.to(device), tokenizer, model_id=name_or_path, **kwargs)

    def _text(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": prompt}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return prompt

    @torch.inference_mode()
    def _generate(self, prompts: list[str]) -> list[str]:
        encoded = self.tokenizer(
            [self._text(p) for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.model.device)
        output = self.model.generate(
            **encoded,
            do_sample=False,
            max_new_tokens=self.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )  # (b, Tp + new)
        new_tokens = output[:, encoded["input_ids"].shape[1] :]  # (b, new)
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def judge(self, requests: list[JudgeRequest]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(requests)
        pending: list[tuple[int, str]] = []
        for i, request in enumerate(requests):
            if not request.steps:
                verdicts[i] = failure("the response has no steps")
                continue
            prompt = render_prompt(request, self.template)
            reply = self.cache.get(prompt) if self.cache else None
            if reply is not None:
                verdicts[i] = parse_verdict(reply, len(request.steps)).with_timing(cached=True, latency_s=0.0)
                continue
            length = len(self.tokenizer(self._text(prompt), add_special_tokens=False)["input_ids"])
            if self.context is not None and length + self.max_new_tokens > self.context:
                verdicts[i] = failure(
                    f"prompt of {length} tokens + {self.max_new_tokens} new ones exceeds the judge model's "
                    f"context of {self.context}",
                    len(request.steps),
                )
                continue
            pending.append((i, prompt))
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start : start + self.batch_size]
            t0 = time.perf_counter()
            try:
                replies = self._generate([prompt for _, prompt in chunk])
            except Exception as err:  # a judge failure must never stop the run (issue 6)
                logger.warning("local judge: generate failed for %d responses: %s", len(chunk), err)
                for i, _ in chunk:
                    verdicts[i] = failure(f"local judge error: {type(err).__name__}", len(requests[i].steps))
                continue
            latency = (time.perf_counter() - t0) / len(chunk)
            for (i, prompt), reply in zip(chunk, replies, strict=True):
                if self.cache:
                    self.cache.put(prompt, reply)
                verdicts[i] = parse_verdict(reply, len(requests[i].steps)).with_timing(cached=False, latency_s=latency)
        return verdicts  # type: ignore[return-value]
