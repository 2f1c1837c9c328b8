"""Re-generating all-wrong groups with hints from the reference solution (``zero_variance.all_wrong: hint``,
docs/algorithms.md §11).

For each all-wrong group: keep one original answer, re-generate G - 1 whose response starts with the reference
solution's first k steps (k from ``core.hints.hint_levels``, rising until one answer is right), verify the whole
responses. The hint tokens are marked ``offpolicy`` in the Rollout; the update trains them with LUFFY's shaped
loss, never with a PPO ratio, and LLD / NTHR leave hinted groups out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from neggrad.config import Config
from neggrad.core.groups import group_kinds
from neggrad.core.hints import hint_levels
from neggrad.feedback.steps import split_response
from neggrad.rollout.base import Rollout, concat


@dataclass
class HintStats:
    """Counts for ``hint/*`` over a step's rounds."""

    groups: int = 0
    solved: int = 0
    unsolved: int = 0
    unhintable: int = 0
    extra_generations: int = 0
    tokens: int = 0  # sampled tokens of the re-generations (the hint prefixes are written, not generated)
    solved_at: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # by ladder rung 1, 2, 3, 4+
    seconds: float = 0.0

    def metrics(self) -> dict:
        return {
            "hint/groups": self.groups,
            "hint/solved": self.solved,
            "hint/unsolved": self.unsolved,
            "hint/unhintable": self.unhintable,
            "hint/extra_generations": self.extra_generations,
            "hint/solved_at_rung": list(self.solved_at),
            "time/hint": self.seconds,
        }


def reference_steps(example, rule: str) -> tuple[str, list[str]]:
    """(solution text, its steps): the example's own ``steps`` when it has them, else the shared step splitter."""
    solution = getattr(example, "solution", None) or ""
    steps = list(getattr(example, "steps", None) or split_response(solution, rule)) if solution else []
    return solution, steps


def hint_prefix(solution: str, steps: list[str], k: int) -> str:
    """The reference text up to the end of its k-th step (separators included, as the model would write it)."""
    end = 0
    for step in steps[:k]:
        found = solution.find(step, end)
        if found < 0:  # a splitter that rewrites text: fall back to joining the steps
            return "\n".join(steps[:k])
        end = found + len(step)
    return solution[:end]


def hint_all_wrong(
    config: Config, engine, task, examples: list, rollout: Rollout, correct: Tensor, stats: HintStats
) -> tuple[Rollout, Tensor, Tensor]:
    """The round's rollout and (P, G) correctness with hinted all-wrong groups, and the (P,) hinted mask."""
    t0 = time.perf_counter()
    G = config.num_generations
    wrong = group_kinds(correct)["all_wrong"]
    hinted = torch.zeros(correct.shape[0], dtype=torch.bool)
    if not bool(wrong.any()):
        return rollout, correct, hinted
    correct = correct.clone()
    parts = []
    for g, example in enumerate(examples):
        rows = torch.arange(g * G, (g + 1) * G)
        if not bool(wrong[g]):
            parts.append(rollout.select(rows))
            continue
        stats.groups += 1
        solution, steps = reference_steps(example, config.feedback.step_split)
        levels = hint_levels(len(steps), tuple(config.hint.fractions))
        if not levels:
            stats.unhintable += 1
            parts.append(rollout.select(rows))
            continue
        for rung, k in enumerate(levels):
            guided = engine.generate_with_prefix(
                example.prompt, hint_prefix(solution, steps, k), num_generations=G - 1
            )
            stats.extra_generations += G - 1
            sampled = guided.completion_mask.bool()
            if guided.offpolicy is not None:
                sampled &= ~guided.offpolicy.to(sampled.device)
            stats.tokens += int(sampled.sum())
            ok = task.score(guided.texts, [example.answer] * (G - 1))
            if any(ok):
                parts.append(concat([rollout.select(rows[:1]), guided], engine.tokenizer.pad_token_id))
                correct[g, 1:] = torch.tensor(ok, dtype=torch.bool)
                hinted[g] = True
                stats.solved += 1
                stats.solved_at[min(rung, 3)] += 1
                break
        else:
            stats.unsolved += 1
            parts.append(rollout.select(rows))
    stats.seconds += time.perf_counter() - t0
    return concat(parts, engine.tokenizer.pad_token_id), correct, hinted
