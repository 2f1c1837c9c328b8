"""Evaluation on a held-out prompt set with the training verifier: greedy pass@1 and sampled avg@k."""

from __future__ import annotations

import torch

from neggrad.rollout.hf import HFRollout


def evaluate(engine: HFRollout, task, examples: list, *, batch_size: int = 256, avg_k: int = 0) -> dict[str, float]:
    """Greedy pass@1 (and avg@k: mean correctness of k samples per prompt, when ``avg_k`` > 0).

    Sampling uses the engine's temperature and top_p and consumes the torch RNG; greedy decoding does not.
    """
    correct = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        out = engine.generate([e.prompt for e in chunk], greedy=True)
        correct += task.score(out.texts, [e.answer for e in chunk])
    result = {"eval/accuracy": sum(correct) / max(len(correct), 1)}
    if avg_k > 0:
        per_batch = max(1, batch_size // avg_k)
        hits = []
        for start in range(0, len(examples), per_batch):
            chunk = examples[start : start + per_batch]
            out = engine.generate([e.prompt for e in chunk], num_generations=avg_k)
            hits += task.score(out.texts, [e.answer for e in chunk for _ in range(avg_k)])
        result["eval/avg_at_k"] = float(torch.tensor(hits, dtype=torch.float32).mean())
    return result
