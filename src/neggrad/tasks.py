"""Prompt sources with their verifier, behind one small interface the trainer uses.

A task gives ``train_example(index)`` (a deterministic stream, so the data cursor is one integer),
``eval_examples()`` (the held-out set) and ``score(completions, answers)`` (binary correctness).
"""

from __future__ import annotations

from dataclasses import dataclass

from neggrad.config import TaskConfig
from neggrad.rewards import arithmetic
from neggrad.testbed import task as arithmetic_task


@dataclass
class ArithmeticTask:
    """The built-in multi-step arithmetic testbed, scored by exact answer match."""

    config: TaskConfig

    def train_example(self, index: int) -> arithmetic_task.Problem:
        return arithmetic_task.train_problem(self.config, index)

    def eval_examples(self) -> list[arithmetic_task.Problem]:
        return arithmetic_task.eval_problems(self.config)

    def score(self, completions: list[str], answers: list[str]) -> list[bool]:
        return arithmetic.score(completions, answers)


def build_task(config: TaskConfig) -> ArithmeticTask:
    """The prompt source named by ``task.name``."""
    return ArithmeticTask(config)
