"""NTHR's scoring at a real model's shapes (issue 17 item 3), against the GRPO update of the same batch.

    python benchmarks/nthr_scale.py --quick            # scoring of one group of 8 x 256 tokens, V 151,936, H 896
    python benchmarks/nthr_scale.py                    # 32 completions x 256 tokens, groups of 8 and 16, + updates
    python benchmarks/nthr_scale.py --completions 8 --groups 8     # the update ratio on a CPU (minutes, not hours)
    python benchmarks/nthr_scale.py --device cuda --dtype bfloat16 --layers 24 --json runs/nthr_scale.json

The GPU check (benchmarks/README.md, H200) ran Qwen2.5-0.5B's shapes: hidden 896, vocabulary 151,936, 32
completions x 256 tokens per step. NTHR's cost depends on the vocabulary, the width, the tokens per group and the
number of groups, not on depth, so the model here is a Qwen2 of that width and vocabulary with ``--layers`` layers
(1 by default) and random weights; completions are random token ids (as a random model samples: nearly every id of a
group distinct, the worst case of the response vocabulary) and every group is half right, half wrong.

Measured, on one batch:

- ``grpo update``: one ``policy_update`` with method grpo (LLD off): what NTHR is compared against;
- ``nthr update``: the same with method nthr (``nthr.scope`` as given), and its own timer ``time/nthr``;
- ``scoring``: ``nthr_group`` on every group's logits and hidden states from a no-grad forward, given the forward's
  log-normalisers (what the trainer does since issue 17) and recomputing them (``lse=None``, what it did before),
  plus the cross-group ``nthr_batch``. Each with its peak extra memory: on CUDA ``max_memory_allocated`` above what
  was allocated before; on the CPU the resident-set peak above the resident size before (``VmHWM`` reset through
  ``/proc/self/clear_refs``, large allocations forced to ``mmap`` as in ``update_memory.py``), in MiB and in (B, T, V)
  float32 logits-equivalents.

Times are medians of ``--trials`` (after a warm-up run on CUDA). Ratios are against the GRPO update.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and sys.platform.startswith("linux"):
    # freed large tensors must leave the resident set at once for the CPU peak to mean anything (update_memory.py)
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    os.execv(sys.executable, [sys.executable, *sys.argv])
importlib.import_module("neggrad.cli").choose_omp_wait_policy()  # as the `neggrad` command does, before torch loads
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from random_model import arch_config  # noqa: E402
from update_memory import rss_kib  # noqa: E402

from neggrad.config import build_config  # noqa: E402
from neggrad.core.nthr import nthr_batch, nthr_group  # noqa: E402
from neggrad.models.policy import completion_forward  # noqa: E402
from neggrad.rollout.hf import Rollout  # noqa: E402
from neggrad.trainer.probe import group_batch  # noqa: E402
from neggrad.trainer.update import policy_update  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--completions", type=int, default=32, help="completions per step (B)")
    p.add_argument("--tokens", type=int, default=256, help="tokens per completion (T)")
    p.add_argument("--groups", default="8,16", help="group sizes G to measure, comma-separated")
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--arch", default="qwen2.5-0.5b", help="benchmarks/random_model.py architecture (its width)")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--scope", choices=["group", "batch"], default="group", help="nthr.scope of the nthr update")
    p.add_argument("--nthr-vocab", choices=["response", "full"], default="response", help="nthr.vocab")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="model dtype (default: bfloat16 on CUDA, float32 on the CPU)")
    p.add_argument("--trials", type=int, default=None, help="timed runs per arm (default: 5 on CUDA, 1 on the CPU)")
    p.add_argument("--no-update", action="store_true", help="time the scoring only (no grpo / nthr update)")
    p.add_argument("--quick", action="store_true", help="one group of 8 completions, scoring only (no update)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.quick:  # on the CPU one GRPO update at V = 151,936 alone takes minutes (the LM head: ~2 TFLOP)
        args.completions, args.groups, args.no_update = 8, "8", True
    args.group_sizes = [int(g) for g in args.groups.split(",")]
    if any(args.completions % g for g in args.group_sizes):
        p.error(f"--completions {args.completions} is not a multiple of every group size in --groups {args.groups}")
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    args.trials = args.trials or (5 if args.device.startswith("cuda") else 1)
    return args


class Peak:
    """Peak extra memory of a block: CUDA allocator peak, or the CPU resident-set peak (Linux)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
        else:
            self.before = rss_kib("VmRSS") * 1024
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := the current resident size
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0
        peak = torch.cuda.max_memory_allocated() if self.cuda else rss_kib("VmHWM") * 1024
        self.bytes = max(peak - self.before, 0)


def build(args, device: torch.device):
    from transformers import AutoModelForCausalLM

    config = arch_config(args.arch, args.vocab, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    config.num_hidden_layers = args.layers
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, args.dtype)).to(device)
    B, T, Tp = args.completions, args.tokens, 32
    g = torch.Generator().manual_seed(1)
    rollout = Rollout(
        torch.randint(2, args.vocab, (B, Tp), generator=g),
        torch.ones(B, Tp, dtype=torch.long),
        torch.randint(2, args.vocab, (B, T), generator=g),
        torch.ones(B, T, dtype=torch.long),
        torch.zeros(B, dtype=torch.bool),
        [""] * B,
    )
    return model, rollout, torch.arange(B) % 2 == 0  # every group half right


def configure(args, group: int, method: str):
    return build_config(
        {},
        [
            "model.name_or_path=stub",
            f"method={method}",
            f"num_generations={group}",
            f"per_device_train_batch_size={args.completions}",
            "gradient_accumulation_steps=1",
            f"max_completion_length={args.tokens}",
            "lld.enabled=false",
            f"nthr.scope={args.scope}",
            f"nthr.vocab={args.nthr_vocab}",
            "learning_rate=1e-7",
        ],
    )


def timed(fn, args, device) -> tuple[float, int, object]:
    """Median seconds over the trials (a warm-up first on CUDA), the largest peak extra bytes, the last result."""
    runs = [] if device.type == "cpu" else [None]  # warm-up
    times, peaks, out = [], [], None
    for k in range(len(runs) + args.trials):
        with Peak(device) as peak:
            out = fn()
        if k >= len(runs):
            times.append(peak.seconds)
            peaks.append(peak.bytes)
    return statistics.median(times), max(peaks), out


def update_arm(args, model, rollout, correct, group: int, method: str, device) -> dict:
    cfg = configure(args, group, method)
    batch = group_batch(cfg, rollout, correct)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay as they are from arm to arm
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    seconds, peak, result = timed(lambda: policy_update(cfg, model, opt, sched, batch), args, device)
    model.zero_grad(set_to_none=True)
    return {"seconds": seconds, "peak_bytes": peak, "time_nthr": result.metrics.get("time/nthr")}


@torch.no_grad()
def scoring_arms(args, model, rollout, correct, device) -> dict:
    """``nthr_group`` on every group (given the forward's lse, and recomputing it) and ``nthr_batch``, per G.

    One no-grad forward per group, as the trainer holds one micro-batch's logits at a time (a host with less memory
    than the whole batch's logits, 4.6 GiB at 32 x 256 x 151,936 in float32, can run it); times are summed over the
    groups, peaks are the largest of any group."""
    out, head = {}, model.get_output_embeddings().weight
    for G in args.group_sizes:
        parts, arms = [], {"group": [], "group_lse_none": []}
        for g0 in range(0, args.completions, G):
            rows = torch.arange(g0, g0 + G)
            mb = rollout.select(rows).to(device)
            logits, hidden = completion_forward(model, mb, return_hidden=True)
            # (G, T): what the trainer's forward has (temperature 1); row by row, no (G, T, V) temporary
            lse = torch.stack([torch.logsumexp(x.float(), dim=-1) for x in logits])
            ids, mask, ok = mb.completion_ids, mb.completion_mask, correct[rows].to(device)
            for name, given in (("group", lse), ("group_lse_none", None)):
                fn = partial(nthr_group, logits, hidden, ids, mask, ok, vocab=args.nthr_vocab, lse=given)
                arms[name].append(timed(fn, args, device)[:2])
            real = mask.bool()
            parts.append((hidden[real].float(), ids[real], lse[real], rows.to(device)[:, None].expand_as(real)[real]))
            del logits, hidden, lse
        for name, runs in arms.items():
            out[f"G{G}/{name}"] = {"seconds": sum(r[0] for r in runs), "peak_bytes": max(r[1] for r in runs)}
        hidden, ids, lse, token_rows = (torch.cat(x) for x in zip(*parts, strict=True))
        groups = torch.arange(args.completions, device=device) // G
        fn = partial(nthr_batch, hidden, ids, lse, head, token_rows, groups, correct.to(device), vocab=args.nthr_vocab)
        seconds, peak, _ = timed(fn, args, device)
        out[f"G{G}/batch"] = {"seconds": seconds, "peak_bytes": peak}
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    model, rollout, correct = build(args, device)
    B, T, V = args.completions, args.tokens, args.vocab
    logits_eq = B * T * V * 4
    H = model.config.hidden_size
    print(
        f"nthr_scale: {args.device} {args.dtype}, {args.arch} width H={H}, V={V}, {args.layers} layer(s); "
        f"B={B} completions x T={T} tokens; groups {args.group_sizes}; nthr.vocab {args.nthr_vocab}; "
        f"one (B, T, V) float32 logits-equivalent = {logits_eq / 2**20:.0f} MiB; {args.trials} trial(s)"
    )
    out = {"args": {k: v for k, v in vars(args).items() if k != "group_sizes"}, "hidden": H}
    out["scoring"] = scoring_arms(args, model, rollout, correct, device)
    grpo = None
    if not args.no_update:
        grpo = update_arm(args, model, rollout, correct, args.group_sizes[0], "grpo", device)
        out["grpo_update"] = grpo
        for G in args.group_sizes:
            out[f"G{G}/nthr_update"] = update_arm(args, model, rollout, correct, G, "nthr", device)

    def line(name: str, r: dict) -> str:
        ratio = f"{r['seconds'] / grpo['seconds']:8.3f}" if grpo else "        "
        extra = f"  (time/nthr {r['time_nthr']:.3f} s)" if r.get("time_nthr") is not None else ""
        mib = r["peak_bytes"] / 2**20
        return f"{name:<24} {r['seconds']:9.3f} s {ratio}   {mib:9.0f} MiB {r['peak_bytes'] / logits_eq:7.2f}{extra}"

    print(f"{'arm':<24} {'median':>11} {'/ grpo':>8}   {'peak extra':>13} {'in l.-eq.':>7}")
    if grpo:
        print(line("grpo update", grpo))
    for G in args.group_sizes:
        for name in ("nthr_update",) if grpo else ():
            print(line(f"G={G} {name}", out[f"G{G}/{name}"]))
        for name in ("group", "group_lse_none", "batch"):
            print(line(f"G={G} scoring {name}", out["scoring"][f"G{G}/{name}"]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
