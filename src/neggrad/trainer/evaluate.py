"""Evaluation on a held-out prompt set with the training verifier: greedy pass@1, sampled avg@k and pass@k."""

from __future__ import annotations

import torch

from neggrad.core.pass_at_k import pass_at_k, pass_at_k_auc
from neggrad.rollout.base import Engine


def _sample_correct(engine: Engine, task, examples: list, n: int, batch_size: int) -> torch.Tensor:
    """(P, n) bool: correctness of ``n`` sampled completions of each example."""
    per_batch = max(1, batch_size // n)
    rows = []
    for start in range(0, len(examples), per_batch):
        chunk = examples[start : start + per_batch]
        out = engine.generate([e.prompt for e in chunk], num_generations=n)
        hits = task.score(out.texts, [e.answer for e in chunk for _ in range(n)])
        rows.append(torch.tensor(hits, dtype=torch.bool).view(len(chunk), n))  # (chunk, n), groups contiguous
    return torch.cat(rows)


def evaluate(
    engine: Engine,
    task,
    examples: list,
    *,
    batch_size: int = 256,
    avg_k: int = 0,
    pass_k: list[int] | tuple[int, ...] = (),
) -> dict[str, float]:
    """Greedy pass@1 (``eval/accuracy``), and from one round of sampled completions per prompt:

    - ``eval/avg_at_k``: mean correctness of the first ``avg_k`` samples of each prompt (when ``avg_k`` > 0);
    - ``eval/pass_at_{k}``: unbiased pass@k (Chen et al. 2021) for each k in ``pass_k``, from
      n = max(pass_k, avg_k) samples per prompt, plus ``eval/pass_at_k_auc`` over log k when two or more k.

    Sampling uses the engine's temperature and top_p and consumes the torch RNG; greedy decoding does not.
    """
    correct = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        out = engine.generate([e.prompt for e in chunk], greedy=True)
        correct += task.score(out.texts, [e.answer for e in chunk])
    result = {"eval/accuracy": sum(correct) / max(len(correct), 1)}
    if any(k < 1 for k in pass_k):
        raise ValueError(f"every k of pass@k must be >= 1, got {list(pass_k)}")
    n = max([avg_k, *pass_k])
    if n > 0 and examples:
        sampled = _sample_correct(engine, task, examples, n, batch_size)  # (P, n)
        if avg_k > 0:
            result["eval/avg_at_k"] = sampled[:, :avg_k].float().mean().item()
        ks = sorted(set(pass_k))
        num_correct = sampled.sum(dim=1)  # (P,)
        values = [pass_at_k(num_correct, n, k).mean().item() for k in ks]
        result.update({f"eval/pass_at_{k}": v for k, v in zip(ks, values, strict=True)})
        if len(ks) >= 2:
            result["eval/pass_at_k_auc"] = pass_at_k_auc(ks, values)
    return result
