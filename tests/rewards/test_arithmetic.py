import pytest

from neggrad.tasks.verifiers.arithmetic import extract_answer, first_wrong_step, score


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("37+45=82, 82-18=64. A: 64", "64"),
        ("12-45=-33, -33+7=-26. A: -26", "-26"),
        ("A: 3. A: 4", "4"),  # the last A: counts
        ("A:64  ", "64"),
        ("37+45=82, 82-18=64.", None),  # no answer line
        ("A: 64, 7", None),  # more than an integer after A:
        ("A: ", None),
        ("A: 6-4", None),
    ],
)
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


def test_score_is_integer_equality():
    completions = ["x. A: 64", "A: 064", "A: 65", "no answer", "A: -0"]
    assert score(completions, ["64", "64", "64", "64", "0"]) == [True, True, False, False, True]


def test_score_needs_one_answer_per_completion():
    with pytest.raises(ValueError, match="repeat each answer"):
        score(["A: 1", "A: 1"], ["1"])


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("37+45=82, 82-18=64. A: 64", None),
        ("37+45=72, 72-18=54. A: 54", 1),  # 37+45 is 82: step 1 wrong, the rest follows from it
        ("37+45=82, 82-18=74. A: 74", 2),
        ("37+45=82, 82-18=64. A: 46", 3),  # right chain, answer line copied wrong
        ("37+45=82, 82-18=64", 3),  # answer line missing
        ("37+45=82", 2),  # stopped after one step
        ("37+45=82, 82-18=64. A: 64. A: 64", 4),  # a step past the end
        ("", 1),
    ],
)
def test_first_wrong_step(completion, expected):
    assert first_wrong_step("Q: 37+45-18=", completion) == expected
