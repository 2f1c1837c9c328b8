"""The strict verdict parser and the prompt template of docs/algorithms.md §10.1."""

import pytest

from neggrad.feedback.judge import DEFAULT_TEMPLATE, JudgeRequest, parse_verdict, render_prompt


@pytest.mark.parametrize(
    ("reply", "kind", "step"),
    [
        ("Step 2 adds 45 wrongly.\nFIRST_WRONG_STEP: 2", "first_wrong", 2),
        ("FIRST_WRONG_STEP: NONE\n\n", "none_wrong", None),
        ("FIRST_WRONG_STEP: 1\nOn reflection:\nFIRST_WRONG_STEP: 3", "first_wrong", 3),  # the last one counts
        ("**FIRST_WRONG_STEP: 2**", "first_wrong", 2),
        ("  FIRST_WRONG_STEP:3  ", "first_wrong", 3),
    ],
)
def test_valid_replies(reply, kind, step):
    verdict = parse_verdict(reply, 3)
    assert (verdict.kind, verdict.step, verdict.num_steps) == (kind, step, 3)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", "empty reply"),
        ("FIRST_WRONG_STEP: 2\nI hope that helps!", "does not end with a FIRST_WRONG_STEP line"),
        ("The first wrong step is 2.", "does not end with"),
        ("FIRST_WRONG_STEP: two", "does not end with"),
        ("FIRST_WRONG_STEP: 2, 3", "does not end with"),
        ("FIRST_WRONG_STEP: 0", "outside 1..3"),
        ("FIRST_WRONG_STEP: 4", "outside 1..3"),
        ("\x00\ufffd garbage \u202e", "does not end with"),
    ],
)
def test_anything_else_is_a_failure_not_an_exception(reply, reason):
    verdict = parse_verdict(reply, 3)
    assert verdict.failed and reason in verdict.reason


def test_prompt_numbers_the_steps_and_leaves_other_braces_alone():
    request = JudgeRequest("Let {x} = 2; find x+1.", "x+1 = 3", ("x = 2", "x+1 = 4"))
    prompt = render_prompt(request)
    assert "Let {x} = 2; find x+1." in prompt and "x+1 = 3" in prompt
    assert "Step 1: x = 2\nStep 2: x+1 = 4" in prompt
    assert prompt.rstrip().endswith("FIRST_WRONG_STEP: NONE")
    assert all(p not in prompt for p in ("{problem}", "{reference}", "{steps}"))
    assert render_prompt(request, "{steps}|{problem}") == "Step 1: x = 2\nStep 2: x+1 = 4|Let {x} = 2; find x+1."
    assert "{steps}" in DEFAULT_TEMPLATE
