"""Rollout engines: Hugging Face ``generate`` (``hf.py``, the default), its lean loop (``lean.py``) and vLLM
(``vllm.py``, optional extra)."""

from __future__ import annotations

from neggrad.rollout.hf import HFRollout


def build_rollout(model, tokenizer, config):
    """The engine ``config.rollout.backend`` names, sampling from ``model`` with the run's sampling settings."""
    if config.rollout.backend == "vllm":
        from neggrad.rollout.vllm import VLLMRollout  # imports vllm itself only when built

        return VLLMRollout.from_config(model, tokenizer, config)
    if config.rollout.backend == "hf_lean":
        from neggrad.rollout.lean import LeanHFRollout

        return LeanHFRollout.from_config(model, tokenizer, config)
    return HFRollout.from_config(model, tokenizer, config)
