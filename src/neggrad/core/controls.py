"""Controls: rewards that ignore the answer, so a gain can be told apart from a training artefact.

Shao et al. 2025, "Spurious Rewards", arXiv:2506.10947: GRPO improved Qwen2.5-Math-7B by +21.4 points on
MATH-500 with random rewards (ground truth: +29.1), through a clipping bias, and gave Llama3 / OLMo2
nothing. A method's gain counts only if it beats the random-reward run on the same model and budget.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor


def uniform_hash(seed: int, step: int, prompt_uid: str, sample_idx: int) -> float:
    """u in [0, 1): the first 8 bytes of sha256("{seed}:{step}:{prompt_uid}:{sample_idx}") / 2^64.

    Independent of the response and identical after a resume (docs/algorithms.md §12) [neggrad choice].
    """
    digest = hashlib.sha256(f"{seed}:{step}:{prompt_uid}:{sample_idx}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def random_rewards(seed: int, step: int, prompt_uids: list[str], num_generations: int, rate: float) -> Tensor:
    """(P, G) bool coin flips 1[u < rate], one per completion, from ``uniform_hash``.

    The paper's code draws ``int(random.random() < rate)`` with rate 0.5; ``rate`` = the batch's true
    accuracy ("matched") keeps the share of zero-variance groups comparable to the real run.
    """
    u = torch.tensor(
        [[uniform_hash(seed, step, uid, i) for i in range(num_generations)] for uid in prompt_uids],
        dtype=torch.float64,
    )
    return u < rate
