"""Faults a long run meets, in one place: nothing is lost, and the user is told what happened in one line.

- a kill, Ctrl-C or crash mid-run: resume continues bit for bit (``test_resume_after_*``);
- a damaged or partial checkpoint: named and refused, never loaded;
- a full disk (or another write error) while saving: the partial folder is removed, the intact checkpoint named,
  exit code 3; ``--resume`` removes stale temporary folders first; a warning before a save that will not fit;
- a torn last line in ``metrics.jsonl`` or a samples file: dropped with one warning (and cut on resume); a bad
  line in the middle is an error naming the file and line;
- continuing a run with a new budget (``--resume RUN max_steps=N``): only keys that cannot change what was
  trained may change; each change is recorded in ``config_history.jsonl``; the learning-rate schedule is that of
  the new budget from the resume point on;
- out of GPU memory in generation or the update: one line naming the settings to lower, nothing half-written
  saved, exit code 4.
"""

import errno
import json
import logging
import os
import signal

import pytest
import torch
import transformers

from neggrad.cli import main
from neggrad.trainer.checkpoint import CheckpointError, CheckpointWriteError, list_checkpoints
from neggrad.trainer.loop import Trainer, lr_lambda, train
from neggrad.trainer.metrics import RunFileError, read_jsonl, read_metrics
from tests.test_train import TINY, _untimed, _weights, crash_after_step, tiny


def _full_disk(after_bytes: int = 100):
    """A ``save_pretrained`` that writes part of a file, then fails as a full disk does."""

    def save_pretrained(self, folder, *args, **kwargs):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "model.safetensors"), "wb") as fh:
            fh.write(b"\0" * after_bytes)
        raise OSError(errno.ENOSPC, "No space left on device")

    return save_pretrained


def _defaults(tmp_path) -> str:
    """A config file of the built-in defaults (the tests' TINY overrides do the rest)."""
    path = tmp_path / "defaults.yaml"
    path.write_text("seed: 0\n")
    return str(path)


# ---------------------------------------------------------------- kill, Ctrl-C, crash, damaged checkpoints
def test_resume_after_interrupt_matches_an_uninterrupted_run(tmp_path):
    cfg = tiny()
    full = train(cfg, tmp_path / "full")

    def interrupt_at_2(event, data):
        if event == "step" and data["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the real Ctrl-C path: finish the step, save, stop

    part = train(cfg, tmp_path / "part", callback=interrupt_at_2)
    assert part["status"] == "interrupted" and part["steps"] == 2
    resumed = train(cfg, tmp_path / "part", resume=True)
    assert resumed["steps"] == 4
    for key in _weights(tmp_path / "full", 4):
        assert torch.equal(_weights(tmp_path / "full", 4)[key], _weights(tmp_path / "part", 4)[key]), key
    assert _untimed(read_metrics(tmp_path / "full" / "metrics.jsonl")) == _untimed(
        read_metrics(tmp_path / "part" / "metrics.jsonl")
    )
    assert full["accuracy_after"] == resumed["accuracy_after"]
    assert full["accuracy_before"] == resumed["accuracy_before"]


def test_resume_after_a_crash_drops_metrics_past_the_checkpoint(tmp_path):
    cfg = tiny()
    train(cfg, tmp_path / "full")
    crash_after_step(cfg, tmp_path / "crashed", 3)
    assert len(read_metrics(tmp_path / "crashed" / "metrics.jsonl")) == 3  # step 3 logged, not checkpointed
    train(cfg, tmp_path / "crashed", resume=True)
    assert _untimed(read_metrics(tmp_path / "full" / "metrics.jsonl")) == _untimed(
        read_metrics(tmp_path / "crashed" / "metrics.jsonl")
    )
    for key, value in _weights(tmp_path / "full", 4).items():
        assert torch.equal(value, _weights(tmp_path / "crashed", 4)[key]), key


def test_damaged_or_partial_checkpoints_are_named_and_refused(tmp_path):
    cfg = tiny("max_steps=2")
    train(cfg, tmp_path)
    ckpt = tmp_path / "checkpoints" / "step-2"
    weights = ckpt / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"step-2 is damaged: model/model.safetensors"):
        train(cfg, tmp_path, resume=True)
    (ckpt / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"step-2 is partial: it has no manifest.json"):
        train(cfg, tmp_path, resume=True)


def test_an_interrupted_save_leaves_no_checkpoint(tmp_path):
    (tmp_path / "checkpoints" / ".tmp-step-6").mkdir(parents=True)
    assert list_checkpoints(tmp_path / "checkpoints") == []


# ---------------------------------------------------------------- full disk while saving
def test_a_full_disk_while_saving_removes_the_partial_folder_and_names_the_intact_checkpoint(tmp_path):
    cfg = tiny("max_steps=3", "save_steps=1")
    trainer = Trainer(cfg, tmp_path)
    trainer.setup()

    def fill_the_disk_at_2(event, data):
        if event == "step" and data["step"] == 2:
            trainer.model.save_pretrained = _full_disk().__get__(trainer.model)

    trainer.callback = fill_the_disk_at_2
    with pytest.raises(CheckpointWriteError) as caught:
        trainer.train()
    message = str(caught.value)
    assert "could not save checkpoint step-2" in message and "the disk is full" in message
    assert "it needs about" in message  # the size of step-1
    assert "step-1 is intact" in message and f"neggrad train --resume {tmp_path}" in message
    assert "\n" not in message
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-1"]  # no .tmp-step-2 left


def test_resume_removes_stale_temporary_folders_first(tmp_path):
    cfg = tiny("max_steps=2", "save_steps=1")

    def crash_at_2(event, data):
        if event == "step" and data["step"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path, callback=crash_at_2)
    stale = tmp_path / "checkpoints" / ".tmp-step-7"  # what a kill -9 in the middle of a save leaves
    (stale / "model").mkdir(parents=True)
    (stale / "model" / "model.safetensors").write_bytes(b"\0" * 4096)
    summary = train(cfg, tmp_path, resume=True)
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-1", "step-2"]


def test_a_save_warns_when_free_space_is_below_the_last_checkpoint(tmp_path, monkeypatch, caplog):
    import neggrad.trainer.checkpoint

    real = neggrad.trainer.checkpoint.shutil.disk_usage
    monkeypatch.setattr(neggrad.trainer.checkpoint.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with caplog.at_level(logging.WARNING, logger="neggrad.trainer.checkpoint"):
        train(tiny("max_steps=2", "save_steps=1", "eval_steps=0"), tmp_path)
    warnings = [r.getMessage() for r in caplog.records if "free in" in r.getMessage()]
    assert len(warnings) == 2  # before step-2 and before the final save (step-1 had nothing to compare with)
    assert "the last checkpoint (step-1) took" in warnings[0] and "1000 B free" in warnings[0]


def test_cli_a_full_disk_is_one_line_and_exit_3(tmp_path, monkeypatch, capsys):
    calls = []
    real = transformers.PreTrainedModel.save_pretrained

    def full_on_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            return _full_disk()(self, *args, **kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", full_on_third)
    run = tmp_path / "run"
    code = main(
        ["train", "--config", _defaults(tmp_path), "--run-dir", str(run), *TINY, "max_steps=3", "save_steps=1"]
    )
    err = capsys.readouterr().err
    assert code == 3, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("neggrad:")]
    assert len(lines) == 1 and lines[0].startswith("neggrad: stopped: could not save checkpoint step-3"), err
    assert "step-2 is intact" in lines[0]
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-1", "step-2"]
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_cli_a_full_disk_while_logging_is_one_line_and_exit_3(tmp_path, monkeypatch, capsys):
    import neggrad.trainer.metrics

    def full(self, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(neggrad.trainer.metrics.MetricsWriter, "write", full)
    run = tmp_path / "run"
    code = main(["train", "--config", _defaults(tmp_path), "--run-dir", str(run), *TINY, "max_steps=2"])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("neggrad:")]
    assert lines == [
        f"neggrad: stopped: the disk is full writing {run / 'metrics.jsonl'}; free space, then continue a run from "
        "its last checkpoint with: neggrad train --resume RUN_DIR"
    ]


# ---------------------------------------------------------------- torn and foreign lines in run files
def _tear(path, tail='{"step": 3, "loss/tot'):
    with path.open("a") as fh:
        fh.write(tail)


def test_read_jsonl_drops_a_torn_last_line_with_one_warning(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n')
    for torn in ('{"step": 3, "lo', "\0" * 64):  # a write cut short; zero bytes a power loss leaves
        path.write_text('{"step": 1}\n{"step": 2}\n' + torn)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="neggrad.trainer.metrics"):
            assert read_metrics(path) == [{"step": 1}, {"step": 2}]
        assert [r.getMessage() for r in caplog.records] == [
            f"{path}: dropped its last line (3), cut short by a crash or a full disk"
        ]
    with pytest.raises(RunFileError, match="line 3"):
        read_jsonl(path, tolerate_torn_tail=False)


@pytest.mark.parametrize(
    ("middle", "what"),
    [('{"step": 2, "lo', "is not a JSON object"), ("[1, 2]", "is not a JSON object"), ('{"loss": 1}', "has no step")],
)
def test_a_bad_line_in_the_middle_names_the_file_and_line(tmp_path, middle, what):
    path = tmp_path / "metrics.jsonl"
    path.write_text(f'{{"step": 1}}\n{middle}\n{{"step": 3}}\n')
    with pytest.raises(RunFileError, match=rf"metrics.jsonl line 2 {what}"):
        read_metrics(path)


def test_resume_cuts_a_torn_last_line_so_appends_stay_valid(tmp_path):
    cfg = tiny("max_steps=3", "save_steps=1")

    def crash_at_2(event, data):
        if event == "step" and data["step"] == 2:
            raise KeyboardInterrupt  # step 2 is logged, step-1 is the last checkpoint

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path, callback=crash_at_2)
    _tear(tmp_path / "metrics.jsonl")
    assert train(cfg, tmp_path, resume=True)["steps"] == 3
    text = (tmp_path / "metrics.jsonl").read_text()
    assert [json.loads(line)["step"] for line in text.splitlines()] == [1, 2, 3]  # every line parses


def test_cli_report_and_eval_read_a_run_with_a_torn_last_line(tmp_path, capsys, caplog):
    run = tmp_path / "run"
    train(tiny("max_steps=2"), run)
    _tear(run / "metrics.jsonl")
    with caplog.at_level(logging.WARNING, logger="neggrad.trainer.metrics"):
        assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        "dropped its last line (3), cut short by a crash or a full disk"
    ]
    assert (tmp_path / "report" / "report.md").is_file()
    assert main(["eval", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"].endswith("step-2/model")


def test_cli_a_bad_middle_line_is_one_line_naming_it(tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny("max_steps=2", "save_steps=1"), run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(f"{lines[0]}\nGARBAGE\n{lines[1]}\n")
    for argv in (["report", str(run), "--out", str(tmp_path / "report")], ["train", "--resume", str(run)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        lines = [line for line in err.splitlines() if line.startswith("neggrad:")]
        assert len(lines) == 1 and "metrics.jsonl line 2 is not a JSON object: 'GARBAGE'" in lines[0], err


def test_a_torn_samples_file_is_read_without_its_last_line(tmp_path):
    from neggrad.analysis.inspect import load_step

    (tmp_path / "samples").mkdir()
    row = {"group": 0, "completion": "1+1=2", "tokens": ["2"], "scores": [0.5], "selected": [True]}
    (tmp_path / "samples" / "step-4.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row)[:20])
    assert load_step(tmp_path, None) == (4, [row])


def test_compare_treats_a_torn_summary_as_unfinished(tmp_path):
    from neggrad.analysis.compare import _summary_status

    (tmp_path / "summary.json").write_text('{"status": "compl')
    assert _summary_status(tmp_path / "summary.json") is None
    (tmp_path / "summary.json").write_text('{"status": "completed"}')
    assert _summary_status(tmp_path / "summary.json") == "completed"


# ---------------------------------------------------------------- a new budget for a run
def _optimizer_lrs(trainer) -> list[float]:
    """Record the learning rate of every optimizer step the trainer takes from now on."""
    used = []
    trainer.optimizer.register_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
    return used


@pytest.mark.parametrize("schedule", ["cosine", "constant", "linear"])
def test_a_longer_budget_follows_the_schedule_of_the_new_max_steps(tmp_path, schedule):
    """From the resume point on, the learning rate is that of a run planned for the new max_steps from the start
    (cosine and linear re-planned to reach 0 at the new end; constant stays constant). Steps already trained keep
    theirs."""
    lr = 1e-3
    short = tiny(f"lr_scheduler_type={schedule}", "max_steps=2", "eval_steps=0")
    longer = tiny(f"lr_scheduler_type={schedule}", "max_steps=4", "eval_steps=0")
    planned = Trainer(longer, tmp_path / "planned")
    planned.setup()
    planned_lrs = _optimizer_lrs(planned)
    planned.train()
    first = Trainer(short, tmp_path / "run")
    first.setup()
    first_lrs = _optimizer_lrs(first)
    first.train()
    resumed = Trainer(longer, tmp_path / "run")
    resumed.setup(resume=True)
    resumed_lrs = _optimizer_lrs(resumed)
    assert resumed.train()["steps"] == 4
    assert len(planned_lrs) == 4 and resumed_lrs == planned_lrs[2:]
    if schedule == "constant":
        assert first_lrs + resumed_lrs == [lr] * 4
    else:
        assert lr_lambda(short, 2)(2) == 0.0 and resumed_lrs[0] > 0.0  # the old schedule had ended at 0
        assert first_lrs == [lr, lr * 0.5] and planned_lrs[1] > first_lrs[1]  # trained steps keep their rates


def test_cli_resume_with_a_new_budget_records_it(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", _defaults(tmp_path), "--run-dir", str(run), *TINY, "max_steps=2"]) == 0
    assert main(["train", "--resume", str(run), "max_steps=3", "eval_steps=1"]) == 0, capsys.readouterr().err
    assert json.loads((run / "summary.json").read_text())["steps"] == 3
    assert [line["step"] for line in read_metrics(run / "metrics.jsonl")] == [1, 2, 3]
    history = read_jsonl(run / "config_history.jsonl")
    assert len(history) == 1 and history[0]["step"] == 2 and "time" in history[0]
    assert history[0]["changes"] == {"max_steps": [2, 3], "eval_steps": [2, 1]}
    saved = (run / "config.yaml").read_text()
    assert "\nmax_steps: 3\n" in saved and "\neval_steps: 1\n" in saved


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["learning_rate=1e-2"], "--resume cannot change learning_rate: it would change what was already trained; "),
        (["max_steps=1"], "max_steps=1 is below step 2, where"),
        (["per_device_train_batch_size=4"], "gradient_accumulation_steps must stay 16 (got 8)"),
        (["--config", "x.yaml"], "--resume continues a run with its saved config.yaml: drop --config"),
    ],
)
def test_cli_resume_refuses_other_changes_in_one_line(tmp_path, capsys, overrides, message):
    run = tmp_path / "run"
    assert main(["train", "--config", _defaults(tmp_path), "--run-dir", str(run), *TINY, "max_steps=2"]) == 0
    before = (run / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), *overrides]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("neggrad:")]
    assert "Traceback" not in err and len(lines) == 1 and message in lines[0], err
    if overrides[0].startswith("learning_rate"):
        assert "keys that may change: max_steps, eval_steps, eval_avg_k, save_steps" in lines[0]
    assert (run / "config.yaml").read_text() == before and not (run / "config_history.jsonl").exists()


# ---------------------------------------------------------------- out of GPU memory
def _oom_at(step: int, real):
    """``real``, except that its call for training step ``step`` raises what CUDA raises when memory runs out."""
    calls = []

    def fake(*args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    return fake


@pytest.mark.parametrize(("stage", "target"), [("the update", "policy_update"), ("generation", "collect_batch")])
def test_out_of_memory_names_the_settings_and_saves_nothing_of_the_step(tmp_path, monkeypatch, stage, target):
    import neggrad.trainer.loop

    monkeypatch.setattr(neggrad.trainer.loop, target, _oom_at(2, getattr(neggrad.trainer.loop, target)))
    with pytest.raises(neggrad.trainer.loop.OutOfMemoryStop) as caught:
        train(tiny("max_steps=3", "save_steps=1", "eval_steps=0"), tmp_path)
    message = str(caught.value)
    assert message.startswith(f"out of GPU memory in {stage} at step 2 (not saved; step-1 is intact)"), message
    for setting in ("per_device_train_batch_size (now 8", "max_completion_length (now 12)"):
        assert setting in message
    if stage == "the update":
        assert "model.gradient_checkpointing=true" in message
        assert message.endswith(
            f"continue with: neggrad train --resume {tmp_path} per_device_train_batch_size=4 "
            "gradient_accumulation_steps=4"
        )
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-1"]
    assert [line["step"] for line in read_metrics(tmp_path / "metrics.jsonl")] == [1]
    assert not (tmp_path / "summary.json").exists()


def test_cli_out_of_memory_is_one_line_and_exit_4_and_the_suggested_resume_works(tmp_path, monkeypatch, capsys):
    import neggrad.trainer.loop

    real = neggrad.trainer.loop.policy_update
    monkeypatch.setattr(neggrad.trainer.loop, "policy_update", _oom_at(2, real))
    run = tmp_path / "run"
    code = main(
        ["train", "--config", _defaults(tmp_path), "--run-dir", str(run), *TINY, "max_steps=2", "save_steps=1"]
    )
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("neggrad:")]
    assert code == 4 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("neggrad: stopped: out of GPU memory in the update at step 2"), err
    monkeypatch.setattr(neggrad.trainer.loop, "policy_update", real)
    resume = lines[0].split("continue with: neggrad ")[1].split()
    assert main(resume) == 0, capsys.readouterr().err
    assert read_jsonl(run / "config_history.jsonl")[0]["changes"] == {
        "per_device_train_batch_size": [8, 4],
        "gradient_accumulation_steps": [2, 4],
    }
