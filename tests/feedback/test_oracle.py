"""The testbed's oracle judge: exact step checks, and seeded judge noise."""

import random
from collections import Counter

import pytest

from neggrad.feedback.judge import JudgeRequest
from neggrad.feedback.oracle import OracleJudge, add_noise, exact_verdict
from neggrad.feedback.steps import split_response
from neggrad.tasks.testbed import solve
from neggrad.tasks.verifiers.arithmetic import first_wrong_step

PROMPT = "Q: 37+45-18="  # reference: 37+45=82, 82-18=64. A: 64


def _request(completion: str, prompt: str = PROMPT) -> JudgeRequest:
    return JudgeRequest(prompt, "", tuple(split_response(completion, "testbed")))


@pytest.mark.parametrize(
    ("completion", "kind", "step", "n"),
    [
        ("37+45=72, 72-18=54. A: 54", "first_wrong", 1, 3),  # the first addition is off
        ("37+45=82, 82-18=63. A: 63", "first_wrong", 2, 3),
        ("37+45=82, 82-18=64. A: 65", "first_wrong", 3, 3),  # right chain, wrong answer line
        ("37+45=82, 82-18=64. A: 64, 1", "first_wrong", 4, 4),  # a step past the reference's last
        ("37+45=82, 82-18=64", "none_wrong", None, 2),  # right but unfinished: fails at its end, k = n
        ("37+45=82, 82-18=64. A: 64", "none_wrong", None, 3),
    ],
)
def test_exact_verdicts(completion, kind, step, n):
    verdict = exact_verdict(_request(completion))
    assert (verdict.kind, verdict.step, verdict.num_steps) == (kind, step, n)


def test_unjudgeable_responses_are_failures():
    assert exact_verdict(_request("")).reason == "the response has no steps"
    assert "testbed prompts" in exact_verdict(_request("1+1=2", prompt="What is 1+1?")).reason


def test_agrees_with_the_verifier_on_random_corruptions():
    rng = random.Random(0)
    for _ in range(200):
        operands = [rng.randint(0, 99) for _ in range(4)]
        problem = solve(operands, [rng.choice("+-") for _ in range(3)])
        steps = list(problem.steps)
        position = rng.randrange(len(steps))
        steps[position] = steps[position][:-1] + str((int(steps[position][-1]) + 1) % 10)
        completion = ", ".join(steps[:-1]) + ". " + steps[-1]
        verdict = exact_verdict(_request(completion, problem.prompt))
        assert verdict.step == first_wrong_step(problem.prompt, completion) == position + 1


def test_noise_is_seeded_per_response():
    requests = [_request("37+45=72, 72-18=54. A: 54"), _request("37+45=82, 82-18=63. A: 63")] * 3
    a = OracleJudge(flip=0.5, shift=0.5, seed=1).judge(requests)
    b = OracleJudge(flip=0.5, shift=0.5, seed=1).judge(list(reversed(requests)))
    assert a == list(reversed(b))  # the same response gets the same verdict in any order
    assert a[0] == a[2] == a[4]


def test_shift_moves_one_position_and_reflects_at_the_ends():
    # positions: step 1..3, none = 4. Step 1 can only move to 2; none (4) only to step 3.
    first = exact_verdict(_request("37+45=72, 72-18=54. A: 54"))  # k = 1
    none = exact_verdict(_request("37+45=82, 82-18=64. A: 64"))
    rng = random.Random(0)
    assert {add_noise(first, rng, flip=0.0, shift=1.0).step for _ in range(50)} == {2}
    assert {add_noise(none, rng, flip=0.0, shift=1.0).step for _ in range(50)} == {3}
    middle = exact_verdict(_request("37+45=82, 82-18=63. A: 63"))  # k = 2 -> 1 or 3
    moved = Counter(add_noise(middle, rng, flip=0.0, shift=1.0).step for _ in range(400))
    assert set(moved) == {1, 3} and 150 < moved[1] < 250


def test_flip_draws_uniformly_over_steps_and_none():
    verdict = exact_verdict(_request("37+45=72, 72-18=54. A: 54"))
    rng = random.Random(0)
    drawn = Counter(add_noise(verdict, rng, flip=1.0, shift=0.0).step for _ in range(2000))  # None = none wrong
    assert set(drawn) == {1, 2, 3, None}
    assert all(400 < count < 600 for count in drawn.values())  # 500 each expected


def test_failures_stay_failures_under_noise():
    failed = exact_verdict(_request(""))
    assert add_noise(failed, random.Random(0), flip=1.0, shift=1.0) == failed
