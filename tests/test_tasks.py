"""build_task: the testbed by default, MathTask when data.source is set, the verifier reward.kind names."""

import json
import textwrap

import pytest

from neggrad.config import build_config
from neggrad.tasks.build import ArithmeticTask, MathTask, build_task
from neggrad.tasks.data.sources import MathExample


def examples(n):
    return [MathExample(prompt=f"p{i}", answer=str(i), problem=f"p{i}") for i in range(n)]


def test_training_stream_visits_each_example_once_per_pass_in_a_fresh_order():
    task = MathTask(examples(5), [], verifier=None, seed=0)
    first = [task.train_example(i).problem for i in range(5)]
    second = [task.train_example(i).problem for i in range(5, 10)]
    assert sorted(first) == sorted(second) == [f"p{i}" for i in range(5)]
    assert first != second  # reshuffled each pass (seeded: fixed for this seed)
    assert task.train_example(7) == MathTask(examples(5), [], verifier=None, seed=0).train_example(7)  # resumable
    assert [task.train_example(i).problem for i in range(5)] == first  # going back re-derives the same order


def test_testbed_stays_the_default():
    task = build_task(build_config())
    assert isinstance(task, ArithmeticTask)
    assert task.score(["1+2=3. A: 3", "A: 4"], ["3", "3"]) == [True, False]
    assert task.format_scores(["A: 3", "no"]) == [1.0, 0.0]
    assert isinstance(build_task(build_config().task), ArithmeticTask)  # the old call still works


@pytest.fixture
def math_file(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"problem": f"What is {i} halves?", "answer": f"\\frac{{{i}}}{{2}}"} for i in range(1, 21)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def test_data_source_gives_a_math_task_verified_by_math_verify(math_file):
    pytest.importorskip("math_verify")
    config = build_config({"data": {"source": math_file}, "reward": {"workers": 1}})
    assert config.reward.kind == "math"  # auto resolved, and written so in config.yaml
    task = build_task(config)
    try:
        assert isinstance(task, MathTask) and len(task.eval_examples()) == 2
        example = task.train_example(0)
        assert example.prompt.endswith("put your final answer within \\boxed{}.")
        value = int(example.answer.split("{")[1].split("}")[0]) / 2  # \frac{i}{2} as a decimal
        assert task.score([f"\\boxed{{{value}}}", "The answer is 1000."], [example.answer] * 2) == [True, False]
        assert task.format_scores(["\\boxed{1}", "hmm"]) == [1.0, 0.0]
    finally:
        task.close()


def test_reward_by_import_path(math_file, tmp_path, monkeypatch):
    (tmp_path / "user_reward.py").write_text(
        textwrap.dedent(
            """
            def exact(completions, answers):
                return [c == a for c, a in zip(completions, answers)]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    task = build_task(build_config({"data": {"source": math_file}, "reward": {"kind": "user_reward:exact"}}))
    assert task.score(["7", "8"], ["7", "7"]) == [True, False]
    with pytest.raises(ValueError, match="cannot import module 'nope'"):
        build_task(build_config({"data": {"source": math_file}, "reward": {"kind": "nope:fn"}}))
