"""Peak memory of one policy update, full logits vs ``logprob_chunk`` (issue 17 item 2), in logits-equivalents.

Each arm runs in a fresh process: a SmolLM2-shaped Llama (its 49,152-token vocabulary and width, fewer layers), one
micro-batch of B completions of T tokens, AdamW, and one ``policy_update`` (GRPO, on-policy: the training forward is
the old policy; LLD off). Large allocations are forced to ``mmap`` (``MALLOC_MMAP_THRESHOLD_``) so freed tensors
leave the resident set at once; the kernel's peak resident size (VmHWM) is reset just before the update
(``/proc/self/clear_refs``) and read just after. Reported: the update's peak above the resident size before it, in
units of one (B, T, V) float32 logits tensor, beside the static part (weights, gradients, AdamW state).

    python benchmarks/update_memory.py                 # B=8, T=256, 4 layers; --json F; --chunk 256
    python benchmarks/update_memory.py --layers 30     # the full SmolLM2-135M depth

CPU-only (Linux /proc). Target (issue 17): peak of the update <= static + 3 logits-equivalents.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def rss_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _arm(args) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from neggrad.config import build_config
    from neggrad.rollout.base import Rollout
    from neggrad.trainer.probe import group_batch
    from neggrad.trainer.update import policy_update

    torch.manual_seed(0)
    V, H = 49152, 576
    shape = dict(hidden_size=H, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3)
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=V, num_hidden_layers=args.layers, tie_word_embeddings=True, **shape)
    )
    B, T, Tp, G = args.batch, args.tokens, 32, 8
    cfg = build_config(
        {},
        [
            "model.name_or_path=stub",
            "reward.kind=tests.test_methods_e2e:parity",
            f"num_generations={G}",
            f"per_device_train_batch_size={B}",
            "gradient_accumulation_steps=1",
            f"max_completion_length={T}",
            "lld.enabled=false",
            f"logprob_chunk={args.chunk if args.arm == 'chunked' else 0}",
        ],
    )
    g = torch.Generator().manual_seed(1)
    rollout = Rollout(
        torch.randint(0, V, (B, Tp), generator=g),
        torch.ones(B, Tp, dtype=torch.long),
        torch.randint(0, V, (B, T), generator=g),
        torch.ones(B, T, dtype=torch.long),
        torch.zeros(B, dtype=torch.bool),
        [""] * B,
    )
    correct = torch.arange(B) % 2 == 0
    batch = group_batch(cfg, rollout, correct)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    policy_update(cfg, model, opt, sched, batch)  # warm-up: gradients and AdamW state now exist (the static part)
    before = rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    policy_update(cfg, model, opt, sched, batch)
    peak = rss_kib("VmHWM")
    logits = B * T * V * 4 / 1024
    params = sum(p.numel() for p in model.parameters()) * 4 / 1024
    return {
        "arm": args.arm,
        "static_mib": before / 1024,
        "params_mib": params / 1024,
        "peak_above_static_mib": (peak - before) / 1024,
        "logits_equivalents": (peak - before) / logits,
        # zero_grad(set_to_none=True) frees the gradients after every step, so the update allocates them again
        "beyond_gradients_logits_equivalents": (peak - before - params) / logits,
        "logits_mib": logits / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--arm", choices=["full", "chunked"], help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(_arm(args)))
        return
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(root, "src"), root, env.get("PYTHONPATH", "")])
    rows = []
    for arm in ("full", "chunked"):
        cmd = [sys.executable, __file__, "--arm", arm, "--batch", str(args.batch), "--tokens", str(args.tokens)]
        cmd += ["--layers", str(args.layers), "--chunk", str(args.chunk)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"B={args.batch} T={args.tokens} V=49152 layers={args.layers} chunk={args.chunk}; "
        f"one logits-equivalent (B, T, V) float32 = {rows[0]['logits_mib']:.0f} MiB"
    )
    print("static: weights + AdamW state; the update's gradients (freed after each step) are inside its peak")
    print(f"{'arm':<8} {'static MiB':>10} {'peak above static':>18} {'in logits-eq.':>14} {'beyond gradients':>17}")
    for r in rows:
        print(
            f"{r['arm']:<8} {r['static_mib']:>10.0f} {r['peak_above_static_mib']:>14.0f} MiB "
            f"{r['logits_equivalents']:>14.2f} {r['beyond_gradients_logits_equivalents']:>17.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
