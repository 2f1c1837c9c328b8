"""NTHR's exact scores (full vocabulary) against the paper's response-vocabulary approximation, on any config.

    python benchmarks/nthr_vocab.py --config real/smollm2 --groups 32 --json results/nthr_vocab_real.json

The testbed's vocabulary has 23 tokens, so the approximation of arXiv:2505.18830 App. 7.4 (the gradient
g = e_y - q restricted to the token ids present in the group) cannot be judged there; on SmolLM2's 49,152-token
BPE vocabulary it can. Mixed groups are sampled from the config's starting policy on held-out prompts (as
``neggrad lld-probe`` does); for each, one no-grad forward gives the logits and LM-head inputs, and
``nthr_group`` runs with ``vocab="full"`` and ``vocab="response"`` on the same tensors (beta 1, as the paper).

Reported per vocabulary: median seconds per group and the extra-memory bound of ``influence_scores``' docstring
with these sizes; between them: the Pearson correlation of the wrong-answer tokens' scores (per group, then the
median and the minimum), the Jaccard overlap of the selected token sets, and the response vocabulary's size.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import time

importlib.import_module("neggrad.cli").choose_omp_wait_policy()  # as the `neggrad` command does, before torch loads

import torch  # noqa: E402

from neggrad.analysis.probe_study import sample_groups  # noqa: E402
from neggrad.cli import resolve_config  # noqa: E402
from neggrad.core.nthr import nthr_group  # noqa: E402
from neggrad.models.load import load_policy  # noqa: E402
from neggrad.models.policy import completion_forward  # noqa: E402
from neggrad.rollout.hf import HFRollout  # noqa: E402
from neggrad.tasks.build import build_task  # noqa: E402
from neggrad.trainer.probe import rollout_from_ids  # noqa: E402


def memory_bound(c_vocab: int, c_tokens: int, hidden: int, n: int) -> int:
    """Bytes of NTHR's extra fp32 memory (``influence_scores``): 4 (2 c_V H + 2 c_T c_V + c_T H + N)."""
    return 4 * (2 * c_vocab * hidden + 2 * c_tokens * c_vocab + c_tokens * hidden + n)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp(min=1e-300))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="real/smollm2")
    p.add_argument("--groups", type=int, default=32, help="mixed groups to compare")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    config = resolve_config(args.config, args.overrides)
    model, tokenizer, _ = load_policy(config)
    model.eval()
    task = build_task(config, tokenizer=tokenizer)
    engine = HFRollout.from_config(model, tokenizer, config)
    groups = sample_groups(config, engine, task, list(task.eval_examples()), args.groups)
    opt = config.nthr
    rows = []
    for group in groups:
        rollout = rollout_from_ids(group["prompt_ids"], group["completion_ids"], tokenizer.pad_token_id)
        with torch.no_grad():
            logits, hidden = completion_forward(model, rollout, return_hidden=True)
        correct = torch.tensor(group["correct"])
        mask = rollout.completion_mask
        out, seconds = {}, {}
        for vocab in ("full", "response"):
            t0 = time.perf_counter()
            out[vocab] = nthr_group(
                logits, hidden, rollout.completion_ids, mask, correct, beta=1.0, eta=0.0, vocab=vocab,
                temperature=config.temperature, chunk_tokens=opt.chunk_tokens, chunk_vocab=opt.chunk_vocab,
            )  # fmt: skip
            seconds[vocab] = time.perf_counter() - t0
        wrong = mask.bool() & ~correct[:, None]
        full, resp = out["full"], out["response"]
        a, b = full.selected[wrong], resp.selected[wrong]
        union = int((a | b).sum())
        k = int(torch.unique(rollout.completion_ids[mask.bool()]).numel())
        n, h, c_t = int(mask.sum()), hidden.shape[-1], min(opt.chunk_tokens, int(mask.sum()))
        rows.append(
            {
                "pearson": pearson(full.scores[wrong], resp.scores[wrong]),
                "jaccard": int((a & b).sum()) / union if union else 1.0,
                "selected_full": float(a.float().mean()),
                "selected_response": float(b.float().mean()),
                "seconds_full": seconds["full"],
                "seconds_response": seconds["response"],
                "response_vocab": k,
                "bytes_full": memory_bound(min(opt.chunk_vocab, logits.shape[-1]), c_t, h, n),
                "bytes_response": memory_bound(min(opt.chunk_vocab, k), c_t, h, n),
            }
        )  # fmt: skip
    med = {key: statistics.median(r[key] for r in rows) for key in rows[0]} if rows else {}
    result = {
        "config": args.config,
        "overrides": args.overrides,
        "groups": len(rows),
        "vocab_size": int(logits.shape[-1]) if rows else None,
        "median": med,
        "pearson_min": min(r["pearson"] for r in rows) if rows else None,
        "per_group": rows,
    }
    k = med.get("response_vocab")
    print(f"{len(rows)} mixed groups, vocabulary {result['vocab_size']}, median response vocabulary {k}")
    if rows:
        print(f"score correlation full vs response: median {med['pearson']:.4f}, min {result['pearson_min']:.4f}")
        print(
            f"selected-set Jaccard: median {med['jaccard']:.3f}; selected frac full {med['selected_full']:.3f} "
            f"response {med['selected_response']:.3f}"
        )
        mib = {k: med[f"bytes_{k}"] / 2**20 for k in ("full", "response")}
        print(f"seconds per group: full {med['seconds_full']:.3f}, response {med['seconds_response']:.3f}")
        print(f"extra-memory bound: full {mib['full']:.1f} MiB, response {mib['response']:.1f} MiB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
