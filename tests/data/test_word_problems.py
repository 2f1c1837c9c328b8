"""The word-problem task (task.name: word_problems): stories, reference solutions, splits, answers, oracle steps.

The stories are checked against an independent reader (:func:`read_story`, regexes over the sentences) rather than
against the generator's own bookkeeping.
"""

import random
import re

import pytest

from neggrad.config import ConfigError, TaskConfig, build_config
from neggrad.feedback.judge import JudgeRequest
from neggrad.feedback.oracle import exact_verdict
from neggrad.strategies.hint_ladder import hint_prefix, reference_steps
from neggrad.tasks import word_problems as wp

_ADD = re.compile(r"(?:buys|finds|gets|gives (?:him|her)) (\d+) more")
_SUB = re.compile(r"(?:gives away|loses|sells|gives) (\d+)(?: to a friend)?\.")
_MUL = re.compile(r"(\d+) (?:bags|boxes) with (\d+) \w+ in each")


def read_story(problem: str) -> tuple[int, int]:
    """(answer, operations) of a story, read sentence by sentence: a slow reference for the generator."""
    sentences = re.split(r"(?<=[.?]) ", problem)
    value = int(re.match(r"\w+ has (\d+) \w+\.", sentences[0]).group(1))
    ops = 0
    for s in sentences[1:-1]:
        if m := _MUL.search(s):
            value += int(m.group(1)) * int(m.group(2))
        elif m := _ADD.search(s):
            value += int(m.group(1))
        elif m := _SUB.search(s):
            value -= int(m.group(1))
        else:
            raise AssertionError(f"unread sentence {s!r}")
        ops += 1
        assert value >= 0, problem
    assert sentences[-1].startswith("How many ")
    return value, ops


@pytest.mark.parametrize("digits,operators", [(1, "+-"), (2, "+-*"), (1, "-"), (3, "*")])
def test_stories_read_back_to_their_answers_and_solutions(digits, operators):
    cfg = TaskConfig(name="word_problems", min_operands=2, max_operands=4, digits=digits, operators=operators)
    for i in range(200):
        ex = wp.problem_at(cfg, "train", i)
        answer, ops = read_story(ex.problem)
        assert str(answer) == ex.answer and 1 <= ops <= 3
        assert len(ex.steps) == ops + 1 and ex.solution == "\n".join(ex.steps)
        assert ex.steps[-1] == f"The answer is \\boxed{{{answer}}}." and wp.extract_integer(ex.solution) == answer
        for step in ex.steps:
            assert not wp.step_is_wrong(step, answer), step  # the reference's own equations are true
        numbers = [int(n) for n in re.findall(r"\d+", ex.problem.split(" has ", 1)[1].split("?")[0])]
        assert all(n < 10**digits for n in numbers if n != 0)


def test_streams_are_addressable_and_eval_never_meets_training():
    cfg = TaskConfig(name="word_problems", min_operands=2, max_operands=2, digits=1, eval_size=40)
    assert wp.problem_at(cfg, "train", 17) == wp.problem_at(cfg, "train", 17)
    assert wp.problem_at(cfg, "train", 17) != wp.problem_at(cfg.model_copy(update={"seed": 1}), "train", 17)
    held_out = {e.problem for e in wp.eval_problems(cfg)}
    assert len(held_out) == 40
    train = {wp.problem_at(cfg, "train", i).problem for i in range(3000)}
    assert not held_out & train
    assert all(not wp.is_eval_problem(cfg, p) for p in train) and all(wp.is_eval_problem(cfg, p) for p in held_out)


def test_too_many_held_out_problems_is_a_clear_error():
    cfg = TaskConfig(name="word_problems", min_operands=2, max_operands=2, digits=1, operators="-", eval_size=5000)
    with pytest.raises(ValueError, match="task.eval_size=5000 asks for more distinct held-out"):
        wp.eval_problems(cfg)


def test_compose_uses_the_rng_only():
    a = wp.compose(random.Random(3), operands=3, digits=2, operators="+-*")
    assert a == wp.compose(random.Random(3), operands=3, digits=2, operators="+-*")
    with pytest.raises(ValueError, match="at least 2 numbers"):
        wp.compose(random.Random(0), operands=1, digits=1, operators="+")


@pytest.mark.parametrize(
    "completion,expected",
    [
        ("5 + 3 = 8\nThe answer is \\boxed{8}.", 8),
        ("\\boxed{7} no wait \\boxed{8}", 8),
        ("The answer is 8.", 8),
        ("Final answer: 1,024", 1024),
        ("So the answer is \\boxed{8 cards}", 8),
        ("The answer is \\boxed{}.", None),
        ("The answer is x.", None),
        ("\\boxed{3+5}", None),
        ("5 + 3 = 8", None),
        ("The answer is 1.5.", None),
    ],
)
def test_extract_integer(completion, expected):
    assert wp.extract_integer(completion) == expected


def test_score_is_exact_and_checks_lengths():
    assert wp.score(["The answer is \\boxed{8}.", "The answer is 9.", "eight"], ["8", "8", "8"]) == [
        True,
        False,
        False,
    ]
    with pytest.raises(ValueError, match="repeat each answer"):
        wp.score(["a", "b"], ["1"])


@pytest.mark.parametrize(
    "step,wrong",
    [
        ("14 + 5 = 19", False),
        ("14 + 5 = 18", True),
        ("She has 19 - 3 = 16 left, then 2 * 4 = 9", True),
        ("2 x 4 = 8 and 16 + 8 = 24", False),
        ("12 / 4 = 3", False),
        ("12 / 5 = 2", True),
        ("Mia buys some marbles.", False),
        ("The answer is \\boxed{24}.", False),
        ("The answer is \\boxed{23}.", True),
    ],
)
def test_step_is_wrong(step, wrong):
    assert wp.step_is_wrong(step, 24) is wrong


def test_oracle_judges_word_problem_steps_by_their_arithmetic():
    reference = "14 + 5 = 19\n19 - 3 = 16\nThe answer is \\boxed{16}."
    verdict = exact_verdict(JudgeRequest("Mia has 14 ...", reference, ("14 + 5 = 19", "19 - 3 = 15", "\\boxed{15}")))
    assert (verdict.kind, verdict.step) == ("first_wrong", 2)
    verdict = exact_verdict(JudgeRequest("Mia has 14 ...", reference, ("14 + 5 = 19", "so 16 left")))
    assert verdict.kind == "none_wrong"  # nothing false is written, the answer is just never stated
    verdict = exact_verdict(JudgeRequest("What is x?", "a circle", ("x = 2",)))
    assert verdict.failed


def test_hints_cut_the_reference_solution_at_its_lines():
    cfg = TaskConfig(name="word_problems", min_operands=3, max_operands=3)
    ex = wp.problem_at(cfg, "train", 0)
    solution, steps = reference_steps(ex, "lines")
    assert steps == list(ex.steps)
    assert hint_prefix(solution, steps, 1) == ex.steps[0]


def test_config_defaults_and_refusals():
    config = build_config({}, ["task.name=word_problems", "model.name_or_path=/some/model"])
    assert config.reward.kind == "integer"
    config = build_config({}, ["task.name=word_problems", "model.name_or_path=/m", "reward.kind=math"])
    assert config.reward.kind == "math"
    with pytest.raises(ConfigError, match="reward.kind 'arithmetic' reads the testbed"):
        build_config({}, ["task.name=word_problems", "model.name_or_path=/m", "reward.kind=arithmetic"])
    with pytest.raises(ConfigError, match="task.name 'word_problems' is a built-in prompt source"):
        build_config({}, ["task.name=word_problems", "model.name_or_path=/m", "data.source=x.jsonl"])
    with pytest.raises(ConfigError, match="word problems need a pretrained"):
        build_config({}, ["task.name=word_problems"])
    with pytest.raises(ConfigError, match="use feedback.step_split: lines"):
        build_config(
            {},
            [
                "task.name=word_problems",
                "model.name_or_path=/m",
                "feedback.enabled=true",
                "feedback.step_split=testbed",
            ],
        )
    ok = build_config({}, ["task.name=word_problems", "model.name_or_path=/m", "feedback.enabled=true"])
    assert ok.feedback.judge == "oracle" and ok.feedback.step_split == "lines"
    with pytest.raises(ConfigError, match="needs feedback.step_split: testbed"):
        build_config({}, ["feedback.enabled=true", "feedback.step_split=lines"])
