"""Step-wise judge feedback on all-wrong groups (``feedback.enabled`` or ``zero_variance.all_wrong:
judge``): a judge reads each wrong answer, says which step first goes wrong, and the answer gets a partial
reward for the steps before it (neggrad.feedback.repair). Under ``group_filter: zero_std`` a repaired group
is kept iff its partial rewards vary."""

from __future__ import annotations

import torch
from torch import Tensor

from neggrad.feedback.build import judge_for
from neggrad.feedback.repair import FeedbackStats, judge_problem, judge_reference, repair_all_wrong
from neggrad.strategies.base import Groups, Round, Strategy


class Judge(Strategy):
    name = "judge"

    @classmethod
    def active(cls, config) -> bool:
        return config.feedback.enabled

    def __init__(self, config):
        super().__init__(config)
        self.stats = FeedbackStats()

    def round(self, rnd: Round) -> None:
        """Judge the all-wrong groups of the round (as ``rnd.visible`` shows them)."""
        seconds = self.stats.seconds
        repair = repair_all_wrong(
            rnd.judge if rnd.judge is not None else judge_for(self.config.feedback),
            rnd.visible,
            [judge_problem(e) for e in rnd.examples],
            [judge_reference(e) for e in rnd.examples],
            rnd.rollout.texts,
            cfg=self.config.feedback,
            reward_scheme=self.config.reward_scheme,
            stats=self.stats,
            truncated=rnd.rollout.truncated,
        )
        rnd.groups.update(judge_rewards=repair.rewards, repaired=repair.repaired, judge_varies=repair.varies)
        rnd.kind_seconds["all_wrong"] = rnd.kind_seconds.get("all_wrong", 0.0) + self.stats.seconds - seconds

    def keep(self, rnd: Round, keep: Tensor) -> Tensor:
        if self.config.group_filter == "zero_std":  # a repaired group has variance iff its partial rewards vary
            return keep | rnd.groups["judge_varies"]
        return keep

    def rewards(self, groups: Groups) -> None:
        """Partial rewards replace the repaired groups' rewards (before the overlong shaping)."""
        repaired = groups.data["repaired"]  # (P',)
        groups.rewards = torch.where(repaired[:, None], groups.data["judge_rewards"], groups.rewards)

    def sampling_metrics(self, dist) -> dict:
        return reduce_feedback(dist, self.stats.metrics())


def reduce_feedback(dist, local: dict) -> dict:
    """``feedback/*`` over processes: counts summed, means weighted by the answers each process judged."""
    parts = dist.gather(local)
    if len(parts) == 1:
        return local
    answers = [p["feedback/judged"] + p["feedback/failed"] for p in parts]
    total = sum(answers)

    def weighted(key: str) -> float:
        return sum(p[key] * n for p, n in zip(parts, answers, strict=True)) / total if total else 0.0

    out = {k: sum(p[k] for p in parts) for k in ("feedback/groups", "feedback/judged", "feedback/failed")}
    out["feedback/f_hist"] = [sum(col) for col in zip(*(p["feedback/f_hist"] for p in parts), strict=True)]
    fractions = [sum(p["feedback/f_hist"]) for p in parts]  # each f falls in one bin
    f_total = sum(fractions)
    out["feedback/f_mean"] = (
        sum(p["feedback/f_mean"] * n for p, n in zip(parts, fractions, strict=True)) / f_total if f_total else 0.0
    )
    out["feedback/latency_mean"] = weighted("feedback/latency_mean")  # approximate: weights all answers
    out["feedback/cache_hit_frac"] = weighted("feedback/cache_hit_frac")
    out["time/judge"] = max(p["time/judge"] for p in parts)
    return out
