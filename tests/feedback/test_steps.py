"""Step splitting rules of docs/algorithms.md §10.1 and their config errors."""

import pytest

from neggrad.config import ConfigError, FeedbackConfig, build_config
from neggrad.feedback.steps import check_rule, split_response


def test_lines_strips_and_drops_empty_lines():
    assert split_response("  First, 2+2=4.\n\n\t Then 4*3=12 \nAnswer: 12\n") == [
        "First, 2+2=4.",
        "Then 4*3=12",
        "Answer: 12",
    ]


def test_regex_cuts_at_each_match():
    text = "Step one.\n\nStep two\nstill two.\n\n\nStep three."
    assert split_response(text, r"regex:\n\s*\n") == ["Step one.", "Step two\nstill two.", "Step three."]


def test_testbed_keeps_negative_numbers_whole():
    # ", " and ". " end a step; the minus of -33 follows "=" or ", " never a space inside a step
    assert split_response("12-45=-33, -33+7=-26. A: -26", "testbed") == ["12-45=-33", "-33+7=-26", "A: -26"]


@pytest.mark.parametrize("rule", ["lines", "testbed", "regex:;"])
def test_no_steps_is_an_empty_list(rule):
    assert split_response("  \n ", rule) == []


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("words", "must be one of lines, regex:<pattern>, testbed"),
        ("regex:", "needs a pattern"),
        ("regex:(", "not a valid"),
    ],
)
def test_bad_rules_are_refused(rule, message):
    with pytest.raises(ValueError, match=message):
        check_rule(rule)
    with pytest.raises(ConfigError, match=message):
        build_config({"feedback": {"step_split": rule}})


def test_step_split_follows_the_task_unless_set():
    # the oracle judge on the testbed needs no other key: the testbed's rule is the default there
    cfg = build_config({}, ["feedback.enabled=true"])
    assert cfg.feedback.judge == "oracle" and cfg.feedback.step_split == "testbed"
    # so do hints and LLDS's step gate, which cut with the same rule
    assert build_config({}, ["zero_variance.all_wrong=judge"]).feedback.step_split == "testbed"
    assert build_config({}, ["llds.enabled=true", "num_iterations=2"]).feedback.step_split == "testbed"
    # an explicit rule is kept, and refused where the oracle cannot read it
    assert build_config({}, ["feedback.step_split=regex:;"]).feedback.step_split == "regex:;"
    with pytest.raises(ConfigError, match="needs feedback.step_split: testbed"):
        build_config({}, ["feedback.enabled=true", "feedback.step_split=lines"])
    # prose (word problems, data sets): one step per line
    for task in ("word_problems", "data"):
        feedback = FeedbackConfig()
        feedback.resolve_step_split(task)
        assert feedback.step_split == "lines"


def test_feedback_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="feedback.local.name_or_path"):
        build_config({}, ["feedback.enabled=true", "feedback.judge=local"])
    with pytest.raises(ConfigError, match="feedback.http.base_url and feedback.http.model"):
        build_config({}, ["feedback.enabled=true", "feedback.judge=http"])
    with pytest.raises(ConfigError, match=r"prompt_template lacks \{steps\}"):
        build_config({}, ["feedback.prompt_template={problem} {reference}"])
    # a disabled section is not checked for its judge
    assert not build_config({}, ["feedback.judge=local"]).feedback.enabled


@pytest.mark.parametrize("method", ["grpo", "dr_grpo", "dapo", "rloo", "ngrpo"])
def test_feedback_composes_with_group_statistics_methods(method):
    cfg = build_config({}, [f"method={method}", "feedback.enabled=true", "feedback.step_split=testbed"])
    assert cfg.feedback.enabled


@pytest.mark.parametrize("method", ["pos_only", "psr", "nsr", "w_reinforce", "raft", "raft_pp", "reinforce_rej"])
def test_feedback_is_refused_where_it_cannot_act(method):
    with pytest.raises(ConfigError, match=f"feedback.enabled needs .* method '{method}'") as info:
        build_config({}, [f"method={method}", "feedback.enabled=true", "feedback.step_split=testbed"])
    assert "\n" not in str(info.value)


def test_token_step_ids_follow_the_split_rule_through_the_tokens():
    import torch

    from neggrad.feedback.steps import token_step_ids
    from neggrad.models.testbed.tokenizer import build_tokenizer

    tok = build_tokenizer()  # one character per token
    texts = ["37+45=82, 82-18=64. A: 64", "A: 7"]
    rows = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    width = max(map(len, rows)) + 2
    ids = torch.full((2, width), tok.pad_token_id)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    steps = token_step_ids(tok, ids, mask, "testbed")
    # "37+45=82" is step 0, ", " joins it, "82-18=64" step 1, ". " joins it, "A: 64" and EOS step 2
    expected = [0] * 10 + [1] * 10 + [2] * 6
    assert steps[0, : len(rows[0])].tolist() == expected
    assert steps[1, : len(rows[1])].tolist() == [0] * 5  # one step
    assert steps[:, len(rows[0]) :].eq(0).all() and steps[1, len(rows[1]) :].eq(0).all()  # padding
    by_line = token_step_ids(tok, ids, mask, "lines")  # no newline: one step
    assert by_line.eq(0).all()
