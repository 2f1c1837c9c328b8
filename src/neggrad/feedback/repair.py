"""The group policy of judge feedback: all-wrong groups go to the judge, partial rewards replace their rewards.

docs/algorithms.md §5.1 and §10.3. Per generation round, after the verifier has scored the round: every
group with no correct answer (binary correctness) is sent to the judge, one request per answer; each
answer's reward becomes ``core.partial_reward.judged_rewards`` of its verdict (0, or -1 under pm1,
when the judge failed). Mixed and all-correct groups are untouched, and so is the correctness
itself: a repaired answer stays wrong for accuracy, group kinds, NTHR and LLD. Under ``zero_std``
filtering a repaired group is kept iff its partial rewards vary.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from neggrad.config import FeedbackConfig
from neggrad.core.partial_reward import judged_rewards, step_fraction
from neggrad.feedback.judge import Judge, JudgeRequest, Verdict, failure
from neggrad.feedback.steps import split_response

logger = logging.getLogger(__name__)

F_BINS = 10
"""Bins of ``feedback/f_hist`` over [0, 1)."""


@dataclass
class FeedbackStats:
    """What the judge did during one training step (all generation rounds), for ``metrics.jsonl``."""

    groups: int = 0
    verdicts: list[Verdict] = field(default_factory=list)
    fractions: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def metrics(self) -> dict:
        """The ``feedback/*`` and ``time/judge`` keys of docs/algorithms.md §15 (a mean over nothing is 0)."""
        asked = [v for v in self.verdicts if not v.cached and v.latency_s > 0]
        hist = [0] * F_BINS
        for f in self.fractions:
            hist[min(int(f * F_BINS), F_BINS - 1)] += 1
        n = len(self.verdicts)
        return {
            "feedback/groups": self.groups,
            "feedback/judged": sum(not v.failed for v in self.verdicts),
            "feedback/failed": sum(v.failed for v in self.verdicts),
            "feedback/f_mean": sum(self.fractions) / len(self.fractions) if self.fractions else 0.0,
            "feedback/f_hist": hist,
            "feedback/latency_mean": sum(v.latency_s for v in asked) / len(asked) if asked else 0.0,
            "feedback/cache_hit_frac": sum(v.cached for v in self.verdicts) / n if n else 0.0,
            "time/judge": self.seconds,
        }


@dataclass
class GroupRepair:
    """The judge's outcome for one round of P groups."""

    rewards: Tensor  # (P, G) float: judged rewards in the reward scheme; 0 outside repaired groups
    repaired: Tensor  # (P,) bool: all-wrong groups that went to the judge
    varies: Tensor  # (P,) bool: repaired groups whose judged rewards are not all equal


def judge_problem(example) -> str:
    """The problem a judge reads: a data example's raw ``problem`` text, else its prompt (testbed: ``Q: ...=``)."""
    return getattr(example, "problem", None) or example.prompt


def judge_reference(example) -> str:
    """The reference a judge reads: the example's worked ``solution`` when it has one, else its gold ``answer``."""
    return getattr(example, "solution", None) or example.answer


def safe_judge(judge: Judge, requests: list[JudgeRequest]) -> list[Verdict]:
    """``judge.judge(requests)``, with every way it can go wrong turned into failures (no judge stops a run)."""
    if not requests:
        return []
    try:
        verdicts = judge.judge(requests)
    except Exception as err:  # a broken judge costs rewards, never the run (issue 6)
        logger.warning("judge %s raised %s; its %d responses count as failed", judge.name, err, len(requests))
        return [failure(f"judge error: {type(err).__name__}", len(r.steps)) for r in requests]
    if len(verdicts) != len(requests):
        logger.warning("judge %s returned %d verdicts for %d requests", judge.name, len(verdicts), len(requests))
        return [failure("judge returned the wrong number of verdicts", len(r.steps)) for r in requests]
    checked = []
    for verdict, request in zip(verdicts, requests, strict=True):
        n = len(request.steps)
        if verdict.failed:
            checked.append(verdict)
        elif n == 0:  # nothing to judge: "none wrong" (k = n = 0) has no step fraction
            checked.append(failure("the response has no steps", 0))
        elif verdict.num_steps == n and (verdict.kind == "none_wrong" or 1 <= (verdict.step or 0) <= n):
            checked.append(verdict)
        else:
            checked.append(failure("verdict outside the response's steps", n))
    return checked


def repair_all_wrong(
    judge: Judge,
    correct: Tensor,
    problems: list[str],
    references: list[str],
    completions: list[str],
    *,
    cfg: FeedbackConfig,
    reward_scheme: str,
    stats: FeedbackStats,
    truncated: Tensor | None = None,
) -> GroupRepair:
    """Judge every answer of the all-wrong groups and return their partial rewards (docs/algorithms.md §10.3).

    Args:
        judge: any ``Judge``.
        correct: (P, G) bool verifier outcomes of the round.
        problems: (P,) prompts; references: (P,) reference solutions shown to the judge.
        completions: (P * G,) decoded completions, each group contiguous.
        cfg: the ``feedback`` section (step rule, beta, gamma, scale).
        reward_scheme: "binary" or "pm1" (judged rewards become -1 + 2r under pm1).
        stats: accumulates this step's judge metrics.
        truncated: (P * G,) bool, the answers cut at the length limit; with ``cfg.credit_truncated`` false they
            keep the wrong-answer reward instead of partial credit.

    Returns:
        The judged rewards (P, G), which groups were repaired (P,) and which of them vary (P,).
    """
    P, G = correct.shape
    t0 = time.perf_counter()
    repaired = ~correct.any(dim=1)  # (P,)
    groups = repaired.nonzero().squeeze(1).tolist()
    requests = [
        JudgeRequest(problems[p], references[p], tuple(split_response(completions[p * G + g], cfg.step_split)))
        for p in groups
        for g in range(G)
    ]
    verdicts = safe_judge(judge, requests)
    failed = torch.tensor([v.failed for v in verdicts], dtype=torch.bool)  # (len(groups) * G,)
    k = torch.tensor([1 if v.failed else v.first_wrong_or_last for v in verdicts], dtype=torch.long)
    n = torch.tensor([max(v.num_steps, 1) if not v.failed else 1 for v in verdicts], dtype=torch.long)
    fraction = step_fraction(k, n)  # (len(groups) * G,) float64
    judged = judged_rewards(
        fraction, failed, beta=cfg.beta, gamma=cfg.gamma, scale=cfg.scale, reward_scheme=reward_scheme
    ).float()
    if truncated is not None and not cfg.credit_truncated:
        cut = truncated.view(P, G)[repaired].reshape(-1)  # (len(groups) * G,)
        judged = judged.masked_fill(cut, -1.0 if reward_scheme == "pm1" else 0.0)
    rewards = torch.zeros(P, G)
    rewards[repaired] = judged.view(len(groups), G)  # (len(groups), G) rows of the repaired groups
    spread = rewards.max(dim=1).values - rewards.min(dim=1).values  # (P,)
    stats.groups += len(groups)
    stats.verdicts.extend(verdicts)
    stats.fractions.extend(fraction[~failed].tolist())
    stats.seconds += time.perf_counter() - t0
    return GroupRepair(rewards=rewards, repaired=repaired, varies=repaired & (spread > 0))
