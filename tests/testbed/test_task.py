import pytest

from neggrad.config import TaskConfig
from neggrad.tasks.testbed import (
    Problem,
    eval_problems,
    max_solution_chars,
    parse_prompt,
    sft_check_problems,
    sft_problem,
    solve,
    split_steps,
    train_problem,
)


def test_worked_example():
    # 37+45 = 82, then 82-18 = 64: two equations, then the answer line
    problem = solve([37, 45, 18], ["+", "-"])
    assert problem == Problem(
        prompt="Q: 37+45-18=",
        answer="64",
        solution="37+45=82, 82-18=64. A: 64",
        steps=("37+45=82", "82-18=64", "A: 64"),
    )


def test_negative_intermediate_is_written_with_its_sign():
    # 12-45 = -33, then -33+7 = -26
    assert solve([12, 45, 7], ["-", "+"]).solution == "12-45=-33, -33+7=-26. A: -26"


def test_operators_apply_left_to_right_without_precedence():
    # (2+3)*4 = 20, not 2+(3*4) = 14
    assert solve([2, 3, 4], ["+", "*"]).steps == ("2+3=5", "5*4=20", "A: 20")


def test_split_steps_cuts_at_comma_and_full_stop():
    assert split_steps("12-45=-33, -33+7=-26. A: -26") == ["12-45=-33", "-33+7=-26", "A: -26"]
    assert split_steps("  37+45=82 ") == ["37+45=82"]  # no boundary: one step
    assert split_steps("") == []


def test_parse_prompt_inverts_solve():
    assert parse_prompt("Q: 37+45-18=") == ([37, 45, 18], ["+", "-"])
    assert parse_prompt("Q: 0*9+100=") == ([0, 9, 100], ["*", "+"])
    with pytest.raises(ValueError, match="not an arithmetic prompt"):
        parse_prompt("Q: 37+=")


def test_streams_are_deterministic_and_follow_the_config():
    cfg = TaskConfig(min_operands=2, max_operands=4, digits=2, operators="+*")
    assert train_problem(cfg, 7) == train_problem(cfg, 7)
    assert train_problem(cfg, 7) != train_problem(cfg.model_copy(update={"seed": 1}), 7)
    problems = [train_problem(cfg, i) for i in range(500)]
    counts = {len(parse_prompt(p.prompt)[0]) for p in problems}
    assert counts == {2, 3, 4}
    for problem in problems:
        operands, operators = parse_prompt(problem.prompt)
        assert set(operators) <= {"+", "*"}
        assert all(0 <= x <= 99 for x in operands)
        assert solve(operands, operators) == problem
        assert split_steps(problem.solution) == list(problem.steps)


def test_held_out_prompts_never_reach_training():
    # 1-digit a+b: only 100 prompts, so 2000 training draws visit nearly all of the training split,
    # and a leak of the ~6 eval or ~6 check prompts would show.
    cfg = TaskConfig(min_operands=2, max_operands=2, digits=1, operators="+", eval_size=3)
    held_out = {p.prompt for p in eval_problems(cfg)} | {p.prompt for p in sft_check_problems(cfg, 3)}
    seen = {train_problem(cfg, i).prompt for i in range(2000)} | {sft_problem(cfg, i).prompt for i in range(2000)}
    assert len(seen) > 70
    assert not held_out & seen


def test_eval_and_check_sets_are_distinct_and_disjoint():
    cfg = TaskConfig(min_operands=3, max_operands=3, digits=2)
    evals = eval_problems(cfg)
    checks = sft_check_problems(cfg, 128)
    assert len(evals) == cfg.eval_size == len({p.prompt for p in evals})
    assert len({p.prompt for p in checks}) == 128
    assert not {p.prompt for p in evals} & {p.prompt for p in checks}
    assert eval_problems(cfg) == evals


def test_too_small_a_task_for_the_eval_set_says_what_to_change():
    cfg = TaskConfig(min_operands=2, max_operands=2, digits=1, operators="+", eval_size=50)
    with pytest.raises(ValueError, match="lower the set size"):
        eval_problems(cfg)


@pytest.mark.parametrize(
    "cfg",
    [
        TaskConfig(),
        TaskConfig(min_operands=3, max_operands=3, digits=2),
        TaskConfig(min_operands=4, max_operands=4, digits=2),
        TaskConfig(operators="+-*", digits=1, min_operands=2, max_operands=5),
    ],
)
def test_max_solution_chars_bounds_every_solution(cfg):
    assert max(len(train_problem(cfg, i).solution) for i in range(3000)) <= max_solution_chars(cfg)


def test_max_solution_chars_by_hand():
    # 3 operands, 2 digits, +-: widest values -99 (3 chars), -198 (4), -297 (4);
    # equations "-99+99=-198" (11) and "-198+99=-297" (12), ", " (2), ". A: " (5), "-297" (4) -> 34
    assert max_solution_chars(TaskConfig(min_operands=3, max_operands=3, digits=2, operators="+-")) == 34
