"""Generation tokens/s: HF ``generate`` (rollout.backend hf) vs the lean loop (hf_lean) vs the forward-only bound.

    python benchmarks/rollout_speed.py                              # the testbed model, 64 x 48 tokens
    python benchmarks/rollout_speed.py --arch smollm2-135m --batch 32 --new-tokens 64 --trials 3
    python benchmarks/rollout_speed.py --arch qwen2.5-0.5b --device cuda --dtype bfloat16 --batch 32 --new-tokens 256
    python benchmarks/rollout_speed.py --stop eos --num-generations 8   # GRPO-shaped: 8 prompts x 8, rows end

One model with random weights (the testbed's Qwen2 shape built by neggrad, or an architecture of
``random_model.ARCHS``), left-padded random prompts of varying length, ``--batch / --num-generations`` distinct
prompts each repeated ``--num-generations`` times in a row (GRPO's groups). With ``--stop never`` (the default)
EOS is switched off (an id outside the vocabulary) so every row decodes all ``--new-tokens``: the same work in
every arm. With ``--stop eos`` the testbed tokenizer's EOS id (1) ends a row as in training: the testbed's random
init samples it with probability about 1/23 per token, so most rows end early and about a third run to
``--new-tokens``; the arms then decode different tokens and the mean completion length of each is printed. Per
trial, in turn:

- ``generate``: ``HFRollout`` sampling (temperature 1, top-p 1), i.e. ``model.generate`` with a dynamic cache;
- ``lean``: ``LeanHFRollout``, the static-cache decode loop with the same sampling;
- ``compact_hf``: ``LeanHFRollout`` with ``rollout.compact`` but the model's own forward for every step: one
  prefill row per distinct prompt, ended rows dropped from the batch (it saves work only with
  ``--num-generations`` > 1 or ``--stop eos``);
- ``compact``: ``rollout.compact`` as it runs, decode steps through ``rollout.slim.SlimDecodeStep`` where it
  supports the model (the testbed's Qwen2 and the Llama / Qwen2 shapes of ``random_model``), else as
  ``compact_hf``;
- ``forward``: the bound, the model's own batched forwards alone: one prefill then ``new_tokens - 1`` one-token
  decode forwards into a static cache over every row, with every input (tokens, masks, positions) made before the
  clock starts, no sampling and no loop bookkeeping (with ``--stop eos`` the work of a batch where no row ends).

It prints the median seconds and generated tokens/s of each arm (rows x ``--new-tokens``, the padded width, so
that the figures of the arms compare as time), and each engine's share of the bound (bound time / engine time;
issue 17's target: >= 0.70 on the testbed). Timings on a shared machine are noisy: run it twice, and say how
loaded the machine was.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

importlib.import_module("neggrad.cli").choose_omp_wait_policy()  # as the `neggrad` command does, before torch loads

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, StaticCache  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from random_model import ARCHS, arch_config  # noqa: E402

from neggrad.rollout.hf import HFRollout, completion_mask_from_ids  # noqa: E402
from neggrad.rollout.lean import LeanHFRollout  # noqa: E402


def build_model(arch: str, dtype: torch.dtype, device: str):
    torch.manual_seed(0)
    if arch == "testbed":
        from neggrad.config import TestbedModelConfig
        from neggrad.models.testbed.model import build_model as build_testbed
        from neggrad.models.testbed.tokenizer import build_tokenizer

        model = build_testbed(TestbedModelConfig(), build_tokenizer(), seed=0)
    else:
        config = arch_config(arch, 49152)  # SmolLM2's vocabulary size
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.to(device=device, dtype=dtype).eval()


def prompts(batch: int, length: int, vocab: int, device: str, group: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, length) random ids, left padded to lengths between length / 2 and length: B / ``group`` distinct
    prompts, each repeated ``group`` times in a row."""
    g = torch.Generator().manual_seed(1)
    distinct = -(-batch // group)
    ids = torch.randint(3, vocab, (distinct, length), generator=g)
    real = torch.randint(length // 2, length + 1, (distinct,), generator=g)
    mask = (torch.arange(length)[None, :] >= (length - real)[:, None]).long()
    ids, mask = ids.repeat_interleave(group, 0)[:batch], mask.repeat_interleave(group, 0)[:batch]
    return ids.masked_fill(mask == 0, 0).to(device), mask.to(device)


@torch.no_grad()
def forward_only(model, ids: torch.Tensor, mask: torch.Tensor, new_tokens: int) -> float:
    """Seconds of one prefill and ``new_tokens - 1`` decode forwards, every input prepared beforehand."""
    batch, prompt_len = ids.shape
    total = prompt_len + new_tokens
    cache = StaticCache(config=model.config, max_cache_len=total)
    valid = torch.ones(batch, total, dtype=torch.bool, device=ids.device)
    valid[:, :prompt_len] = mask.bool()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    slots = torch.arange(total, device=ids.device)
    token = ids[:, -1:].clone()
    steps = [
        ((valid & (slots <= prompt_len + t))[:, None, None, :], positions[:, -1:] + 1 + t)
        for t in range(new_tokens - 1)
    ]
    sync(ids.device)
    start = time.perf_counter()
    model(input_ids=ids, attention_mask=valid.long(), position_ids=positions, cache=cache, logits_to_keep=1)
    for step_mask, position in steps:
        model(input_ids=token, attention_mask=step_mask, position_ids=position, cache=cache, logits_to_keep=1)
    sync(ids.device)
    return time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(engine, ids, mask, new_tokens, *, stop: str) -> tuple[float, float]:
    """Seconds of one ``_sample`` of the batch, and its mean completion length (tokens up to the first EOS)."""
    sync(ids.device)
    start = time.perf_counter()
    out = engine._sample(ids, mask, new_tokens, greedy=False)
    sync(ids.device)
    seconds = time.perf_counter() - start
    if stop == "never":
        assert out.shape[1] == ids.shape[1] + new_tokens, "a row stopped early: EOS should be unreachable"
    mask, _ = completion_mask_from_ids(out[:, ids.shape[1] :], engine.tokenizer.eos_token_id)
    return seconds, float(mask.sum(1).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="testbed", choices=["testbed", *sorted(ARCHS)])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=24)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--num-generations", type=int, default=1, help="G: each distinct prompt repeated G times")
    parser.add_argument(
        "--stop", choices=("never", "eos"), default="never", help="never: EOS unreachable; eos: rows end at EOS"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args.arch, getattr(torch, args.dtype), args.device)
    vocab = model.config.vocab_size
    eos = 1 if args.stop == "eos" else vocab + 7  # the testbed's EOS id, or one that is never sampled
    tokenizer = SimpleNamespace(padding_side="left", eos_token_id=eos, pad_token_id=0)
    engines = {
        "generate": HFRollout(model, tokenizer, max_completion_length=args.new_tokens),
        "lean": LeanHFRollout(model, tokenizer, max_completion_length=args.new_tokens),
        "compact_hf": LeanHFRollout(model, tokenizer, max_completion_length=args.new_tokens, compact=True),
        "compact": LeanHFRollout(model, tokenizer, max_completion_length=args.new_tokens, compact=True),
    }
    engines["compact_hf"].slim = False
    ids, mask = prompts(args.batch, args.prompt_len, vocab, args.device, args.num_generations)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"{args.arch} ({params / 1e6:.1f}M parameters, {args.dtype}, {args.device}, "
        f"{torch.get_num_threads()} threads): {args.batch} rows ({args.batch // args.num_generations} prompts x "
        f"{args.num_generations}) x {args.new_tokens} new tokens after prompts of <= {args.prompt_len}, stop "
        f"{args.stop}; {args.trials} trials"
    )
    arms, lengths = run_trials(engines, model, ids, mask, args)
    report(arms, lengths, args)
    if args.json:
        medians = {name: statistics.median(times) for name, times in arms.items()}
        result = {"args": vars(args), "seconds": arms, "median_s": medians, "mean_length": lengths}
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def run_trials(engines, model, ids, mask, args) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Every arm once per trial, in turn (trial 0 warms up and is dropped): seconds per trial of each arm, and
    each engine's mean completion length over the timed trials."""
    arms = {name: [] for name in [*engines, "forward"]}
    lengths = {name: [] for name in engines}
    for trial in range(args.trials + 1):
        for name in arms:
            torch.manual_seed(trial)
            if name == "forward":
                seconds = forward_only(model, ids, mask, args.new_tokens)
            else:
                seconds, length = timed(engines[name], ids, mask, args.new_tokens, stop=args.stop)
                if trial:
                    lengths[name].append(length)
            if trial:
                arms[name].append(seconds)
    return arms, {name: statistics.fmean(values) for name, values in lengths.items()}


def report(arms: dict[str, list[float]], lengths: dict[str, float], args) -> None:
    """Print each arm's median seconds, tokens/s (rows x new tokens), share of the bound and mean length."""
    tokens = args.batch * args.new_tokens
    medians = {name: statistics.median(times) for name, times in arms.items()}
    for name, seconds in medians.items():
        share = f"  {medians['forward'] / seconds:.2f} of the bound" if name != "forward" else "  (the bound)"
        length = f"  mean length {lengths[name]:.1f}" if name in lengths else ""
        print(f"  {name:<11} {seconds:8.3f} s  {tokens / seconds:10.0f} tokens/s{share}{length}")
    pairs = [("lean", "generate"), ("compact_hf", "lean"), ("compact", "compact_hf"), ("compact", "lean")]
    speedup = {f"{a} / {b}": medians[b] / medians[a] for a, b in pairs}
    speedup["compact / generate"] = medians["generate"] / medians["compact"]
    print("  speed-up " + ", ".join(f"{k}: {v:.2f}x" for k, v in speedup.items()))
    print(f"  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.exit(main())
