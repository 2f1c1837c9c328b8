"""The judge contract: problem, reference solution and numbered steps in; a first wrong step out.

docs/algorithms.md §10.1. A judge returns, for each response, a ``Verdict``: the first wrong step
``k`` (1 <= k <= n), "none wrong", or a failure with its reason. Language-model judges are asked with
``render_prompt`` and read with ``parse_verdict``, whose rule is strict: the reply must end with a line
``FIRST_WRONG_STEP: <k>`` or ``FIRST_WRONG_STEP: NONE``; anything else, or k outside 1..n, is a failure.
A judge never raises for one bad response: the caller counts the failure and gives it reward 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal, Protocol

DEFAULT_TEMPLATE = """\
You check a student's solution step by step against a reference solution. Do not solve the problem \
again and do not write a corrected solution.

Problem:
{problem}

Reference solution:
{reference}

Student's solution, in numbered steps:
{steps}

Find the first step of the student's solution that is wrong (a wrong calculation, a false statement, \
or a step that does not follow). Explain briefly, then end your reply with exactly one line, either
FIRST_WRONG_STEP: <the number of that step>
or, if no step is wrong,
FIRST_WRONG_STEP: NONE"""
"""The default judge prompt; ``{problem}``, ``{reference}`` and ``{steps}`` are filled in (no other braces
are interpreted, so problems may contain any text)."""

PLACEHOLDERS = ("{problem}", "{reference}", "{steps}")

_VERDICT_LINE = re.compile(r"FIRST_WRONG_STEP:\s*(NONE|\d+)")


@dataclass(frozen=True)
class JudgeRequest:
    """One response to judge."""

    problem: str
    """The prompt the policy answered."""
    reference: str
    """A reference solution (or at least the reference answer) shown to the judge."""
    steps: tuple[str, ...]
    """The response cut into steps by ``feedback.step_split``; n = len(steps) >= 1."""


@dataclass(frozen=True)
class Verdict:
    """A judge's answer for one response: ``first_wrong``, ``none_wrong`` or ``failure``."""

    kind: Literal["first_wrong", "none_wrong", "failure"]
    num_steps: int
    """n, the response's step count (0 when it had none)."""
    step: int | None = None
    """k, 1-based, for ``first_wrong``."""
    reason: str | None = None
    """Why the judge could not judge, for ``failure``."""
    cached: bool = False
    """The answer came from the on-disk cache."""
    latency_s: float = 0.0
    """Seconds the judge took for this response (0 when cached or not asked)."""

    @property
    def failed(self) -> bool:
        return self.kind == "failure"

    @property
    def first_wrong_or_last(self) -> int:
        """k for ``first_wrong``; n for ``none_wrong`` (a verifier-wrong answer fails at its end,
        docs/algorithms.md §10.2)."""
        if self.kind == "failure":
            raise ValueError("a failed judgement has no step: its reward is 0")
        return self.step if self.kind == "first_wrong" else self.num_steps

    def with_timing(self, *, cached: bool, latency_s: float) -> Verdict:
        return replace(self, cached=cached, latency_s=latency_s)


def first_wrong(k: int, n: int) -> Verdict:
    return Verdict("first_wrong", n, step=k)


def none_wrong(n: int) -> Verdict:
    return Verdict("none_wrong", n)


def failure(reason: str, n: int = 0) -> Verdict:
    return Verdict("failure", n, reason=reason)


class Judge(Protocol):
    """What the group policy and ``neggrad judge`` call: one verdict per request, in order, never raising."""

    name: str

    def judge(self, requests: list[JudgeRequest]) -> list[Verdict]: ...


def render_prompt(request: JudgeRequest, template: str = DEFAULT_TEMPLATE) -> str:
    """The judge prompt for ``request``: the placeholders of ``template`` replaced, steps numbered from 1."""
    steps = "\n".join(f"Step {i}: {step}" for i, step in enumerate(request.steps, start=1))
    return (
        template.replace("{problem}", request.problem)
        .replace("{reference}", request.reference)
        .replace("{steps}", steps)
    )


def parse_verdict(reply: str, num_steps: int) -> Verdict:
    """Read a language-model judge's reply by the strict rule of docs/algorithms.md §10.1.

    The last non-empty line must be ``FIRST_WRONG_STEP: <k>`` (1 <= k <= n) or ``FIRST_WRONG_STEP: NONE``
    (surrounding whitespace and markdown emphasis ``*`` / backticks allowed); the last such line counts.
    Anything else is a failure, never an exception.

    >>> parse_verdict("Step 2 adds wrongly.\\nFIRST_WRONG_STEP: 2", 3).step
    2
    >>> parse_verdict("FIRST_WRONG_STEP: 7", 3).reason
    'verdict step 7 is outside 1..3'
    """
    lines = [line.strip().strip("*`").strip() for line in reply.splitlines() if line.strip()]
    if not lines:
        return failure("empty reply", num_steps)
    match = _VERDICT_LINE.fullmatch(lines[-1])
    if match is None:
        return failure("reply does not end with a FIRST_WRONG_STEP line", num_steps)
    if match.group(1) == "NONE":
        return none_wrong(num_steps)
    k = int(match.group(1))
    if not 1 <= k <= num_steps:
        return failure(f"verdict step {k} is outside 1..{num_steps}", num_steps)
    return first_wrong(k, num_steps)
