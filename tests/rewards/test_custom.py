"""A reward function named by import path: loading errors say what is wrong, results are checked."""

import textwrap

import pytest

from neggrad.tasks.verifiers.custom import CustomReward, load_reward_fn


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        textwrap.dedent(
            """
            NOT_A_FUNCTION = 3

            def ends_with(completions, answers):
                return [c.strip().endswith(a) for c, a in zip(completions, answers)]

            def too_few(completions, answers):
                return [True]

            def abstains(completions, answers):
                return [None if c == "?" else c == a for c, a in zip(completions, answers)]

            def graded(completions, answers):
                return [0.5 for _ in completions]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_rewards"


def test_user_function_scores(user_module):
    reward = CustomReward(f"{user_module}:ends_with")
    assert reward.score(["so 12", "so 13"], ["12", "12"]) == [True, False]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("my_rewards", r"not 'arithmetic', 'math' or an import path"),
        ("no_such_pkg.rewards:fn", r"cannot import module 'no_such_pkg.rewards' \(No module named 'no_such_pkg'\)"),
        ("my_rewards:missing", r"'my_rewards' has no attribute 'missing'"),
        ("my_rewards:NOT_A_FUNCTION", r"is a int, not a function"),
    ],
)
def test_bad_paths_are_explained(user_module, path, message):
    with pytest.raises(ValueError, match=message):
        load_reward_fn(path)


def test_wrong_length_and_non_binary_values_are_refused(user_module):
    with pytest.raises(ValueError, match="returned 1 values for 2 completions"):
        CustomReward(f"{user_module}:too_few").score(["a", "b"], ["1", "2"])
    with pytest.raises(ValueError, match=r"returned 0.5: return True/False"):
        CustomReward(f"{user_module}:graded").score(["a"], ["1"])


def test_none_is_an_abstention(user_module):
    reward = CustomReward(f"{user_module}:abstains")
    assert reward.score_or_abstain(["?", "1", "2"], ["1", "1", "1"]) == [None, True, False]
    assert reward.score(["?", "1", "2"], ["1", "1", "1"]) == [False, True, False]  # evaluation: not solved
