"""The command line as a new user meets it: one clear line and exit 2 for mistakes, a working demo."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from neggrad.cli import main
from tests.test_train import TINY

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def neggrad(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "neggrad.cli", *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--config", "missing.yaml"], "config file not found: missing.yaml"),
        (["train", "--config", "testbed/demo", "lerning_rate=1"], "did you mean 'learning_rate'"),
        (["train", "--config", "testbed/demo", "learning_rate=-1"], "learning_rate: Input should be greater than 0"),
        (["train", "--config", "testbed/demo", "num_generations=1"], "num_generations: Input should be greater"),
        (["train", "--config", "testbed/demo", "num_generations=3"], "is not divisible by num_generations = 3"),
        (["train", "--config", "testbed/demo", "method=magic"], "unknown method 'magic'"),
        (["train", "--resume", "nowhere"], "cannot resume nowhere"),
        (["train"], "needs --config"),
        (["eval", "nowhere"], "holds no config.yaml"),
        (["eval", "nowhere", "max_steps=3"], "holds no config.yaml"),  # overrides follow the run, positionally
        (["eval", "--config", "testbed/demo", "lerning_rate=1"], "did you mean 'learning_rate'"),  # as train's
        (
            [
                "train",
                "--config",
                "testbed/demo",
                "task.digits=1",
                "task.min_operands=2",
                "task.max_operands=2",
                "task.eval_size=100",
            ],
            "the task has only about",
        ),
    ],
)
def test_user_mistakes_exit_2_with_one_line(args, message, tmp_path):
    result = neggrad(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bad_yaml_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_generations: [\n")
    assert main(["config", "--config", str(bad)]) == 2
    assert "is not valid YAML" in capsys.readouterr().err


def test_methods_lists_every_preset(capsys):
    from neggrad.config.presets import PRESETS

    assert main(["methods"]) == 0
    shown = capsys.readouterr().out
    assert all(name in shown for name in PRESETS)


def test_demo_smoke_trains_and_reports(tmp_path):
    """The demo command end to end, shrunk: SFT warm start, GRPO steps, eval, table, run directory."""
    run = tmp_path / "demo"
    tiny = [o for o in TINY if not o.startswith(("sft.", "max_steps", "eval_steps", "save_steps"))]
    result = neggrad(
        "demo",
        "--run-dir",
        str(run),
        *tiny,
        "max_steps=3",
        "sft.max_steps=30",
        "sft.eval_every=10",
        "sft.eval_size=8",
        "task.digits=2",
        f"sft.cache_dir={tmp_path / 'cache'}",
        "method=ngrpo",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "before RL" in result.stdout and "after 3 ngrpo steps" in result.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["policy/sft_steps"] >= 1
    # the thread set-up is recorded: the command's own OpenMP choice unless the environment made it
    chosen = os.environ.get("OMP_WAIT_POLICY", None)
    assert summary["runtime"]["torch_threads"] >= 1
    assert summary["runtime"]["omp_wait_policy"] in ({chosen} if chosen else {"PASSIVE", "libgomp default"})
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(x["loss/total"])) for x in lines)
    start = load_file(next((tmp_path / "cache").glob("testbed-*")) / "model.safetensors")
    end = load_file(run / "checkpoints" / "step-3" / "model" / "model.safetensors")
    assert any(not torch.equal(start[k], end[k]) for k in start), "GRPO steps did not move the weights"
    # a second run of the same warm start comes from the cache
    again = neggrad("eval", str(run), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["eval/accuracy"] == summary["accuracy_after"]
