"""Budgets other than steps (``budget.samples`` / ``tokens`` / ``seconds``): the run ends at the first step where the
budget is reached, the counters survive a resume, and evaluations follow the budget's fractions."""

import json
from itertools import accumulate

import pytest

import neggrad.trainer.loop
from neggrad.config import ConfigError, build_config
from neggrad.trainer.loop import train
from neggrad.trainer.metrics import read_metrics
from tests.test_train import _untimed, crash_after_step, tiny

PER_STEP = 16  # TINY: 4 prompts x 4 completions per generation round


def _lines(run_dir):
    return read_metrics(run_dir / "metrics.jsonl")


def _ends_within_one_step(lines, key, limit):
    """The last step reached ``limit`` of ``key`` and the one before had not: the run stopped at the first step."""
    spent = [line[key] for line in lines]
    assert spent[-1] >= limit
    assert len(spent) == 1 or spent[-2] < limit
    return spent


def test_a_samples_budget_ends_the_run_at_the_first_step_that_reaches_it(tmp_path):
    summary = train(tiny("max_steps=10", "budget.samples=40"), tmp_path)
    lines = _lines(tmp_path)
    assert _ends_within_one_step(lines, "budget/samples", 40) == [16, 32, 48]
    assert [line["batch/generated"] for line in lines] == [PER_STEP] * 3
    assert summary["status"] == "completed" and summary["steps"] == 3 and summary["stopped_by"] == "budget"
    assert summary["budget"] == {"samples": 40}
    assert summary["spent"]["samples"] == 48 and summary["spent"]["tokens"] == lines[-1]["budget/tokens"]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_refill_rounds_count_every_generated_completion(tmp_path):
    """Dynamic sampling (the study's drop arm) generates more than it trains on: the budget counts all it generated."""
    cfg = tiny("max_steps=10", "budget.samples=100", "zero_variance.all_wrong=drop", "refill=true")
    summary = train(cfg, tmp_path)
    lines = _lines(tmp_path)
    generated = [line["batch/generated"] for line in lines]
    assert generated == [PER_STEP * line["groups/gen_rounds"] for line in lines]
    assert max(line["groups/gen_rounds"] for line in lines) > 1  # a random tiny model samples all-wrong groups
    assert _ends_within_one_step(lines, "budget/samples", 100) == list(accumulate(generated))
    assert summary["spent"]["samples"] == sum(generated) and summary["steps"] == len(lines) < 10


def test_a_tokens_budget_counts_completion_tokens(tmp_path):
    summary = train(tiny("max_steps=10", "budget.tokens=300"), tmp_path)
    lines = _lines(tmp_path)
    per_step = [line["batch/generated_tokens"] for line in lines]
    # one round, nothing filtered: the generated tokens are the trained completions' lengths
    assert per_step == [round(line["length/mean"] * line["batch/completions"]) for line in lines]
    assert _ends_within_one_step(lines, "budget/tokens", 300) == list(accumulate(per_step))
    assert summary["stopped_by"] == "budget" and summary["spent"]["tokens"] == sum(per_step)


def test_a_seconds_budget_reads_the_run_clock(tmp_path, monkeypatch):
    now = [1000.0]

    def clock():  # every reading of the run's clock is 7 s after the previous one
        now[0] += 7.0
        return now[0]

    monkeypatch.setattr(neggrad.trainer.loop, "clock", clock)
    summary = train(tiny("max_steps=10", "budget.seconds=40"), tmp_path)
    lines = _lines(tmp_path)
    spent = _ends_within_one_step(lines, "budget/seconds", 40)
    assert spent == [7.0, 21.0, 35.0, 49.0]  # start, then per step: the budget check and the step's end
    assert summary["steps"] == 4 and summary["stopped_by"] == "budget" and summary["spent"]["seconds"] == 49.0


def test_max_steps_still_caps_a_budget(tmp_path):
    summary = train(tiny("max_steps=2", "budget.samples=1000"), tmp_path)
    assert summary["steps"] == 2 and summary["stopped_by"] == "max_steps" and summary["spent"]["samples"] == 32


def test_evaluations_follow_the_budget_fractions(tmp_path):
    # every 40 samples: crossed at step 3 (48); step 5 (80) ends the run and is evaluated after the loop
    train(tiny("max_steps=10", "eval_steps=1", "budget.samples=80", "budget.eval_every=0.5"), tmp_path / "budget")
    assert [line["step"] for line in _lines(tmp_path / "budget") if "eval/accuracy" in line] == [3]
    # eval_every null: eval_steps stays the cadence
    train(tiny("max_steps=10", "eval_steps=2", "budget.samples=80", "budget.eval_every=null"), tmp_path / "steps")
    assert [line["step"] for line in _lines(tmp_path / "steps") if "eval/accuracy" in line] == [2, 4]


def test_counters_survive_a_crash_and_resume(tmp_path):
    cfg = tiny("max_steps=10", "budget.samples=70", "save_steps=2")
    full = train(cfg, tmp_path / "full")
    crash_after_step(cfg, tmp_path / "crashed", 3)
    resumed = train(cfg, tmp_path / "crashed", resume=True)  # from step 2's checkpoint
    assert full["steps"] == resumed["steps"] == 5
    assert full["spent"]["samples"] == resumed["spent"]["samples"] == 80
    assert full["spent"]["tokens"] == resumed["spent"]["tokens"]
    assert _untimed(_lines(tmp_path / "full")) == _untimed(_lines(tmp_path / "crashed"))


def test_resume_may_raise_the_budget(tmp_path):
    first = train(tiny("max_steps=10", "budget.samples=32"), tmp_path)
    assert first["steps"] == 2
    again = train(tiny("max_steps=10", "budget.samples=32"), tmp_path, resume=True)  # spent already: no step
    assert again["steps"] == 2 and again["spent"]["samples"] == 32
    longer = train(tiny("max_steps=10", "budget.samples=64"), tmp_path, resume=True)
    assert longer["steps"] == 4 and longer["spent"]["samples"] == 64 and longer["budget"] == {"samples": 64}
    history = [json.loads(line) for line in (tmp_path / "config_history.jsonl").read_text().splitlines()]
    assert history[-1]["changes"] == {"budget.samples": [32, 64]}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["budget.samples=100", "budget.seconds=60"],
            "budget sets samples and seconds: give at most one of budget.samples, budget.tokens, budget.seconds",
        ),
        (["budget.samples=0"], "budget.samples: Input should be greater than or equal to 1 (got 0)"),
        (["budget.seconds=-5"], "budget.seconds: Input should be greater than 0 (got -5)"),
        (["budget.eval_every=1.5"], "budget.eval_every: Input should be less than or equal to 1 (got 1.5)"),
        (["budget.steps=5"], "unknown config key 'budget.steps'"),
    ],
)
def test_budget_mistakes_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        build_config({}, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_every_arm_of_a_study_ends_within_one_step_of_the_same_samples(tmp_path):
    """The acceptance of issue 20: ``keep`` samples 16 completions a step, ``drop`` refills up to 4 rounds of 16;
    a samples budget ends each as soon as it reaches the budget, not after the same number of steps."""
    from neggrad.analysis.compare import plan_arms, run_compare
    from tests.test_train import TINY

    arms = {"keep": ["zero_variance.all_wrong=keep"], "drop": ["zero_variance.all_wrong=drop", "refill=true"]}
    runs = plan_arms({}, [*TINY, "max_steps=20", "budget.samples=96"], arms=arms, seeds=1, out=tmp_path)
    summaries = run_compare(runs)
    for run, summary in zip(runs, summaries, strict=True):
        lines = _lines(run.run_dir)
        _ends_within_one_step(lines, "budget/samples", 96)
        assert summary["spent"]["samples"] - 96 < lines[-1]["batch/generated"]
    keep, drop = summaries
    assert keep["steps"] == 6 and drop["steps"] < keep["steps"]  # drop spends its samples in fewer steps


def test_the_all_wrong_study_has_a_keep_arm_with_drops_samples_per_step(tmp_path):
    """results/study_all_wrong: drop took 2.31 rounds of 128 completions a step (296); keep_matched generates that
    in one round, and differs from keep only in the batch size."""
    from pathlib import Path

    from neggrad.analysis.compare import plan_arms, read_study
    from neggrad.config import config_changes, read_yaml

    config, _, overrides, arms = read_study(Path(__file__).parent.parent / "configs/studies/all_wrong.yaml")
    runs = {r.method: r.config for r in plan_arms(read_yaml(config), overrides, arms=arms, seeds=1, out=tmp_path)}
    keep, matched, drop = runs["keep"], runs["keep_matched"], runs["drop"]
    assert keep.generation_batch_size == drop.generation_batch_size == 128
    assert matched.generation_batch_size == 296 == round(2.31 * 128) and matched.num_prompts == 37
    assert set(config_changes(keep, matched)) == {
        "label",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
    }


def test_cli_progress_counts_the_budget(tmp_path, capsys):
    from neggrad.cli import main
    from tests.test_train import TINY

    (tmp_path / "defaults.yaml").write_text("seed: 0\n")
    argv = ["train", "--config", str(tmp_path / "defaults.yaml"), "--run-dir", str(tmp_path / "run"), *TINY]
    assert main([*argv, "max_steps=10", "budget.samples=40"]) == 0
    printed = " ".join(capsys.readouterr())
    # not a terminal: one line per step, with what was spent of the budget
    assert "step 1, samples 16/40" in printed and "step 3, samples 48/40" in printed and "step 4," not in printed


def test_the_dry_run_plan_shows_the_budget():
    from neggrad.analysis.plan import build_plan, format_plan

    plan = build_plan(tiny("budget.samples=12800", "max_steps=1000"))
    assert plan.schedule["budget"] == {"samples": 12800}
    assert "12,800 samples: ends at the first step that reaches it, at most the steps above" in format_plan(plan)
    assert "budget" not in build_plan(tiny()).schedule
