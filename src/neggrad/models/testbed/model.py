"""The testbed policy: a tiny Qwen2-architecture causal LM, built in code from a TestbedModelConfig.

The default shape (H = 128, 4 layers, 4 query / 2 key-value heads, MLP 512, tied embeddings) has 0.99 M
parameters with the 23-token testbed vocabulary. Same seed, same weights, bit for bit.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from neggrad.config import TestbedModelConfig


def build_config(cfg: TestbedModelConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    """The Qwen2Config of the testbed model: vocabulary and special ids from ``tokenizer``, fp32, no dropout."""
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        attention_dropout=0.0,
        # No bos token is ever prepended; Qwen2 base models likewise set bos to their end-of-text id.
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype=torch.float32,
    )


def build_model(cfg: TestbedModelConfig, tokenizer: PreTrainedTokenizerFast, *, seed: int) -> Qwen2ForCausalLM:
    """A freshly initialised testbed model; the global torch RNG is left as it was."""
    config = build_config(cfg, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).to(torch.float32)
    generation = model.generation_config
    generation.eos_token_id = tokenizer.eos_token_id
    generation.pad_token_id = tokenizer.pad_token_id
    generation.bos_token_id = tokenizer.eos_token_id
    return model
