"""One step's training batch: generation rounds, verifier scores, the group filter, advantages.

Order per round: generate P groups, score correctness, the strategies' round hooks (random rewards, hints,
judge repair of all-wrong groups; strategies/base.py), filter groups on binary correctness; with ``refill``
repeat with new prompts until P groups are kept or ``max_generation_rounds`` is reached (surplus groups
are discarded). Then the kept groups' rewards (reward scheme, strategies, format bonus, overlong penalty)
and advantages (the estimator, then the strategies).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from neggrad import strategies as strategy_registry
from neggrad.config import Config
from neggrad.core.advantages import group_advantages, trained_rows
from neggrad.core.groups import KINDS, group_kinds
from neggrad.core.shaping import REWARD_MAX, overlong_penalty, scheme_rewards
from neggrad.feedback.judge import Judge
from neggrad.rollout.base import Rollout, concat
from neggrad.strategies import Groups, Round, Strategy
from neggrad.trainer.distributed import SINGLE, Dist


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


def _filter_groups(config: Config, rnd: Round, strategies: list[Strategy]) -> Tensor:
    """(P,) bool: groups kept by ``group_filter`` and the strategies, judged on binary correctness.
    Unscorable groups (the verifier abstained on every answer) are never kept."""
    kinds = group_kinds(rnd.correct, rnd.scorable)
    if config.group_filter == "zero_std":
        keep = kinds["mixed"]
    elif config.group_filter == "all_correct":
        keep = ~kinds["all_correct"]
    else:
        keep = torch.ones(rnd.correct.shape[0], dtype=torch.bool)
    for s in strategies:
        keep = s.keep(rnd, keep)
    return keep & ~kinds["unscorable"]


@dataclass
class _Tally:
    """What the rounds of one step sampled, for the sampling metrics (this process)."""

    counts: dict = field(default_factory=lambda: dict.fromkeys(KINDS, 0))  # groups of each kind
    kind_seconds: dict = field(default_factory=lambda: dict.fromkeys(KINDS, 0.0))  # generation (+ hooks) per kind
    sampled_correct: list = field(default_factory=list)  # (P, G) true correctness of each round
    abstained: int = 0
    dropped: int = 0
    rounds: int = 0
    generated: int = 0  # completions and completion tokens, every round (hooks' re-generations included)
    generated_tokens: int = 0
    t_gen: float = 0.0
    t_score: float = 0.0

    def stats(self, config: Config, dist: Dist, short: bool) -> dict:
        """The sampling metrics, reduced over processes."""
        all_correct = torch.cat(self.sampled_correct)  # (groups sampled here, G); the first round always samples
        names = list(self.counts)
        n_correct, n_sampled, *group_counts, dropped, short, generated, generated_tokens = dist.sum(
            [float(all_correct.sum()), all_correct.numel(), *[self.counts[k] for k in names], self.dropped]
            + [int(short), self.generated, self.generated_tokens]
        )
        counts = dict(zip(names, group_counts, strict=True))
        n_groups = n_sampled / config.num_generations
        seconds = dist.max(list(self.kind_seconds.values()))
        return {
            "accuracy": n_correct / n_sampled,
            **{f"groups/{k}_frac": v / n_groups for k, v in counts.items()},
            "groups/zero_std": int(counts["all_correct"] + counts["all_wrong"]),
            "reward/abstained": int(dist.sum([self.abstained])[0]),
            **{f"time/gen_{k}": v for k, v in zip(self.kind_seconds, seconds, strict=True)},
            "groups/dropped": int(dropped),
            "groups/gen_rounds": self.rounds,
            "batch/generated": int(generated),
            "batch/generated_tokens": int(generated_tokens),
            "groups/batch_short": int(short > 0),
            "time/generate": self.t_gen,
        }


@dataclass
class _Sampler:
    """What every round of one step shares."""

    config: Config
    engine: object
    task: object
    judge: Judge | None
    step: int
    dist: Dist
    strategies: list[Strategy]
    tally: _Tally

    def round(self, first: int) -> Round:
        """Generate and score P groups from prompt index ``first``; run the strategies' round hooks."""
        config, tally, task = self.config, self.tally, self.task
        P, G = config.num_prompts, config.num_generations
        examples = [task.train_example(first + i) for i in range(P)]
        t0 = time.perf_counter()
        index = {"prompt_index": range(first, first + P)} if self.dist.seeded_sampling else {}
        rollout = self.engine.generate([e.prompt for e in examples], num_generations=G, **index)
        t1 = time.perf_counter()
        tally.generated += len(rollout.texts)
        tally.generated_tokens += int(rollout.lengths.sum())
        answers = [e.answer for e in examples for _ in range(G)]
        outcomes = task.score_or_abstain(rollout.texts, answers)  # None: abstained
        correct = torch.tensor([bool(o) for o in outcomes], dtype=torch.bool).view(P, G)  # (P, G)
        scorable = torch.tensor([o is not None for o in outcomes], dtype=torch.bool).view(P, G)  # (P, G)
        tally.abstained += int((~scorable).sum())
        tally.sampled_correct.append(correct)
        rnd = Round(config, self.engine, task, self.judge, self.step, first, examples, rollout, correct, scorable)
        for s in self.strategies:
            s.scored(rnd)
        kinds = group_kinds(rnd.correct, rnd.scorable)
        for name, mask in kinds.items():
            tally.counts[name] += int(mask.sum())
            tally.kind_seconds[name] += (t1 - t0) * int(mask.sum()) / P  # the round's generation, equal shares
        # unscorable groups are dropped by the filter; shown as all-correct, the hooks (hints, judge) skip them
        rnd.visible = rnd.correct | kinds["unscorable"][:, None]  # (P, G)
        for s in self.strategies:
            s.round(rnd)
        for name, seconds in rnd.kind_seconds.items():
            tally.kind_seconds[name] += seconds
        tally.generated += rnd.generated
        tally.generated_tokens += rnd.generated_tokens
        tally.t_gen += t1 - t0
        tally.t_score += time.perf_counter() - t1
        return rnd


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
    strategies = strategy_registry.build(config)
    tally = _Tally()
    sampler = _Sampler(config, rollout_engine, task, judge, step, dist, strategies, tally)
    kept_parts: list[tuple[Rollout, list, Tensor, Tensor, dict]] = []
    kept = 0
    max_rounds = config.max_generation_rounds if config.refill else 1
    while tally.rounds < max_rounds and dist.any(kept < P):
        tally.rounds += 1
        first = cursor + dist.rank * P  # this process's slice of the round's N * P prompts
        cursor += dist.world_size * P
        if kept >= P:  # full already: another process refills (distributed.py)
            continue
        rnd = sampler.round(first)
        t1 = time.perf_counter()
        keep = _filter_groups(config, rnd, strategies)  # (P,)
        tally.dropped += int((~keep).sum())
        take = keep.nonzero().squeeze(1)[: P - kept]  # surplus groups are discarded
        kept += len(take)
        if len(take):
            rows = (take[:, None] * G + torch.arange(G)[None, :]).reshape(-1)  # (len(take) * G,)
            examples = [rnd.examples[i] for i in take.tolist()]
            groups = {k: v[take] for k, v in rnd.groups.items()}
            kept_parts.append((rnd.rollout.select(rows), examples, rnd.correct[take], rnd.scorable[take], groups))
        tally.t_score += time.perf_counter() - t1
    stats = tally.stats(config, dist, short=kept < P)
    for s in strategies:
        stats.update(s.sampling_metrics(dist))
    t_score = tally.t_score - stats.get("time/judge", 0.0)  # the judge's seconds are time/judge, not time/score
    if stats_out is not None:
        stats_out.update(stats)  # the same dict object as batch.stats below: later keys reach it too
        stats = stats_out
    if not kept_parts:
        stats["time/score"] = t_score
        return None, cursor
    t0 = time.perf_counter()
    batch = _batch(config, rollout_engine.tokenizer, task, kept_parts, strategies, stats)
    stats["time/score"] = t_score + time.perf_counter() - t0
    return batch, cursor


def _batch(config: Config, tokenizer, task, kept_parts: list, strategies: list[Strategy], stats: dict) -> TrainBatch:
    """The kept groups' rewards and advantages, the strategies' hooks between them, as a TrainBatch."""
    rollout = concat([p[0] for p in kept_parts], tokenizer.pad_token_id)
    examples = [e for p in kept_parts for e in p[1]]
    correct = torch.cat([p[2] for p in kept_parts])  # (P', G)
    scorable = torch.cat([p[3] for p in kept_parts])  # (P', G) False: the verifier abstained (advantage 0)
    data = {k: torch.cat([p[4][k] for p in kept_parts]) for k in kept_parts[0][4]}  # the round hooks' values
    kinds = group_kinds(correct, scorable)
    groups = Groups(config, rollout, tokenizer, correct, scorable, data, kinds)
    groups.rewards = scheme_rewards(correct, reward_scheme=config.reward_scheme)  # (P', G)
    for s in strategies:
        s.rewards(groups)
    rewards = groups.rewards
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
    groups.rewards = rewards
    groups.seq_adv = sequence_advantages(config, rewards, correct, scorable)  # (P', G)
    for s in strategies:
        s.advantages(groups)
    # abstentions stay in the batch at advantage 0 (groups stay whole for NTHR, THR and LENS)
    rows = trained_rows(correct, method=config.advantage_estimator)  # (P', G)
    return TrainBatch(
        rollout=rollout,
        prompts=[e.prompt for e in examples],
        answers=[e.answer for e in examples],
        correct=correct.reshape(-1),
        rewards=rewards.reshape(-1).float(),
        seq_adv=groups.seq_adv.reshape(-1).float(),
        rows=rows.reshape(-1),
        stats=stats,
        flags=groups.flags,
        hinted=data.get("hinted", torch.zeros(correct.shape[0], dtype=torch.bool)),
        kind=sum(i * kinds[name].long() for i, name in enumerate(KINDS)),
    )
