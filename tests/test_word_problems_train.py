"""Word problems end to end on a tiny random SmolLM2-shaped chat model (no download): training with the chat
template, the oracle judge and hints on word-problem steps, cross-group NTHR, and the LLD probe's cross-group mode.
"""

import json
import os

import pytest

from neggrad import cli
from neggrad.config import build_config
from neggrad.tasks.build import WordProblemTask, build_task
from neggrad.trainer.loop import train
from neggrad.trainer.metrics import read_metrics
from tests.tiny_chat import build_tiny_chat_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat"))


def overrides(folder, *extra):
    return [
        f"model.name_or_path={folder}",
        "task.name=word_problems",
        "task.eval_size=8",
        "data.chat_template=true",
        "data.system_prompt=Solve it.",
        "num_generations=4",
        "per_device_train_batch_size=8",
        "gradient_accumulation_steps=2",
        "max_completion_length=10",
        "learning_rate=1e-3",
        "eval_steps=0",
        "save_steps=0",
        "lld.probe_size=0",
        "num_samples_logged=2",
        *extra,
    ]


def test_prompts_go_through_the_chat_template(chat_dir):
    from neggrad.models.load import load_policy

    config = build_config({}, overrides(chat_dir))
    _, tokenizer, _ = load_policy(config)
    task = build_task(config, tokenizer=tokenizer)
    assert isinstance(task, WordProblemTask) and config.reward.kind == "integer"
    example = task.train_example(0)
    assert example.prompt.startswith("<|im_start|>system\nSolve it.<|im_end|>\n<|im_start|>user\n")
    instruction = "\nPlease reason step by step, and put your final answer within \\boxed{}."  # the default template
    assert example.prompt.endswith(example.problem + instruction + "<|im_end|>\n<|im_start|>assistant\n")
    assert {e.problem for e in task.eval_examples()}.isdisjoint(task.train_example(i).problem for i in range(200))
    assert task.score(["The answer is \\boxed{" + example.answer + "}."], [example.answer]) == [True]


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["method=nthr", "nthr.scope=batch", "reward.kind=tests.test_methods_e2e:parity"],
        ["feedback.enabled=true", "zero_variance.all_wrong=judge"],
        ["zero_variance.all_wrong=hint"],
    ],
    ids=["grpo", "nthr-batch", "judge", "hint"],
)
def test_training_runs_on_word_problems(tmp_path, chat_dir, extra):
    config = build_config({}, overrides(chat_dir, "max_steps=2", *extra))
    summary = train(config, tmp_path / "run")
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "time/step" in r]
    assert [r["step"] for r in rows] == [1, 2] and summary["steps"] == 2
    if "method=nthr" in extra:
        assert sum(r["nthr/groups"] for r in rows) > 0  # parity rewards make mixed groups
    if "feedback.enabled=true" in extra:
        assert sum(r["feedback/groups"] for r in rows) > 0  # a random model gets every word problem wrong
        assert sum(r["feedback/failed"] for r in rows) == 0  # the oracle judged every answer
    sample = json.loads((tmp_path / "run" / "samples" / "step-1.jsonl").read_text().splitlines()[0])
    assert "<|im_start|>assistant" in sample["prompt"]


def test_lld_probe_cross_group_mode(tmp_path, chat_dir, capsys):
    out, config = tmp_path / "probe", tmp_path / "empty.yaml"
    config.write_text("{}\n")
    args = ["lld-probe", "--config", str(config), "--out", str(out), "--prompts", "4", "--groups-per-update", "2"]
    extra = overrides(chat_dir, "reward.kind=tests.test_methods_e2e:parity", "task.eval_size=32")
    assert cli.main([*args, "--variants", "grpo,nthr,nthr_batch", *extra]) == 0
    result = json.loads((out / "results.json").read_text())
    per_group = result["per_group"]
    assert {len(v) for v in per_group.values()} == {4}  # every variant measured every group
    assert all(r["selected_frac"] is None for r in per_group["grpo"])
    assert all(r["selected_frac"] is not None for r in per_group["nthr_batch"])
    assert "2 groups per update" in (out / "report.md").read_text()
    # the same groups one per update: a group's correct answers no longer move with the other group's update
    alone = tmp_path / "alone"
    one = ["lld-probe", "--config", str(config), "--out", str(alone), "--prompts", "4", "--variants", "grpo"]
    assert cli.main([*one, *extra]) == 0
    single = [r["delta_seq"] for r in json.loads((alone / "results.json").read_text())["per_group"]["grpo"]]
    paired = [r["delta_seq"] for r in per_group["grpo"]]
    assert [r["p"] for r in per_group["grpo"]] == [
        r["p"] for r in json.loads((alone / "results.json").read_text())["per_group"]["grpo"]
    ]
    assert all(abs(a - b) > 1e-6 for a, b in zip(single, paired, strict=True))
    assert cli.main([*args, "--groups-per-update", "0", *extra]) == 2
    assert "--groups-per-update must be at least 1" in capsys.readouterr().err
