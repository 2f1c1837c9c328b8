"""Supervised warm start of the testbed model, stopped at a middling accuracy and cached on disk.

RL needs a policy that is sometimes right: from scratch every group is all-wrong and carries no
signal. So we teacher-force worked solutions (``prompt + solution + eos``, loss on the completion
only) until greedy accuracy on the SFT check set first reaches ``sft.target_accuracy``, and stop
there, leaving RL a policy whose sampled groups mostly mix right and wrong answers.

The result is cached under ``<cache_dir>/testbed-<key>``, where the key hashes every setting that
changes it (model, task, SFT settings, seed, TESTBED_VERSION). A folder is written whole into a
temporary sibling and renamed into place, and only a folder whose ``meta.json`` matches its key
counts as a cache hit, so an interrupted build is rebuilt rather than loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from neggrad.config import SFTConfig, TaskConfig, TestbedModelConfig
from neggrad.models.testbed.model import build_model
from neggrad.models.testbed.tokenizer import build_tokenizer
from neggrad.tasks.testbed import Problem, max_solution_chars, sft_check_problems, sft_problem
from neggrad.tasks.verifiers.arithmetic import score

logger = logging.getLogger(__name__)

TESTBED_VERSION = 2
"""Bump when the task, tokenizer, model or SFT recipe changes what a warm start is, so old caches go stale."""
IGNORE_INDEX = -100
"""Label of tokens without loss (prompt and padding), as Hugging Face's causal LM loss expects."""

# The recipe around sft.learning_rate and sft.batch_size. Accuracy sits near 0 through a loss plateau
# (~0.3 nats/token on 2-digit operands), then rises by tens of points within 50-100 steps, which is why
# the run checks often and stops at the first check past the target. With batch 32-64 and lr 1e-3 to
# 2e-3 these settings reached the target in every run we measured; they were not ablated one by one.
WARMUP_STEPS = 50
"""Linear learning-rate warm-up from lr / 50 to lr, the usual guard for Adam on a fresh transformer."""
WEIGHT_DECAY = 0.1
"""AdamW decoupled weight decay."""
ADAM_BETAS = (0.9, 0.98)
"""AdamW betas; beta2 below the 0.999 default lets the second moment follow this short run."""
MAX_GRAD_NORM = 1.0
"""Global gradient-norm clip."""


@dataclass(frozen=True)
class WarmStart:
    """A warm-started testbed model on disk."""

    path: Path
    """Folder for ``Qwen2ForCausalLM.from_pretrained`` and ``load_tokenizer``; also holds meta.json."""
    accuracy: float
    """Greedy accuracy on the SFT check set when training stopped."""
    steps: int
    """SFT optimizer steps taken."""
    cached: bool
    """True when the folder was found in the cache rather than trained now."""


def cache_root(sft_cfg: SFTConfig) -> Path:
    """``sft.cache_dir``, else ``$NEGGRAD_CACHE``, else ``~/.cache/neggrad``."""
    return Path(sft_cfg.cache_dir or os.environ.get("NEGGRAD_CACHE") or Path.home() / ".cache" / "neggrad")


def is_cached(model_cfg: TestbedModelConfig, task_cfg: TaskConfig, sft_cfg: SFTConfig, *, seed: int) -> bool:
    """Whether ``warm_start`` with these settings would load a finished warm start rather than train one."""
    key = cache_key(model_cfg, task_cfg, sft_cfg, seed=seed)
    return _read_meta(cache_root(sft_cfg) / f"testbed-{key}", key) is not None


def cache_key(model_cfg: TestbedModelConfig, task_cfg: TaskConfig, sft_cfg: SFTConfig, *, seed: int) -> str:
    """16 hex digits of the SHA-256 of every setting that changes the warm start (not where it is cached)."""
    settings = {
        "model": model_cfg.model_dump(mode="json"),
        "task": task_cfg.model_dump(mode="json"),
        "sft": sft_cfg.model_dump(mode="json", exclude={"cache_dir", "seed"}),  # the seed used is below
        "seed": seed,
        "version": TESTBED_VERSION,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@torch.no_grad()
def greedy_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    prompts: list[str],
    *,
    batch_size: int = 128,
    max_new_tokens: int,
) -> list[str]:
    """Greedy completion of each prompt, special tokens removed (the tokenizer must pad on the left)."""
    if tokenizer.padding_side != "left":
        raise ValueError("batched generation needs tokenizer.padding_side='left'; pass it to the constructor")
    was_training = model.training
    model.eval()
    completions: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        output = model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )  # (b, prompt_len + new tokens)
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        completions += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    model.train(was_training)
    return completions


def greedy_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    prompts: list[str],
    answers: list[str],
    *,
    batch_size: int = 128,
    max_new_tokens: int,
) -> float:
    """Fraction of prompts whose greedy completion's final answer matches (see ``rewards.arithmetic.score``)."""
    if not prompts:
        raise ValueError("greedy_accuracy needs at least one prompt")
    completions = greedy_completions(model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens)
    correct = score(completions, answers)
    return sum(correct) / len(correct)


def sft_batch(tokenizer: PreTrainedTokenizerFast, problems: list[Problem]) -> dict[str, torch.Tensor]:
    """Teacher-forcing batch of ``prompt + solution + eos``, padded on the right, labels only on the completion.

    Right padding keeps every real token at positions 0..L-1, the positions ``generate`` gives a
    left-padded prompt (it derives position ids from the attention mask).

    Returns:
        input_ids, attention_mask, labels: each (b, L); labels are IGNORE_INDEX on prompt and padding.
    """
    rows = []
    for problem in problems:
        prompt_ids = tokenizer(problem.prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(problem.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((prompt_ids, completion_ids))
    length = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)  # (b, L)
    labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)  # (b, L)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)  # (b, L)
    for i, (prompt_ids, completion_ids) in enumerate(rows):
        n = len(prompt_ids) + len(completion_ids)
        input_ids[i, :n] = torch.tensor(prompt_ids + completion_ids)
        labels[i, len(prompt_ids) : n] = torch.tensor(completion_ids)
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _read_meta(folder: Path, key: str) -> dict | None:
    """The folder's meta.json if it is a complete warm start with this key, else None."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    complete = (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    if not complete or not isinstance(meta, dict) or meta.get("key") != key:
        return None
    return meta


def _train(
    model_cfg: TestbedModelConfig,
    task_cfg: TaskConfig,
    sft_cfg: SFTConfig,
    *,
    seed: int,
    progress: Callable[[dict], None] | None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast, float, int]:
    """Teacher-force until greedy check accuracy reaches the target; returns model, tokenizer, accuracy, steps."""
    tokenizer = build_tokenizer()
    model = build_model(model_cfg, tokenizer, seed=seed)
    max_new_tokens = max_solution_chars(task_cfg) + 1  # one token per character, plus eos
    longest_prompt = len("Q: ") + task_cfg.max_operands * (task_cfg.digits + 1)
    if longest_prompt + max_new_tokens > model_cfg.max_position_embeddings:
        raise ValueError(
            f"prompt + solution can reach {longest_prompt + max_new_tokens} tokens, more than "
            f"model.testbed.max_position_embeddings = {model_cfg.max_position_embeddings}: raise it"
        )
    check = sft_check_problems(task_cfg, sft_cfg.eval_size)
    check_prompts, check_answers = [p.prompt for p in check], [p.answer for p in check]
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=sft_cfg.learning_rate, betas=ADAM_BETAS, weight_decay=WEIGHT_DECAY
    )
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda done: min(1.0, (done + 1) / WARMUP_STEPS))
    model.train()
    accuracy, step, started = 0.0, 0, time.perf_counter()
    while step < sft_cfg.max_steps:
        problems = [sft_problem(task_cfg, step * sft_cfg.batch_size + i) for i in range(sft_cfg.batch_size)]
        loss = model(**sft_batch(tokenizer, problems)).loss  # mean over completion tokens
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        warmup.step()
        step += 1
        evaluated = step % sft_cfg.eval_every == 0 or step == sft_cfg.max_steps
        if evaluated:
            accuracy = greedy_accuracy(model, tokenizer, check_prompts, check_answers, max_new_tokens=max_new_tokens)
            logger.debug("sft step %d: loss %.4f, check accuracy %.3f", step, loss.item(), accuracy)
        if progress is not None:
            progress({"step": step, "max_steps": sft_cfg.max_steps, "loss": loss.item(), "accuracy": accuracy})
        if evaluated and accuracy >= sft_cfg.target_accuracy:
            break
    if accuracy < sft_cfg.target_accuracy:
        logger.warning(
            "SFT warm start stopped at max_steps = %d with check accuracy %.3f < target %.3f: "
            "raise sft.max_steps or sft.learning_rate, or lower sft.target_accuracy",
            sft_cfg.max_steps,
            accuracy,
            sft_cfg.target_accuracy,
        )
    logger.info("SFT warm start: accuracy %.3f after %d steps (%.0f s)", accuracy, step, time.perf_counter() - started)
    return model, tokenizer, accuracy, step


def warm_start(
    model_cfg: TestbedModelConfig,
    task_cfg: TaskConfig,
    sft_cfg: SFTConfig,
    *,
    seed: int,
    progress: Callable[[dict], None] | None = None,
) -> WarmStart:
    """Load the cached warm start for these settings, or train and cache it.

    ``progress`` is called after every training step with ``{"step", "max_steps", "loss",
    "accuracy"}`` (accuracy: the latest check, 0.0 before the first). It is not called on a cache hit.
    """
    key = cache_key(model_cfg, task_cfg, sft_cfg, seed=seed)
    root = cache_root(sft_cfg)
    folder = root / f"testbed-{key}"
    meta = _read_meta(folder, key)
    if meta is not None:
        logger.info("SFT warm start found in cache: %s", folder)
        return WarmStart(path=folder, accuracy=meta["accuracy"], steps=meta["steps"], cached=True)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, tokenizer, accuracy, steps = _train(model_cfg, task_cfg, sft_cfg, seed=seed, progress=progress)

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".testbed-{key}.", dir=root))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        meta = {
            "key": key,
            "accuracy": accuracy,
            "steps": steps,
            "seed": seed,
            "testbed_version": TESTBED_VERSION,
            "model": model_cfg.model_dump(mode="json"),
            "task": task_cfg.model_dump(mode="json"),
            "sft": sft_cfg.model_dump(mode="json", exclude={"cache_dir", "seed"}),  # the seed used is "seed"
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=2))  # written last: marks the folder complete
        if folder.exists():
            logger.warning("replacing incomplete SFT cache folder %s", folder)
            shutil.rmtree(folder)
        os.rename(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if _read_meta(folder, key) is None:  # not another process that finished first: a real failure
            raise
    return WarmStart(path=folder, accuracy=accuracy, steps=steps, cached=False)
