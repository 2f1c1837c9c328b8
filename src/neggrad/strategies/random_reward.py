"""Random-reward control (Shao et al. 2025, arXiv:2506.10947): coin flips replace correctness for training,
so a run shows what training does without any signal. The true accuracy is still logged and evaluated."""

from __future__ import annotations

import torch

from neggrad.core.controls import random_rewards
from neggrad.strategies.base import Round, Strategy

WHY = "random_reward ignores the answers; it cannot be combined with"


class RandomReward(Strategy):
    name = "random_reward"
    excludes = {"hint": f"{WHY} hints (they use them)", "judge": f"{WHY} the judge (feedback)"}

    @classmethod
    def active(cls, config) -> bool:
        return config.random_reward.enabled

    def __init__(self, config):
        super().__init__(config)
        self.control: list[tuple[float, float]] = []  # (rate, agreement with the verifier) per round

    def scored(self, rnd: Round) -> None:
        P, G = rnd.correct.shape
        rate = self.config.random_reward.rate
        rate = float(rnd.correct.float().mean()) if rate == "matched" else float(rate)
        flips = random_rewards(self.config.seed, rnd.step, [str(rnd.first + i) for i in range(P)], G, rate)  # (P, G)
        self.control.append((rate, float((flips == rnd.correct).float().mean())))
        rnd.correct, rnd.scorable = flips, torch.ones_like(flips)

    def sampling_metrics(self, dist) -> dict:
        if not self.control:
            return {}
        return {
            "control/rate": sum(r for r, _ in self.control) / len(self.control),
            "control/agreement": sum(a for _, a in self.control) / len(self.control),
        }
