"""The training loop end to end on a tiny model: it learns and survives NaNs (resume, faults: test_faults.py)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from neggrad.config import build_config
from neggrad.trainer.checkpoint import list_checkpoints
from neggrad.trainer.loop import NonFiniteError, Trainer, train
from neggrad.trainer.metrics import read_metrics

TINY = [
    "model.testbed.hidden_size=32",
    "model.testbed.intermediate_size=64",
    "model.testbed.num_hidden_layers=1",
    "model.testbed.num_attention_heads=2",
    "model.testbed.num_key_value_heads=1",
    "sft.enabled=false",
    "task.min_operands=2",
    "task.max_operands=2",
    "task.digits=1",
    "task.eval_size=8",
    "num_generations=4",
    "per_device_train_batch_size=8",
    "gradient_accumulation_steps=2",  # 16 completions = 4 prompts x 4
    "max_completion_length=12",
    "learning_rate=1e-3",
    "max_steps=4",
    "eval_steps=2",
    "save_steps=2",
    "num_samples_logged=2",
]


def tiny(*overrides):
    return build_config({}, [*TINY, *overrides])


def crash_after_step(cfg, run_dir, step: int) -> None:
    """Train ``cfg`` in ``run_dir`` until an exception raised right after ``step`` ends the run (a crash)."""

    class Crash(Exception):
        pass

    def crash(event, data):
        if event == "step" and data["step"] == step:
            raise Crash

    with pytest.raises(Crash):
        train(cfg, run_dir, callback=crash)


def _weights(run_dir, step):
    return load_file(run_dir / "checkpoints" / f"step-{step}" / "model" / "model.safetensors")


def _untimed(lines):
    """Metrics lines without the wall-clock readings (``time/*``, ``budget/seconds``)."""
    return [{k: v for k, v in line.items() if not k.startswith("time/") and k != "budget/seconds"} for line in lines]


def test_a_run_writes_its_directory_and_moves_every_parameter(tmp_path):
    # NGRPO gives all-wrong groups (what a random tiny model samples) advantage -1/3, so there is a gradient
    cfg = tiny("method=ngrpo")
    trainer = Trainer(cfg, tmp_path)
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    summary = trainer.train()
    assert summary["status"] == "completed" and summary["steps"] == 4
    assert 0.0 <= summary["accuracy_before"] <= 1.0 and 0.0 <= summary["accuracy_after"] <= 1.0
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    lines = read_metrics(tmp_path / "metrics.jsonl")
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(line["loss/total"])) for line in lines)
    assert "eval/accuracy" in lines[1] and "eval/accuracy" not in lines[0]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [f"step-{i}.jsonl" for i in (1, 2, 3, 4)]
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-2", "step-4"]
    after = trainer.model.state_dict()
    unmoved = [k for k in before if torch.equal(before[k], after[k])]
    assert not unmoved, f"parameters that did not change: {unmoved}"


def test_a_fresh_run_refuses_to_overwrite_an_existing_one(tmp_path):
    train(tiny("max_steps=1"), tmp_path)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(tiny("max_steps=1"), tmp_path)


def test_non_finite_losses_skip_updates_then_stop_the_run(tmp_path, monkeypatch):
    import neggrad.trainer.update

    real = neggrad.trainer.update.token_logprobs

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)  # (log-probs, logsumexp) where the caller asks for NTHR's logsumexp too
        return (out[0] * float("nan"), *out[1:]) if isinstance(out, tuple) else out * float("nan")

    cfg = tiny("max_steps=6", "save_steps=1", "nonfinite.max_consecutive=2")
    trainer = Trainer(cfg, tmp_path)
    trainer.setup()

    def poison_from_step_2(event, data):
        if event == "step" and data["step"] == 1:
            monkeypatch.setattr(neggrad.trainer.update, "token_logprobs", poisoned)

    trainer.callback = poison_from_step_2
    with pytest.raises(NonFiniteError, match="2 consecutive steps had a non-finite loss"):
        trainer.train()
    lines = read_metrics(tmp_path / "metrics.jsonl")
    assert [line["update/skipped"] for line in lines] == [0, 1, 1]
    # the last good checkpoint is step 1 and nothing was written over it
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-1"]
    saved = _weights(tmp_path, 1)
    live = trainer.model.state_dict()
    for key, value in saved.items():
        assert torch.equal(value, live[key]), f"{key} changed by a skipped update"
