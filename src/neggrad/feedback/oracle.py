"""The oracle judge of the built-in tasks: every step checked exactly, optionally with judge noise.

A perfect judge lets the method be studied without judge error (issue 6); the noise options then
measure how much error it tolerates. Testbed answers must be cut by the ``testbed`` split rule; word
problems (``task.name: word_problems``) by lines, and their steps are checked by their arithmetic.
"""

from __future__ import annotations

import random

from neggrad.feedback.judge import JudgeRequest, Verdict, failure, first_wrong, none_wrong
from neggrad.tasks import word_problems
from neggrad.tasks.testbed import parse_prompt, solve


def exact_verdict(request: JudgeRequest) -> Verdict:
    """The first written step that differs from the reference chain the prompt defines.

    The reference steps are the prompt's equations, each from the previous result, then ``A: n``
    (``neggrad.tasks.testbed.solve``); a step is right iff it equals its reference step as a string,
    as in ``neggrad.tasks.verifiers.arithmetic.first_wrong_step``. A step past the reference's last one is
    wrong. If every written step is right but steps are missing, no written step is wrong: the verdict
    is "none wrong" (the answer fails at its end, k = n). A prompt outside the testbed's format is a failure.
    """
    n = len(request.steps)
    if n == 0:
        return failure("the response has no steps", 0)
    try:
        reference = solve(*parse_prompt(request.problem)).steps
    except ValueError:
        return word_problem_verdict(request)
    for k, step in enumerate(request.steps, start=1):
        if k > len(reference) or step != reference[k - 1]:
            return first_wrong(k, n)
    return none_wrong(n)


def word_problem_verdict(request: JudgeRequest) -> Verdict:
    """The first written step of a word-problem answer that states something false.

    The gold answer is the integer boxed in the reference solution. A step is wrong when one of its equations
    ``a op b = c`` is false or it boxes another answer (:func:`neggrad.tasks.word_problems.step_is_wrong`); prose
    without equations is never wrong by itself. If no step is wrong the verdict is "none wrong" (an answer that
    never boxes the right number then fails at its end, k = n). A reference without a boxed integer (neither a
    testbed prompt nor a word problem) is a failure.
    """
    n = len(request.steps)
    gold = word_problems.extract_integer(request.reference)
    if gold is None:
        return failure("the oracle judges the built-in tasks only (testbed prompts, word problems)", n)
    for k, step in enumerate(request.steps, start=1):
        if word_problems.step_is_wrong(step, gold):
            return first_wrong(k, n)
    return none_wrong(n)


def add_noise(verdict: Verdict, rng: random.Random, *, flip: float, shift: float) -> Verdict:
    """A noisy judge: positions 1..n are "step k is the first wrong", position n + 1 is "none wrong".

    With probability ``flip`` the verdict is replaced by a position drawn uniformly from 1..n + 1 (a
    guessing judge); otherwise, with probability ``shift``, it moves one position up or down (even
    odds), reflected at the ends (an off-by-one judge). Failures stay failures.
    """
    if verdict.failed:
        return verdict
    n = verdict.num_steps
    position = verdict.step if verdict.kind == "first_wrong" else n + 1
    if rng.random() < flip:
        position = rng.randint(1, n + 1)
    elif rng.random() < shift:
        position += rng.choice((-1, 1))
        if position < 1:
            position = 2
        elif position > n + 1:
            position = n
    return none_wrong(n) if position == n + 1 else first_wrong(position, n)


class OracleJudge:
    """Exact step checking for the testbed, plus seeded noise (``feedback.noise``).

    The noise of a response depends only on (seed, problem, steps), so the same response gets the same
    verdict in every run and on resume, whatever order the responses come in.
    """

    name = "oracle"

    def __init__(self, *, flip: float = 0.0, shift: float = 0.0, seed: int = 0):
        self.flip, self.shift, self.seed = flip, shift, seed

    def judge(self, requests: list[JudgeRequest]) -> list[Verdict]:
        verdicts = []
        for request in requests:
            verdict = exact_verdict(request)
            if self.flip or self.shift:
                rng = random.Random("\n".join((f"neggrad-oracle-noise|{self.seed}", request.problem, *request.steps)))
                verdict = add_noise(verdict, rng, flip=self.flip, shift=self.shift)
            verdicts.append(verdict)
        return verdicts
