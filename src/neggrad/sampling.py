"""One step's training batch: generation rounds, verifier scores, the group policy, advantages.

Order per round (ALGORITHMS.md 7.3): generate P groups, score correctness, judge repair of all-wrong
groups (``feedback.enabled``), shape rewards (reward scheme, overlong penalty), filter groups on binary
correctness (a judge-repaired group passes ``zero_std`` iff its partial rewards vary); with ``refill``
repeat with new prompts until P groups are kept or ``max_generation_rounds`` is reached. Surplus groups
are discarded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from neggrad.config import Config
from neggrad.core.advantages import group_advantages, trained_rows
from neggrad.core.controls import random_rewards
from neggrad.core.groups import KINDS, group_kinds
from neggrad.core.shaping import REWARD_MAX, overlong_penalty, scheme_rewards
from neggrad.distributed import SINGLE, Dist
from neggrad.feedback.build import judge_for
from neggrad.feedback.judge import Judge
from neggrad.feedback.repair import FeedbackStats, GroupRepair, judge_problem, judge_reference, repair_all_wrong
from neggrad.feedback.steps import token_step_ids
from neggrad.hinting import HintStats, hint_all_wrong
from neggrad.rollout.hf import Rollout, concat


@dataclass
class TrainBatch:
    """The completions a step trains on (B rows, groups of G contiguous) and what the step saw."""

    rollout: Rollout
    prompts: list[str]  # (P,) prompts of the kept groups
    answers: list[str]  # (P,) reference answers
    correct: Tensor  # (B,) bool, binary verifier correctness
    rewards: Tensor  # (B,) shaped rewards fed to the advantage
    seq_adv: Tensor  # (B,) sequence advantages
    rows: Tensor  # (B,) bool: completions that enter the loss (PSR / NSR drop some)
    stats: dict  # metrics of the sampling stage (sampled-group fractions, rounds, timings)
    flags: dict[str, Tensor] = field(default_factory=dict)  # strategies' per-row / per-group values (Groups.flags)
    hinted: Tensor | None = None  # (P,) groups re-generated with hints (left out of LLD and NTHR)
    step_ids: Tensor | None = None  # (B, T) step of each completion token (LLDS step gate only)
    kind: Tensor | None = None  # (P,) index into core.groups.KINDS of each kept group (compute accounting)


def sequence_advantages(config: Config, rewards: Tensor, correct: Tensor, scorable: Tensor | None = None) -> Tensor:
    """(P, G) advantages of the config's estimator for (P, G) shaped rewards and binary correctness
    (abstentions, ``scorable`` False, left out of the group statistics with advantage 0)."""
    virtual = config.ngrpo.virtual_reward
    return group_advantages(
        rewards,
        method=config.advantage_estimator,
        correct=correct,
        scale_rewards=config.scale_rewards,
        clamp_negative_advantages=config.clamp_negative_advantages,
        num_virtual=config.ngrpo.num_virtual,
        virtual_reward=REWARD_MAX[config.reward_scheme] if virtual is None else virtual,
        positive_weight=config.w_reinforce.positive_weight,
        scorable=scorable,
    )


def _filter_groups(
    correct: Tensor,
    group_filter: str,
    repair: GroupRepair | None = None,
    zero_variance=None,
    scorable: Tensor | None = None,
) -> Tensor:
    """(P,) bool: groups kept by ``group_filter`` and ``zero_variance.*: drop``, judged on binary correctness.

    The one exception (ALGORITHMS.md 7.3): under ``zero_std`` a judge-repaired group is kept iff its
    partial rewards vary. Unscorable groups (the verifier abstained on every answer) are never kept.
    """
    kinds = group_kinds(correct, scorable)
    if group_filter == "zero_std":
        keep = (kinds["mixed"] | repair.varies) if repair is not None else kinds["mixed"]
    elif group_filter == "all_correct":
        keep = ~kinds["all_correct"]
    else:
        keep = torch.ones(correct.shape[0], dtype=torch.bool)
    for kind in ("all_wrong", "all_correct"):
        if zero_variance is not None and getattr(zero_variance, kind) == "drop":
            keep = keep & ~kinds[kind]
    return keep & ~kinds["unscorable"]


def zero_variance_advantages(
    config: Config, rewards: Tensor, correct: Tensor, seq_adv: Tensor, scorable: Tensor | None = None
) -> Tensor:
    """(P, G) advantages with the ``zero_variance.all_wrong`` strategy applied to all-wrong groups.

    ngrpo: NGRPO's virtual max-reward sample (arXiv:2509.18851 Eq. 6) in those groups only; nsr and
    w_reinforce: A = -1 for every wrong answer (arXiv:2506.01347). Other strategies act elsewhere (filter,
    judge, or token advantages in the update).
    """
    strategy = config.zero_variance.all_wrong
    wrong = group_kinds(correct, scorable)["all_wrong"]  # (P,)
    if strategy not in ("ngrpo", "nsr", "w_reinforce") or not bool(wrong.any()):
        return seq_adv
    out = seq_adv.clone()
    if strategy == "ngrpo":
        virtual = config.ngrpo.virtual_reward
        out[wrong] = group_advantages(
            rewards[wrong],
            method="ngrpo",
            correct=correct[wrong],
            num_virtual=config.ngrpo.num_virtual,
            virtual_reward=REWARD_MAX[config.reward_scheme] if virtual is None else virtual,
            scorable=None if scorable is None else scorable[wrong],
        ).to(out.dtype)
    else:
        out[wrong] = -1.0
    return out if scorable is None else out * scorable  # abstentions: advantage 0


def _reduce_feedback(dist: Dist, local: dict) -> dict:
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


def collect_batch(
    config: Config,
    rollout_engine,
    task,
    cursor: int,
    judge: Judge | None = None,
    *,
    dist: Dist = SINGLE,
    step: int = 0,
    stats_out: dict | None = None,
) -> tuple[TrainBatch | None, int]:
    """Generate and score one step's batch starting at prompt index ``cursor``.

    With ``feedback.enabled``, ``judge`` (default: the one ``feedback.judge`` names, built once per
    process) reads the answers of all-wrong groups.

    With several processes (``dist``, distributed.py) a round reads ``N * config.num_prompts`` prompts and
    this process generates its slice; rounds go on while any process is short of groups, and the
    sampling statistics are reduced over processes.

    Returns this process's batch (None when every group was filtered out) and the advanced cursor;
    ``stats_out``, when given, receives the sampling metrics in both cases.
    """
    P, G = config.num_prompts, config.num_generations  # P: this process's groups per step
    feedback = config.feedback
    if feedback.enabled and judge is None:
        judge = judge_for(feedback)
    judge_stats = FeedbackStats()
    kept_parts: list[tuple[Rollout, list, Tensor, Tensor, Tensor, Tensor, Tensor]] = []
    kept = 0
    counts = dict.fromkeys(KINDS, 0)
    kind_seconds = dict.fromkeys(counts, 0.0)  # generation, hint and judge time spent on each kind of group
    abstained = 0
    sampled_correct, dropped, rounds = [], 0, 0
    generated = generated_tokens = 0  # this process's completions and completion tokens, every round
    control: list[tuple[float, float]] = []  # random_reward: (rate, agreement with the verifier) per round
    hints = HintStats()
    t_gen = t_score = 0.0
    max_rounds = config.max_generation_rounds if config.refill else 1
    while rounds < max_rounds and dist.any(kept < P):
        rounds += 1
        first = cursor + dist.rank * P  # this process's slice of the round's N * P prompts
        cursor += dist.world_size * P
        if kept >= P:  # full already: another process refills (distributed.py)
            continue
        examples = [task.train_example(first + i) for i in range(P)]
        t0 = time.perf_counter()
        index = {"prompt_index": range(first, first + P)} if dist.seeded_sampling else {}
        rollout = rollout_engine.generate([e.prompt for e in examples], num_generations=G, **index)
        t1 = time.perf_counter()
        generated += len(rollout.texts)
        generated_tokens += int(rollout.lengths.sum())
        answers = [e.answer for e in examples for _ in range(G)]
        outcomes = getattr(task, "score_or_abstain", task.score)(rollout.texts, answers)  # None: abstained
        correct = torch.tensor([bool(o) for o in outcomes], dtype=torch.bool).view(P, G)  # (P, G)
        scorable = torch.tensor([o is not None for o in outcomes], dtype=torch.bool).view(P, G)  # (P, G)
        abstained += int((~scorable).sum())
        sampled_correct.append(correct)
        if config.random_reward.enabled:  # the control: coin flips replace correctness for training
            rate = config.random_reward.rate
            rate = float(correct.float().mean()) if rate == "matched" else float(rate)
            flips = random_rewards(config.seed, step, [str(first + i) for i in range(P)], G, rate)  # (P, G)
            control.append((rate, float((flips == correct).float().mean())))
            correct, scorable = flips, torch.ones_like(flips)
        kinds = group_kinds(correct, scorable)
        for name, mask in kinds.items():
            counts[name] += int(mask.sum())
            kind_seconds[name] += (t1 - t0) * int(mask.sum()) / P  # the round's generation, an equal share per group
        extra = hints.seconds + judge_stats.seconds  # what hints and the judge (all-wrong groups only) add below
        # unscorable groups are dropped by the filter below; shown as all-correct, hints and the judge skip them
        visible = correct | kinds["unscorable"][:, None]  # (P, G)
        hinted = torch.zeros(P, dtype=torch.bool)
        if config.zero_variance.all_wrong == "hint" and step > config.hint.warmup_steps:
            rollout, visible, hinted = hint_all_wrong(config, rollout_engine, task, examples, rollout, visible, hints)
            correct = torch.where(hinted[:, None], visible, correct)
            scorable = scorable | hinted[:, None]  # re-generated answers are scored without abstention
        repair = None
        if feedback.enabled:  # judge repair of the all-wrong groups (ALGORITHMS.md 5.3)
            repair = repair_all_wrong(
                judge,
                visible,
                [judge_problem(e) for e in examples],
                [judge_reference(e) for e in examples],
                rollout.texts,
                cfg=feedback,
                reward_scheme=config.reward_scheme,
                stats=judge_stats,
            )
        kind_seconds["all_wrong"] += hints.seconds + judge_stats.seconds - extra
        keep = _filter_groups(correct, config.group_filter, repair, config.zero_variance, scorable)  # (P,)
        dropped += int((~keep).sum())
        take = keep.nonzero().squeeze(1)[: P - kept]  # surplus groups are discarded
        kept += len(take)
        if len(take):
            rows = (take[:, None] * G + torch.arange(G)[None, :]).reshape(-1)  # (len(take) * G,)
            judged = repair.rewards[take] if repair is not None else torch.zeros(len(take), G)  # (len(take), G)
            repaired = repair.repaired[take] if repair is not None else torch.zeros(len(take), dtype=torch.bool)
            kept_parts.append(
                (
                    rollout.select(rows),
                    [examples[i] for i in take.tolist()],
                    correct[take],
                    judged,
                    repaired,
                    hinted[take],
                    scorable[take],
                )
            )
        t_score += time.perf_counter() - t1
        t_gen += t1 - t0
    all_correct = torch.cat(sampled_correct)  # (groups sampled here, G); the first round always samples
    names = list(counts)
    generated, generated_tokens = generated + hints.extra_generations, generated_tokens + hints.tokens
    n_correct, n_sampled, *group_counts, dropped, short, generated, generated_tokens = dist.sum(
        [
            float(all_correct.sum()),
            all_correct.numel(),
            *[counts[k] for k in names],
            dropped,
            int(kept < P),
            generated,
            generated_tokens,
        ]
    )
    counts = dict(zip(names, group_counts, strict=True))
    n_groups = n_sampled / G
    stats = {
        "accuracy": n_correct / n_sampled,
        **{f"groups/{k}_frac": v / n_groups for k, v in counts.items()},
        "groups/zero_std": int(counts["all_correct"] + counts["all_wrong"]),
        "reward/abstained": int(dist.sum([abstained])[0]),
        **{f"time/gen_{k}": v for k, v in zip(kind_seconds, dist.max(list(kind_seconds.values())), strict=True)},
        "groups/dropped": int(dropped),
        "groups/gen_rounds": rounds,
        "batch/generated": int(generated),
        "batch/generated_tokens": int(generated_tokens),
        "groups/batch_short": int(short > 0),
        "time/generate": t_gen,
    }
    if config.zero_variance.all_wrong == "hint":
        m = hints.metrics()
        keys = ["hint/groups", "hint/solved", "hint/unsolved", "hint/unhintable", "hint/extra_generations"]
        totals = dist.sum([m[k] for k in keys] + m["hint/solved_at_rung"])  # counts over processes
        stats.update({k: int(v) for k, v in zip(keys, totals[: len(keys)], strict=True)})
        stats["hint/solved_at_rung"] = [int(v) for v in totals[len(keys) :]]
        stats["time/hint"] = m["time/hint"]
    if control:
        stats["control/rate"] = sum(r for r, _ in control) / len(control)
        stats["control/agreement"] = sum(a for _, a in control) / len(control)
    if feedback.enabled:
        stats.update(_reduce_feedback(dist, judge_stats.metrics()))
        t_score -= judge_stats.seconds  # time/score excludes the judge, reported as time/judge
    if stats_out is not None:
        stats_out.update(stats)  # the same dict object as batch.stats below: later keys reach it too
        stats = stats_out
    if not kept_parts:
        stats["time/score"] = t_score
        return None, cursor
    t0 = time.perf_counter()
    rollout = concat([p[0] for p in kept_parts], rollout_engine.tokenizer.pad_token_id)
    examples = [e for p in kept_parts for e in p[1]]
    correct = torch.cat([p[2] for p in kept_parts])  # (P', G)
    scorable = torch.cat([p[6] for p in kept_parts])  # (P', G) False: the verifier abstained (advantage 0)
    rewards = scheme_rewards(correct, reward_scheme=config.reward_scheme)  # (P', G)
    if feedback.enabled:  # partial rewards replace the repaired groups' rewards, before overlong shaping
        repaired = torch.cat([p[4] for p in kept_parts])  # (P',)
        rewards = torch.where(repaired[:, None], torch.cat([p[3] for p in kept_parts]), rewards)  # (P', G)
    if config.reward.format_weight > 0:  # a shaping bonus for a readable final answer; correctness is unchanged
        formatted = torch.tensor(task.format_scores(rollout.texts), dtype=torch.float32).view_as(rewards)  # (P', G)
        rewards = rewards + config.reward.format_weight * formatted
    if config.overlong_buffer_len:
        rewards = rewards + overlong_penalty(
            rollout.lengths.view_as(rewards),
            max_completion_length=config.max_completion_length,
            buffer_len=config.overlong_buffer_len,
            factor=config.overlong_penalty_factor,
        )
    seq_adv = sequence_advantages(config, rewards, correct, scorable)  # (P', G)
    seq_adv = zero_variance_advantages(config, rewards, correct, seq_adv, scorable)  # (P', G)
    kinds = group_kinds(correct, scorable)
    zv = config.zero_variance
    flags = {}
    if "rl_zvp" in (zv.all_wrong, zv.all_correct):
        zvp = torch.zeros(correct.shape, dtype=torch.int8)  # (P', G)
        zvp[kinds["all_correct"] & torch.tensor(zv.all_correct == "rl_zvp")] = 1
        zvp[kinds["all_wrong"] & torch.tensor(zv.all_wrong == "rl_zvp")] = -1
        flags["rl_zvp"] = (zvp * scorable).reshape(-1)
    if zv.all_wrong == "lens":
        flags["lens"] = kinds["all_wrong"] | (kinds["mixed"] & torch.tensor(config.lens.mixed))  # (P',)
    # abstentions stay in the batch at advantage 0 (groups stay whole for NTHR, THR and LENS)
    rows = trained_rows(correct, method=config.advantage_estimator)  # (P', G)
    stats["time/score"] = t_score + time.perf_counter() - t0
    batch = TrainBatch(
        rollout=rollout,
        prompts=[e.prompt for e in examples],
        answers=[e.answer for e in examples],
        correct=correct.reshape(-1),
        rewards=rewards.reshape(-1).float(),
        seq_adv=seq_adv.reshape(-1).float(),
        rows=rows.reshape(-1),
        stats=stats,
        flags=flags,
        hinted=torch.cat([p[5] for p in kept_parts]),
        kind=sum(i * kinds[name].long() for i, name in enumerate(KINDS)),
    )
    if config.llds.enabled and config.llds.gate == "step":
        batch.step_ids = token_step_ids(
            rollout_engine.tokenizer, rollout.completion_ids, rollout.completion_mask, config.feedback.step_split
        )
    return batch, cursor
