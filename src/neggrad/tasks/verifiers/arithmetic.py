"""Verifier of the arithmetic testbed: the final answer (the reward) and the first wrong step (for step judges).

The answer is the integer after the last ``A:`` of the completion, and it must be all that follows:
``"... A: 64"`` answers 64, ``"... A: 64, 7"`` answers nothing. Correctness is integer equality, so
``"A: 064"`` matches ``"64"``.
"""

from __future__ import annotations

import re

from neggrad.tasks.testbed import parse_prompt, solve, split_steps

_INTEGER = re.compile(r"-?\d+")


def extract_answer(completion: str) -> str | None:
    """The integer after the last ``A:``, stripped; None when there is no ``A:`` or no bare integer after it.

    >>> extract_answer("37+45=82, 82-18=64. A: 64")
    '64'
    >>> extract_answer("37+45=82, 82-18=64. A: sixty") is None
    True
    """
    if "A:" not in completion:
        return None
    tail = completion.rsplit("A:", 1)[1].strip()
    return tail if _INTEGER.fullmatch(tail) else None


def score(completions: list[str], answers: list[str]) -> list[bool]:
    """Exact integer match of each completion's extracted answer with its gold answer.

    Args:
        completions: (B,) decoded completions, special tokens removed.
        answers: (B,) gold answers as integer strings, one per completion.

    Returns:
        (B,) True where the completion's answer equals the gold integer.
    """
    if len(completions) != len(answers):
        raise ValueError(
            f"got {len(completions)} completions but {len(answers)} answers: repeat each answer "
            "num_generations times so there is one per completion"
        )
    results = []
    for completion, answer in zip(completions, answers, strict=True):
        predicted = extract_answer(completion)
        results.append(predicted is not None and int(predicted) == int(answer))
    return results


def first_wrong_step(problem_prompt: str, completion: str) -> int | None:
    """1-based index of the first step of ``completion`` that differs from the chain ``problem_prompt`` defines.

    Steps are cut by :func:`neggrad.tasks.testbed.split_steps` and compared as exact strings with the
    reference steps (every equation, then ``A: n``). A missing step is wrong at its position, and so
    is a step past the reference's last one. None means every step is right.

    >>> first_wrong_step("Q: 37+45-18=", "37+45=82, 82-18=64. A: 64") is None
    True
    >>> first_wrong_step("Q: 37+45-18=", "37+45=72, 72-18=54. A: 54")
    1
    """
    reference = solve(*parse_prompt(problem_prompt)).steps
    written = split_steps(completion)
    for position, (mine, theirs) in enumerate(zip(written, reference, strict=False), start=1):
        if mine != theirs:
            return position
    if len(written) != len(reference):
        return min(len(written), len(reference)) + 1
    return None
