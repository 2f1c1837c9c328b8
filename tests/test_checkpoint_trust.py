"""Nothing in a run directory runs code: a crafted checkpoint is refused before anything in it is unpickled."""

import hashlib
import json
import random
import shutil

import numpy as np
import pytest
import torch

import neggrad.trainer.checkpoint as ckpt
from neggrad.cli import main
from neggrad.config import build_config
from neggrad.trainer.checkpoint import CheckpointError, list_checkpoints
from neggrad.trainer.loop import train

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
    "max_completion_length=8",
    "eval_steps=2",
    "save_steps=2",
]


class _Payload:
    """Unpickling this creates ``marker``: the stand-in for any code a hostile pickle could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _reseal(checkpoint):
    """Rewrite the manifest with the hashes of what the folder now holds, as anyone crafting a checkpoint can."""
    files = sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != "manifest.json")
    digests = {str(p.relative_to(checkpoint)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    (checkpoint / "manifest.json").write_text(json.dumps({"step": 2, "files": digests}))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished two-step run, copied by each test that alters it."""
    run_dir = tmp_path_factory.mktemp("run")
    train(build_config({}, [*TINY, "max_steps=2"]), run_dir)
    return run_dir


def _copy(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run", tmp_path / "run" / "checkpoints" / "step-2"


def test_a_crafted_pickle_trainer_state_is_refused_and_runs_nothing(run, tmp_path, capsys):
    run_dir, checkpoint = _copy(run, tmp_path)
    marker = tmp_path / "pwned"
    for old in checkpoint.glob("trainer_state*"):
        old.unlink()
    torch.save({"trainer": {"step": 2}, "payload": _Payload(marker)}, checkpoint / "trainer_state.pt")
    _reseal(checkpoint)
    with pytest.raises(CheckpointError, match=r"step-2/trainer_state.pt is a pickle .* --trust-checkpoint"):
        train(build_config({}, [*TINY, "max_steps=4"]), run_dir, resume=True)
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "trainer_state.pt" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_a_pickle_in_the_model_folder_is_refused_by_eval_and_resume(run, tmp_path, capsys):
    run_dir, checkpoint = _copy(run, tmp_path)
    marker = tmp_path / "pwned"
    (checkpoint / "model" / "model.safetensors").unlink()
    torch.save({"payload": _Payload(marker)}, checkpoint / "model" / "pytorch_model.bin")
    _reseal(checkpoint)
    assert main(["eval", str(run_dir)]) == 2
    assert "model/pytorch_model.bin" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="model/pytorch_model.bin"):
        train(build_config({}, [*TINY, "max_steps=4"]), run_dir, resume=True)
    assert not marker.exists()


def test_model_code_in_a_checkpoint_needs_trust(tmp_path):
    checkpoint = tmp_path / "step-2"
    (checkpoint / "model").mkdir(parents=True)
    (checkpoint / "model" / "config.json").write_text("{}")
    (checkpoint / "model" / "modeling_evil.py").write_text("open('pwned', 'w')\n")
    _reseal(checkpoint)
    with pytest.raises(CheckpointError, match=r"model/modeling_evil.py, Python code .* --trust-checkpoint"):
        ckpt.verify_checkpoint(checkpoint)
    ckpt.verify_checkpoint(checkpoint, trust=True)  # the user's own trust_remote_code run


def test_an_old_pickle_checkpoint_resumes_only_when_trusted(run, tmp_path):
    run_dir, checkpoint = _copy(run, tmp_path)
    state = ckpt.read_trainer_state(checkpoint)
    for new in checkpoint.glob("trainer_state*"):
        new.unlink()
    torch.save(state, checkpoint / "trainer_state.pt")  # what neggrad saved before
    _reseal(checkpoint)
    cfg = build_config({}, [*TINY, "max_steps=4"])
    with pytest.raises(CheckpointError, match="resume with --trust-checkpoint"):
        train(cfg, run_dir, resume=True)
    summary = train(cfg, run_dir, resume=True, trust_checkpoint=True)
    assert summary["steps"] == 4
    latest = list_checkpoints(run_dir / "checkpoints")[-1]
    assert latest.name == "step-4" and not (latest / "trainer_state.pt").exists()
    assert ckpt.read_trainer_state(latest)["trainer"]["step"] == 4  # saved in the new format, readable untrusted


def test_trainer_state_round_trips_bit_for_bit_without_pickle(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    random.random(), np.random.normal(), torch.rand(1)  # numpy now holds a cached Gaussian
    state = {
        "optimizer": optimizer.state_dict(),
        "rng": ckpt.rng_state(),
        "trainer": {"step": 3, "elapsed_s": 0.1 + 0.2, "best_accuracy": None, "nan": float("nan")},
        "rng_ranks": [ckpt.rng_state(), ckpt.rng_state()],
    }
    ckpt.write_trainer_state(state, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trainer_state.json", "trainer_state.safetensors"]
    back = ckpt.read_trainer_state(tmp_path)

    def same(a, b):
        if isinstance(a, torch.Tensor):
            return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        if isinstance(a, np.ndarray):
            return a.dtype == b.dtype and np.array_equal(a, b)
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        if isinstance(a, float) and a != a:
            return b != b
        return type(a) is type(b) and a == b

    assert same(state, back)
    random.setstate(back["rng"]["python"])  # the decoded states are accepted as they are
    np.random.set_state(back["rng"]["numpy"])
    torch.set_rng_state(back["rng"]["torch"])
    optimizer.load_state_dict(back["optimizer"])
