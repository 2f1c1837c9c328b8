"""What the trainer needs of a task and of a verifier: two small interfaces (``tasks/build.py`` builds them).

A ``Task`` gives a deterministic training stream (``train_example(index)``, so the data cursor is one integer), the
held-out set, and scores: ``score`` (binary correctness, one per completion), ``score_or_abstain`` (None where the
verifier abstained: a timeout, or None from a user's function; such an answer never trains), ``format_scores``
(1.0 where a final answer can be extracted, for ``reward.format_weight``) and ``close`` (stops verifier worker
processes). Examples carry ``.prompt`` (model input) and ``.answer`` (gold).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Verifier(Protocol):
    """Scores completions against gold answers: the testbed's exact match, math-verify in workers, a user function."""

    def score(self, completions: list[str], answers: list[str]) -> list[bool]: ...

    def score_or_abstain(self, completions: list[str], answers: list[str]) -> list[bool | None]: ...

    def close(self) -> None: ...


@runtime_checkable
class Task(Verifier, Protocol):
    """A prompt source with its verifier."""

    def train_example(self, index: int) -> Any: ...

    def eval_examples(self) -> list[Any]: ...

    def format_scores(self, completions: list[str]) -> list[float]: ...
