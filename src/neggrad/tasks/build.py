"""The tasks a config can name, each a ``Task`` (tasks/base.py) with its ``Verifier``: the testbed's arithmetic,
word problems for pretrained chat models, and math problems from ``data.source``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from neggrad.config import Config, RewardConfig, TaskConfig
from neggrad.tasks import testbed as arithmetic_task
from neggrad.tasks import word_problems
from neggrad.tasks.data.sources import MathExample
from neggrad.tasks.verifiers import arithmetic
from neggrad.tasks.verifiers.math import format_score


@dataclass(frozen=True)
class _ExactVerifier:
    """An exact, in-process check with the verifier interface (score, score_or_abstain, close)."""

    check: object  # (completions, answers) -> list[bool]

    def score(self, completions: list[str], answers: list[str]) -> list[bool]:
        return self.check(completions, answers)

    def score_or_abstain(self, completions: list[str], answers: list[str]) -> list[bool | None]:
        return self.score(completions, answers)  # an exact match never abstains

    def close(self) -> None:
        """Nothing to release."""


def _arithmetic_verifier() -> _ExactVerifier:
    """The testbed's exact integer match after ``A:``."""
    return _ExactVerifier(arithmetic.score)


def build_verifier(reward: RewardConfig):
    """The verifier ``reward.kind`` names: arithmetic, integer, math (math-verify in worker processes) or an
    import path."""
    if reward.kind in ("arithmetic", "auto"):
        return _arithmetic_verifier()
    if reward.kind == "integer":  # the integer a completion states as its final answer (word problems)
        return _ExactVerifier(word_problems.score)
    if reward.kind == "math":
        from neggrad.tasks.verifiers.math import MathVerifier

        return MathVerifier(timeout=reward.timeout, workers=reward.workers)
    from neggrad.tasks.verifiers.custom import CustomReward

    return CustomReward(reward.kind)


class _Verified:
    """What every task does with its ``verifier``: score completions, abstain where it abstains, release it."""

    verifier: object

    def score(self, completions: list[str], answers: list[str]) -> list[bool]:
        return self.verifier.score(completions, answers)

    def score_or_abstain(self, completions: list[str], answers: list[str]) -> list[bool | None]:
        """As ``score``, None where the verifier abstained (a timeout, or None from a custom verifier): such an
        answer is left out of its group's statistics and never trains (docs/concepts/wrong-answers.md)."""
        return self.verifier.score_or_abstain(completions, answers)

    def close(self) -> None:
        """Stop the verifier's worker processes, if any."""
        self.verifier.close()


@dataclass
class ArithmeticTask(_Verified):
    """The built-in multi-step arithmetic testbed, scored by exact answer match (or the configured verifier)."""

    config: TaskConfig
    verifier: object = field(default_factory=_arithmetic_verifier)

    def train_example(self, index: int) -> arithmetic_task.Problem:
        return arithmetic_task.train_problem(self.config, index)

    def eval_examples(self) -> list[arithmetic_task.Problem]:
        return arithmetic_task.eval_problems(self.config)

    def format_scores(self, completions: list[str]) -> list[float]:
        return [float(arithmetic.extract_answer(c) is not None) for c in completions]


class MathTask(_Verified):
    """Math problems from ``data.source`` (files or hub), verified by ``reward.kind`` (math-verify by default).

    The training stream visits every training example once per pass, in an order reshuffled each pass from
    ``(data.seed, pass)``, so ``train_example(i)`` depends only on the config and ``i`` (exact resume).
    """

    def __init__(self, train: list[MathExample], eval_set: list[MathExample], verifier, *, seed: int = 0):
        if not train:
            raise ValueError("the training prompt set is empty")
        self.train, self.eval_set, self.verifier, self.seed = train, eval_set, verifier, seed
        self._order: tuple[int, list[int]] = (-1, [])

    @classmethod
    def from_config(cls, config: Config, *, tokenizer=None) -> MathTask:
        """Load ``config.data``'s prompt sets (chat template from ``tokenizer``) and ``config.reward``'s verifier."""
        from neggrad.tasks.data.sets import load_prompt_sets

        train, eval_set = load_prompt_sets(config.data, tokenizer=tokenizer)
        return cls(train, eval_set, build_verifier(config.reward), seed=config.data.seed)

    def train_example(self, index: int) -> MathExample:
        n = len(self.train)
        epoch, position = divmod(index, n)
        if self._order[0] != epoch:
            order = list(range(n))
            random.Random(f"neggrad-data-order|{self.seed}|{epoch}").shuffle(order)
            self._order = (epoch, order)
        return self.train[self._order[1][position]]

    def eval_examples(self) -> list[MathExample]:
        return self.eval_set

    def format_scores(self, completions: list[str]) -> list[float]:
        return [format_score(c) for c in completions]


class WordProblemTask(_Verified):
    """Arithmetic word problems (``task.name: word_problems``) formatted for a chat model, checked by ``reward.kind``.

    Training problems form an index-addressable stream and held-out ones a disjoint set (a hash of the problem
    text decides), as in the testbed; prompts are formatted by ``data.prompt_template`` and, with
    ``data.chat_template``, the tokenizer's chat template.
    """

    def __init__(self, config: Config, verifier, *, tokenizer=None):
        from neggrad.tasks.data.prompts import format_prompt

        data = config.data
        self.config, self.verifier = config.task, verifier

        def formatter(problem: str) -> str:
            return format_prompt(
                problem,
                template=data.prompt_template,
                tokenizer=tokenizer,
                chat_template=data.chat_template,
                system_prompt=data.system_prompt,
            )

        self._format = formatter
        self._eval = word_problems.eval_problems(self.config, formatter=formatter)

    def train_example(self, index: int) -> word_problems.WordProblem:
        return word_problems.problem_at(self.config, "train", index, formatter=self._format)

    def eval_examples(self) -> list[word_problems.WordProblem]:
        return self._eval

    def format_scores(self, completions: list[str]) -> list[float]:
        return [float(word_problems.extract_integer(c) is not None) for c in completions]


def build_task(config: Config | TaskConfig, *, tokenizer=None) -> ArithmeticTask | MathTask | WordProblemTask:
    """The prompt source of a run: :class:`MathTask` when ``data.source`` is set, else the arithmetic testbed.

    Pass the whole :class:`Config` (and the policy's tokenizer, for ``data.chat_template``); a bare
    :class:`TaskConfig` still gives the testbed with its exact-match verifier.
    """
    if isinstance(config, TaskConfig):
        return ArithmeticTask(config)
    if config.data.source is not None:
        return MathTask.from_config(config, tokenizer=tokenizer)
    if config.task.name == "word_problems":
        return WordProblemTask(config, build_verifier(config.reward), tokenizer=tokenizer)
    return ArithmeticTask(config.task, build_verifier(config.reward))
