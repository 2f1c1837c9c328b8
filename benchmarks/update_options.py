"""The update's time with the options that make it do less work, against the plain update, on the same batches.

    python benchmarks/update_options.py                 # testbed model, 8 prompts x 8, up to 32 tokens, 5 trials
    python benchmarks/update_options.py --trials 9 --threads 2

Arms (each a set of neggrad config overrides on top of the same GRPO step, ``loss_type: grpo``, 64 completions):

- ``plain``: one micro-batch of 64, the prompt run once per completion;
- ``share``: ``share_prompt_forward`` (each distinct prompt once, the completions on its KV cache);
- ``group2`` / ``share+group2``: ``group_by_length`` with two micro-batches of 32 (shortest completions first, each
  micro-batch without its all-padding columns), without and with the shared prompt;
- ``share+group4``: the same with four micro-batches of 16;
- ``packed`` / ``share+packed``: ``remove_padding`` (the real tokens only), without and with the shared prompt.

A few batches are sampled once from the random-init testbed model (EOS about 1 token in 23, so completion lengths
vary and a third reach the limit). Then, trial by trial and arm after arm, ``policy_update`` runs on each batch
from a fresh copy of the same weights and a fresh fused AdamW (the trainer's own), and its wall time is recorded.
Printed: the median seconds per update of each arm and its ratio to ``plain``. Every arm computes the same loss
and gradient up to float rounding (tests/test_shared_prompt.py, tests/test_group_by_length.py,
tests/test_packed_forward.py).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import statistics
import time

importlib.import_module("neggrad.cli").choose_omp_wait_policy()  # as the `neggrad` command does, before torch loads

import torch  # noqa: E402

BASE = [
    "method=grpo",
    "seed=0",
    "sft.enabled=false",
    "num_generations=8",
    "temperature=1.0",
    "per_device_train_batch_size=64",
    "gradient_accumulation_steps=1",
    "loss_type=grpo",
    "lld.enabled=false",
    "learning_rate=1e-5",
]
ARMS = {
    "plain": [],
    "share": ["share_prompt_forward=true"],
    "group2": ["group_by_length=true", "per_device_train_batch_size=32", "gradient_accumulation_steps=2"],
    "share+group2": [
        "share_prompt_forward=true",
        "group_by_length=true",
        "per_device_train_batch_size=32",
        "gradient_accumulation_steps=2",
    ],
    "share+group4": [
        "share_prompt_forward=true",
        "group_by_length=true",
        "per_device_train_batch_size=16",
        "gradient_accumulation_steps=4",
    ],
    "packed": ["remove_padding=true"],
    "share+packed": ["share_prompt_forward=true", "remove_padding=true"],
}


def sample_batches(config, model, tokenizer, n: int) -> list:
    """``n`` consecutive training batches of ``config`` sampled from ``model``."""
    from neggrad.rollout import build_rollout
    from neggrad.tasks.build import build_task
    from neggrad.trainer.batch import collect_batch

    engine, task, cursor, batches = build_rollout(model, tokenizer, config), build_task(config.task), 0, []
    torch.manual_seed(0)
    for _ in range(n):
        batch, cursor = collect_batch(config, engine, task, cursor)
        batches.append(batch)
    return batches


def time_update(config, model, batch) -> float:
    """Seconds of one ``policy_update`` of ``batch`` from a copy of ``model`` with a fresh optimizer."""
    from neggrad.trainer.loop import _adamw
    from neggrad.trainer.update import policy_update

    model = copy.deepcopy(model)
    optimizer = _adamw(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    start = time.perf_counter()
    policy_update(config, model, optimizer, scheduler, batch)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--batches", type=int, default=3, help="batches sampled once and updated on in every trial")
    parser.add_argument("--max-completion-length", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from neggrad.config import build_config
    from neggrad.models.testbed.model import build_model
    from neggrad.models.testbed.tokenizer import build_tokenizer

    base = [*BASE, f"max_completion_length={args.max_completion_length}"]
    configs = {name: build_config({}, base + extra) for name, extra in ARMS.items()}
    tokenizer = build_tokenizer()
    model = build_model(configs["plain"].model.testbed, tokenizer, seed=0)
    batches = sample_batches(configs["plain"], model, tokenizer, args.batches)
    lengths = torch.cat([b.rollout.lengths for b in batches]).float()
    times: dict[str, list[float]] = {name: [] for name in ARMS}
    for config in configs.values():  # warm-up
        time_update(config, model, batches[0])
    for _ in range(args.trials):
        for name, config in configs.items():
            times[name] += [time_update(config, model, batch) for batch in batches]
    print(
        f"testbed model, 8 prompts x 8, completions up to {args.max_completion_length} tokens (mean "
        f"{lengths.mean():.1f}), {args.threads} thread(s), OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'libgomp default')}, {args.batches} batches x {args.trials} trials, load "
        f"average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    plain = statistics.median(times["plain"])
    for name in ARMS:
        median = statistics.median(times[name])
        print(f"{name:<14}{median:>8.3f} s  {median / plain:>5.2f} x plain")


if __name__ == "__main__":
    main()
