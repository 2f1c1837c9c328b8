"""Data parallelism (distributed.py): N processes with the same global batch train like one process.

The equality test launches ``neggrad train`` with ``torchrun`` twice on CPU (gloo): 2 processes x 2 groups
per process, and 1 process x 4 groups, the same 4 prompts x 4 completions per step. Both runs are under a
launcher, so each completion's sampling noise comes from (seed, prompt index, completion index) and both
see the same completions whatever process generates them.
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from neggrad.trainer.distributed import GroupSeededSampler, gumbel_noise, row_keys
from tests.test_train import TINY

ROOT = Path(__file__).resolve().parents[1]


def test_a_row_samples_the_same_token_in_any_batch():
    logits = torch.randn(6, 50)  # (B, V)
    keys = row_keys(0, [10, 11, 12], 2)  # prompts 10..12 of the stream, G = 2
    whole = GroupSeededSampler(keys, temperature=0.7, top_p=0.9)(None, logits).argmax(dim=1)
    part = GroupSeededSampler(keys[2:4], temperature=0.7, top_p=0.9)(None, logits[2:4]).argmax(dim=1)
    assert torch.equal(whole[2:4], part)


def test_seeded_sampling_follows_the_softmax():
    # Gumbel-max: argmax(log p + Gumbel) ~ p. 20,000 draws of p = softmax(0, 1, 2, -1) = (.087, .237, .644, .032):
    # the std of each frequency is <= sqrt(.25 / 20000) = .0035, so 0.015 is > 4 std
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]]).expand(20000, 4)
    keys = row_keys(3, list(range(5000)), 4)
    scores = GroupSeededSampler(keys, temperature=1.0, top_p=1.0)(None, logits)
    assert torch.isinf(scores).sum(dim=1).eq(3).all()  # exactly one token allowed per row
    freq = torch.bincount(scores.argmax(dim=1), minlength=4) / 20000
    torch.testing.assert_close(freq, torch.softmax(logits[0], dim=0), atol=0.015, rtol=0)
    noise = gumbel_noise(keys, 0, 4)
    assert abs(noise.mean().item() - 0.5772) < 0.03  # Euler-Mascheroni: the mean of a standard Gumbel


def _torchrun(nproc: int, run_dir: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])  # tests.test_methods_e2e:parity
    env["CUDA_VISIBLE_DEVICES"] = ""  # gloo on CPU everywhere: two processes must not share one GPU through NCCL
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    config = run_dir.parent / "base.yaml"
    config.write_text("method: grpo\n")  # defaults; the overrides set the rest
    command += ["--standalone", "-m", "neggrad.cli", "train", "--config", str(config), "--run-dir", str(run_dir)]
    command += overrides
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    pytest.importorskip("accelerate")  # the engine behind multi-process runs (distributed.py)
    common = [
        *TINY,
        "reward.kind=tests.test_methods_e2e:parity",  # mixed groups from a random model
        "loss_type=dapo",  # token-mean: the global token count is the denominator, and the loss is not ~0
        "max_steps=1",
        "eval_steps=0",
        "save_steps=0",
        "lld.probe_size=0",
        "per_device_train_batch_size=8",  # completions per micro-batch and process
    ]
    # per process: 8 x accumulation / G=4 prompts; global batch: 4 prompts in both runs
    two = _torchrun(2, tmp_path / "two", [*common, "gradient_accumulation_steps=1"])
    _check_exit(two, tmp_path / "two")
    one = _torchrun(1, tmp_path / "one", [*common, "gradient_accumulation_steps=2"])
    _check_exit(one, tmp_path / "one")

    lines = {name: (tmp_path / name / "metrics.jsonl").read_text().splitlines() for name in ("one", "two")}
    assert len(lines["two"]) == 1, "only rank 0 writes metrics.jsonl"
    m1, m2 = (json.loads(lines[name][0]) for name in ("one", "two"))
    assert m1["batch/completions"] == m2["batch/completions"] == 16
    assert m1["accuracy"] == m2["accuracy"] and m1["reward/std"] == m2["reward/std"]  # the same completions
    assert 0.0 < m1["groups/mixed_frac"]
    # Tolerance: the two runs add the same numbers in another order (1 process accumulates two micro-batches,
    # 2 processes all-reduce two gradients) and pad prompts to other widths, so float32 results may differ by
    # a few ulps; 1e-5 relative on loss and gradient norm and 1e-6 absolute on weights (lr 1e-3, one Adam
    # step moves a weight by <= ~1e-3) leave room for that and catch any wrong denominator or DDP factor
    # (a factor 2 on the gradient shows in grad/norm). Measured on 2 CPU cores: identical to the last bit.
    assert abs(m1["loss/total"]) > 1e-3
    assert m2["loss/total"] == pytest.approx(m1["loss/total"], rel=1e-5)
    assert m2["grad/norm"] == pytest.approx(m1["grad/norm"], rel=1e-5)
    w1, w2 = (load_file(tmp_path / name / "checkpoints/step-1/model/model.safetensors") for name in ("one", "two"))
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], atol=1e-6, rtol=0)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 1


# ---------------------------------------------------------------------- FSDP2 (configs/accelerate/fsdp2_cpu.yaml)
ACCELERATE_CONFIGS = ROOT / "configs" / "accelerate"
FSDP_RUN = [
    *TINY,
    "reward.kind=tests.test_methods_e2e:parity",  # mixed groups from a random model
    "loss_type=dapo",
    "max_steps=3",
    "save_steps=1",
    "eval_steps=2",  # an evaluation inside the run (greedy generation under FSDP, split over processes)
    "lld.probe_size=4",  # the LLD probe's no-grad pass
    "lld.probe_every=2",
    "steps_per_generation=2",  # an old-policy no-grad pass and 2 optimizer steps per batch
    "per_device_train_batch_size=4",
    "gradient_accumulation_steps=1",  # per process: 4 x 1 x 2 = 8 completions, 2 prompts
]


def _launch(launcher: list[str], run_dir: Path, overrides: list[str], *extra: str) -> subprocess.CompletedProcess:
    """``tests.dist_train`` (neggrad.trainer.loop.train, optionally interrupted) under ``launcher`` on CPU (gloo)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env["CUDA_VISIBLE_DEVICES"] = ""
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    for key in [k for k in env if k.startswith(("ACCELERATE_", "FSDP_"))]:
        env.pop(key)
    command = [sys.executable, "-m", *launcher, "-m", "tests.dist_train", str(run_dir), *extra, *overrides]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    _check_exit(done, run_dir, extra)
    return done


def _check_exit(done: subprocess.CompletedProcess, run_dir: Path, extra: tuple[str, ...] = ()) -> None:
    """The launch succeeded. Known, not fixed: on a loaded CPU a gloo process can abort while the interpreter tears
    down, after the run ended and wrote everything (seen in CI after a DDP and an FSDP2 run). The callers still
    compare every metric and weight, so only that exit is excused, and only when rank 0's summary is there."""
    if done.returncode != 0 and TEARDOWN_ABORT in done.stderr and _ended_as_asked(run_dir, extra):
        warnings.warn(f"{run_dir.name}: a process aborted at exit after the run ended: {TEARDOWN_ABORT}", stacklevel=3)
        return
    assert done.returncode == 0, done.stderr[-4000:]


TEARDOWN_ABORT = "terminate called without an active exception"


def _ended_as_asked(run_dir: Path, extra: tuple[str, ...]) -> bool:
    """Whether rank 0 wrote the summary of a run that ended as the launch asked (interrupted with --stop-at)."""
    summary = run_dir / "summary.json"
    want = "interrupted" if "--stop-at" in extra else "completed"
    return summary.exists() and json.loads(summary.read_text()).get("status") == want


def _fsdp(run_dir: Path, *extra: str) -> None:
    launcher = ["accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIGS / "fsdp2_cpu.yaml")]
    _launch(launcher, run_dir, FSDP_RUN, *extra)


def _metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock readings."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if not k.startswith("time/") and k != "budget/seconds"} for line in lines]


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> Path:
    """One uninterrupted 3-step FSDP2 run with 2 processes."""
    pytest.importorskip("accelerate")
    run_dir = tmp_path_factory.mktemp("fsdp") / "full"
    _fsdp(run_dir)
    return run_dir


@pytest.mark.slow
def test_fsdp_two_processes_resume_exactly(fsdp_run, tmp_path):
    from neggrad.trainer.checkpoint import verify_checkpoint

    ckpt = fsdp_run / "checkpoints" / "step-3"
    verify_checkpoint(ckpt)  # hashes, and nothing that could run code: no pickle anywhere, shards included
    assert sorted(p.name for p in (ckpt / "sharded").iterdir()) == [
        f"rank-{r}-of-2.{ext}" for r in (0, 1) for ext in ("json", "safetensors")
    ]
    shard = load_file(ckpt / "sharded" / "rank-1-of-2.safetensors")
    full = load_file(ckpt / "model" / "model.safetensors")
    assert sum(t.numel() for t in shard.values()) < 3 * sum(t.numel() for t in full.values())  # 1/2 of weights + Adam

    part = tmp_path / "part"
    _fsdp(part, "--stop-at", "2")  # SIGINT to both processes after step 2: they save step-2 and stop
    assert json.loads((part / "summary.json").read_text())["status"] == "interrupted"
    _fsdp(part, "--resume")
    assert _metrics(part) == _metrics(fsdp_run)
    assert len(_metrics(part)) == 3 and any("eval/accuracy" in line for line in _metrics(part))
    resumed = load_file(part / "checkpoints" / "step-3" / "model" / "model.safetensors")
    for key, value in full.items():
        assert torch.equal(resumed[key], value), key
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (fsdp_run, part))
    assert s1["accuracy_after"] == s2["accuracy_after"] and s2["status"] == "completed"


@pytest.mark.slow
def test_fsdp_trains_like_ddp(fsdp_run, tmp_path):
    ddp = tmp_path / "ddp"
    _launch(["torch.distributed.run", "--standalone", "--nproc_per_node", "2"], ddp, FSDP_RUN)
    m_fsdp, m_ddp = _metrics(fsdp_run), _metrics(ddp)
    assert len(m_fsdp) == len(m_ddp) == 3
    for a, b in zip(m_fsdp, m_ddp, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)
    w_fsdp, w_ddp = (load_file(d / "checkpoints" / "step-3" / "model" / "model.safetensors") for d in (fsdp_run, ddp))
    for key in w_ddp:
        torch.testing.assert_close(w_fsdp[key], w_ddp[key], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_a_sharded_checkpoint_refuses_to_resume_without_fsdp(fsdp_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(fsdp_run, run)
    env_launcher = ["torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    with pytest.raises(AssertionError, match="holds FSDP shards of 2 processes and this run has no FSDP"):
        _launch(env_launcher, run, FSDP_RUN, "--resume")
