"""Hints for groups nobody solves, ``zero_variance.all_wrong: hint``: G - 1 answers of an all-wrong group
are re-generated with the reference solution's first k steps written at the start of the response, k
rising until one answer is right (neggrad.strategies.hint_ladder). The hint tokens are trained with LUFFY's shaped loss
-A * pi / (pi + gamma) (Yan et al. 2025, arXiv:2504.14945 Eq. 6), never with a PPO ratio."""

from __future__ import annotations

import torch
from torch import Tensor

from neggrad.core.hints import shaped_offpolicy_loss
from neggrad.strategies.base import Forward, Round, Strategy, Update
from neggrad.strategies.hint_ladder import HintStats, hint_all_wrong

KEYS = ("hint/groups", "hint/solved", "hint/unsolved", "hint/unhintable", "hint/extra_generations")


class Hints(Strategy):
    name = "hint"

    @classmethod
    def active(cls, config) -> bool:
        return config.zero_variance.all_wrong == "hint"

    @classmethod
    def check(cls, config) -> None:
        if config.rollout.backend == "vllm":
            raise ValueError(
                "zero_variance.all_wrong=hint re-generates with a response prefix: needs rollout.backend hf or hf_lean"
            )

    def __init__(self, config):
        super().__init__(config)
        self.stats = HintStats()

    def round(self, rnd: Round) -> None:
        """Re-generate the all-wrong groups with hints (after the warm-up); mark them ``hinted``."""
        P = rnd.correct.shape[0]
        rnd.groups["hinted"] = torch.zeros(P, dtype=torch.bool)
        if rnd.step <= self.config.hint.warmup_steps:
            return
        s = self.stats
        seconds, generated, tokens = s.seconds, s.extra_generations, s.tokens
        rnd.rollout, rnd.visible, hinted = hint_all_wrong(
            self.config, rnd.engine, rnd.task, rnd.examples, rnd.rollout, rnd.visible, s
        )
        rnd.correct = torch.where(hinted[:, None], rnd.visible, rnd.correct)
        rnd.scorable = rnd.scorable | hinted[:, None]  # re-generated answers are scored without abstention
        rnd.groups["hinted"] = hinted
        rnd.kind_seconds["all_wrong"] = rnd.kind_seconds.get("all_wrong", 0.0) + s.seconds - seconds
        rnd.generated += s.extra_generations - generated
        rnd.generated_tokens += s.tokens - tokens

    def sampling_metrics(self, dist) -> dict:
        m = self.stats.metrics()
        totals = dist.sum([m[k] for k in KEYS] + m["hint/solved_at_rung"])  # counts over processes
        out = {k: int(v) for k, v in zip(KEYS, totals[: len(KEYS)], strict=True)}
        out["hint/solved_at_rung"] = [int(v) for v in totals[len(KEYS) :]]
        out["time/hint"] = m["time/hint"]
        return out

    def policy_loss(self, upd: Update, fwd: Forward, adv: Tensor, loss: Tensor, events: dict) -> tuple[Tensor, dict]:
        """LUFFY's shaped loss on the hint tokens, without ratio or clip events."""
        off = fwd.rollout.offpolicy  # (b, T) hint tokens
        if off is None or not bool(off.any()):
            return loss, events
        loss = torch.where(off, shaped_offpolicy_loss(fwd.logp, adv, gamma=self.config.hint.gamma), loss)
        return loss, {k: v & ~off for k, v in events.items()}
