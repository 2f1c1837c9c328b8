"""Loading the policy: the testbed (built locally, SFT warm start cached) or a Hugging Face model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from neggrad.config import Config

logger = logging.getLogger(__name__)


def _load_testbed_folder(path: Path):
    from transformers import Qwen2ForCausalLM

    from neggrad.testbed.tokenizer import load_tokenizer

    return Qwen2ForCausalLM.from_pretrained(path, dtype=torch.float32), load_tokenizer(path)


def _load_hf(name_or_path: str | Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32)
    return model, tokenizer


def load_policy(
    config: Config, *, checkpoint: Path | None = None, progress: Callable[[dict], None] | None = None
) -> tuple[torch.nn.Module, object, dict]:
    """The policy to train and its tokenizer, plus facts for the summary (e.g. the SFT start's accuracy).

    ``checkpoint`` (a ``checkpoints/step-N/model`` folder) replaces the starting weights on resume.
    """
    testbed = config.model.name_or_path == "testbed"
    info: dict = {}
    if checkpoint is not None:
        model, tokenizer = _load_testbed_folder(checkpoint) if testbed else _load_hf(checkpoint)
    elif testbed:
        from neggrad.testbed.model import build_model
        from neggrad.testbed.sft import warm_start
        from neggrad.testbed.tokenizer import build_tokenizer

        if config.sft.enabled:
            ws = warm_start(config.model.testbed, config.task, config.sft, seed=config.seed, progress=progress)
            info = {"sft_accuracy": ws.accuracy, "sft_steps": ws.steps, "sft_cached": ws.cached}
            model, tokenizer = _load_testbed_folder(ws.path)
        else:
            tokenizer = build_tokenizer()
            model = build_model(config.model.testbed, tokenizer, seed=config.seed)
    else:
        model, tokenizer = _load_hf(config.model.name_or_path)
    info["parameters"] = sum(p.numel() for p in model.parameters())
    return model, tokenizer, info
