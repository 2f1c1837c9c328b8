"""The training forward + backward of one micro-batch with and without the options that skip work, same batch.

    python benchmarks/shared_prompt.py                                    # testbed model, P=8 x G=8, 12 + 32 tokens
    python benchmarks/shared_prompt.py --arch smollm2-135m --prompts 2 --prompt-len 120 --completion-len 48

A GRPO micro-batch holds G completions of each prompt, padded on both sides. Arms: ``plain`` runs prompt +
completion for every row through the model; ``shared`` (``share_prompt_forward``) runs each distinct prompt
once and the completions on its KV cache (``neggrad.models.policy.shared_prompt_pass``); ``packed``
(``remove_padding``) runs the real tokens only (``neggrad.models.packed``); ``packed+shared`` both. This times
what the update does per micro-batch: the forward to the completion log-probs (``completion_forward``), their
masked sum, and its backward, arm after arm, trial by trial, and prints each arm's median seconds, its ratio to
the first arm and the tokens it runs through the model. The OpenMP wait policy is the one the ``neggrad``
command would choose (step_time.py).

Random weights (``random_model.arch_config`` for a real architecture, or the testbed's), random token ids: the
timing depends on the shapes, not on what the tokens say. Prompts are left padded to one width, as a batch of
prompts of different lengths is; each completion ends at a random length (EOS, then padding), so every arm sees
the same masks. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from pathlib import Path

importlib.import_module("neggrad.cli").choose_omp_wait_policy()  # as the `neggrad` command does, before torch loads

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from random_model import ARCHS, arch_config  # noqa: E402


def build(arch: str, layers: int | None):
    """(model, vocabulary size): the testbed model, or ``arch``'s shapes with a 49,152-token vocabulary."""
    if arch == "testbed":
        from neggrad.config import build_config
        from neggrad.models.testbed.model import build_model
        from neggrad.models.testbed.tokenizer import build_tokenizer

        tokenizer = build_tokenizer()
        return build_model(build_config({}, ["sft.enabled=false"]).model.testbed, tokenizer, seed=0), len(tokenizer)
    from transformers import AutoModelForCausalLM

    config = arch_config(arch, 49_152, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if layers:
        config.num_hidden_layers = layers
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32), 49_152


def batch(vocab: int, prompts: int, G: int, prompt_len: int, completion_len: int, seed: int = 0):
    """A Rollout of ``prompts`` x G rows: prompts of random lengths up to ``prompt_len`` (left padded, identical
    within a group), completions of random lengths up to ``completion_len`` (padded after the end)."""
    from neggrad.rollout.base import Rollout

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(prompt_len // 2, prompt_len + 1, (prompts,), generator=g)
    lengths[0] = prompt_len
    ids = torch.randint(3, vocab, (prompts, prompt_len), generator=g)
    mask = (torch.arange(prompt_len)[None, :] >= prompt_len - lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0).repeat_interleave(G, dim=0)
    mask = mask.repeat_interleave(G, dim=0)
    B = prompts * G
    ends = torch.randint(1, completion_len + 1, (B,), generator=g)
    ends[0] = completion_len
    c_mask = (torch.arange(completion_len)[None, :] < ends[:, None]).long()
    c_ids = torch.randint(3, vocab, (B, completion_len), generator=g).masked_fill(c_mask == 0, 0)
    return Rollout(ids, mask, c_ids, c_mask, ends == completion_len, [""] * B)


ARMS = {"plain": {}, "shared": {"share_prompt": True}, "packed": {"packed": True}}
ARMS["packed+shared"] = {"packed": True, "share_prompt": True}


def step(model, rollout, how: dict) -> float:
    """Seconds of one forward to the completion log-probs, their masked sum and its backward."""
    from neggrad.core.logprobs import token_logprobs
    from neggrad.models.policy import completion_forward

    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    logits, _ = completion_forward(model, rollout, **how)
    logp = token_logprobs(logits, rollout.completion_ids)
    (logp * rollout.completion_mask).sum().backward()
    return time.perf_counter() - start


def tokens_run(rollout, name: str, prompts: int) -> int:
    """Tokens each arm runs through the model."""
    B, tp, t = rollout.completion_ids.shape[0], rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
    if name == "plain":
        return B * (tp + t)
    if name == "shared":
        return prompts * tp + B * (t - 1)
    real_prompts = rollout.prompt_mask.sum(dim=1)
    needed = int((rollout.completion_mask.sum(dim=1) - 1).clamp(min=0).sum())
    if name == "packed":
        return int(real_prompts.sum()) + needed
    return int(real_prompts[:: B // prompts].sum()) + needed  # packed+shared: rows come in groups of G


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="testbed", choices=["testbed", *sorted(ARCHS)])
    parser.add_argument("--layers", type=int, default=None, help="fewer layers than the architecture's")
    parser.add_argument("--prompts", type=int, default=8, help="distinct prompts in the micro-batch")
    parser.add_argument("--num-generations", type=int, default=8, help="G: completions per prompt")
    parser.add_argument("--prompt-len", type=int, default=12, help="the longest prompt, in tokens")
    parser.add_argument("--completion-len", type=int, default=32, help="the longest completion, in tokens")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    args = parser.parse_args(argv)
    arms = args.arms.split(",")
    torch.set_num_threads(args.threads)
    model, vocab = build(args.arch, args.layers)
    model.train()
    rollout = batch(vocab, args.prompts, args.num_generations, args.prompt_len, args.completion_len)
    B, tp, t = rollout.completion_ids.shape[0], rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
    times: dict[str, list[float]] = {name: [] for name in arms}
    for name in arms:  # warm-up
        step(model, rollout, ARMS[name])
    for _ in range(args.trials):
        for name in arms:
            times[name].append(step(model, rollout, ARMS[name]))
    medians = {name: statistics.median(times[name]) for name in arms}
    layers = model.config.num_hidden_layers
    print(
        f"{args.arch} ({layers} layers, V={vocab}), {args.prompts} prompts x G={args.num_generations} = {B} rows, "
        f"prompts up to {tp} tokens, completions up to {t} (mean {float(rollout.lengths.float().mean()):.1f}); "
        f"{args.threads} thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'libgomp default')}, "
        f"median of {args.trials}"
    )
    first = medians[arms[0]]
    for name in arms:
        print(
            f"{name:<14} forward + backward: {medians[name]:.3f} s, {tokens_run(rollout, name, args.prompts)} tokens "
            f"run, {medians[name] / first:.2f} x {arms[0]}"
        )


if __name__ == "__main__":
    main()
