"""report_to: TensorBoard, W&B (offline) and trackio hold what metrics.jsonl holds, read back from their own files.

Each round trip is a tiny run that crashes after step 3 (checkpoint at 2) and is resumed to step 4, so the
trackers' steps, the purge of the step logged past the checkpoint, resuming the same tracker run and closing on
an error are all checked. No network: W&B runs offline, trackio writes its local database.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neggrad.cli import main
from neggrad.config import ConfigError, build_config, check_resume_changes, config_changes
from neggrad.trainer.loop import train
from neggrad.trainer.metrics import read_metrics
from tests.test_train import TINY, tiny


class Crash(Exception):
    pass


def _crash_at_3(event, data):
    if event == "step" and data["step"] == 3:
        raise Crash


def _crashed_then_resumed(run_dir: Path, *overrides: str) -> list[dict]:
    """A run logged through step 3, crashed (last checkpoint: step 2), then resumed to step 4: its metrics."""
    cfg = tiny(*overrides)
    with pytest.raises(Crash):
        train(cfg, run_dir, callback=_crash_at_3)
    train(cfg, run_dir, resume=True)
    lines = read_metrics(run_dir / "metrics.jsonl")
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    return lines


def _series(lines: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` of every number in metrics.jsonl lines (what the trackers receive)."""
    out: dict[str, list] = {}
    for line in lines:
        for key, value in line.items():
            if key != "step" and isinstance(value, int | float):
                out.setdefault(key, []).append((line["step"], float(value)))
    return out


# ---------------------------------------------------------------- the key
def test_report_to_takes_trl_names_a_list_or_none():
    assert build_config({}).report_to == []
    assert build_config({}, ["report_to=none"]).report_to == []
    assert build_config({}, ["report_to=tensorboard"]).report_to == ["tensorboard"]
    assert build_config({"report_to": ["wandb", "tensorboard", "wandb"]}).report_to == ["wandb", "tensorboard"]
    with pytest.raises(ConfigError, match=r"^report_to takes none, tensorboard, wandb, trackio or a list of them, "):
        build_config({}, ["report_to=mlflow"])


def test_report_to_may_change_on_resume():
    old, new = build_config({}), build_config({}, ["report_to=[tensorboard]"])
    changes = config_changes(old, new)
    assert changes == {"report_to": [[], ["tensorboard"]]}
    check_resume_changes(changes, old, new)  # no ConfigError


def test_a_missing_tracker_package_is_one_line_naming_pip_before_anything_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what an environment without wandb imports
    config = tmp_path / "c.yaml"
    config.write_text("seed: 0\n")
    run = tmp_path / "run"
    code = main(["train", "--config", str(config), "--run-dir", str(run), *TINY, "report_to=wandb"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("neggrad:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("neggrad: error: report_to=wandb needs the wandb package: pip install 'neggrad[wandb]'")
    assert not run.exists()


def test_a_tracker_that_fails_is_closed_with_a_warning_and_the_run_goes_on(tmp_path, monkeypatch, caplog):
    import neggrad.trainer.trackers

    closed = []

    class Broken:
        def __init__(self, config, run_dir, resumed_step):
            pass

        def log(self, step, values):
            raise ConnectionError("server went away")

        def close(self, failed):
            closed.append(failed)

    monkeypatch.setattr(neggrad.trainer.trackers, "require", lambda names: None)
    monkeypatch.setitem(neggrad.trainer.trackers.OPENERS, "wandb", Broken)
    summary = train(tiny("max_steps=2", "eval_steps=0", "report_to=wandb"), tmp_path)
    assert summary["status"] == "completed"
    assert [line["step"] for line in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    assert closed == [True]  # once, at step 1
    assert any("report_to wandb stopped at step 1: server went away" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- round trips
def test_tensorboard_events_hold_the_metrics_jsonl_values_and_steps(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    lines = _crashed_then_resumed(tmp_path, "report_to=tensorboard")
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    expected = _series(lines)
    assert set(events.Tags()["scalars"]) == set(expected)
    for tag, points in expected.items():  # step 3 as resumed, not as logged before the crash (time/* differ)
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in points], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6), tag
    hparams = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams).session_start_info
    assert start.hparams["learning_rate"].number_value == pytest.approx(1e-3)
    assert start.hparams["model.testbed.hidden_size"].number_value == 32
    assert start.hparams["report_to"].string_value == "['tensorboard']"


def _wandb_records(path: Path):
    """The protobuf records of a W&B transaction log (``run-ID.wandb``): a 7-byte header (":W&B", magic,
    version), then LevelDB-log blocks of 32 KiB whose chunks (crc 4 bytes, length 2, type 1) split the records:
    type 1 a whole record, 2 / 3 / 4 its first, middle and last part."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _records_once_closed(path, timeout_s: float = 60.0) -> list:
    """The session file's records once its exit record is there: wandb's writer is a separate process
    (wandb-core) that can still be flushing the file when ``wandb.finish()`` has returned on a loaded machine
    (an empty file was read once in CI); waits at most ``timeout_s``, then returns what is there."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = list(_wandb_records(path)) if path.exists() else []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def test_wandb_offline_run_holds_the_metrics_jsonl_values_steps_and_config(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "")  # offline by default: no key, no network
    lines = _crashed_then_resumed(tmp_path, "report_to=wandb")
    run_id = (tmp_path / "wandb" / "run_id").read_text().strip()
    sessions = sorted((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(sessions) == 2  # the crashed session and the resumed one, one run id: `wandb sync` appends them
    expected = _series(lines)
    got: dict[int, dict] = {}
    for number, session in enumerate(sessions):
        records = _records_once_closed(session / f"run-{run_id}.wandb")
        kinds = [r.WhichOneof("record_type") for r in records]
        exits = [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]
        assert exits == [1 if number == 0 else 0], kinds  # closed on the crash too, with its exit code
        updates = [r.run.config for r in records if r.HasField("run")] + [
            r.config for r in records if r.HasField("config")
        ]
        config = {item.key: json.loads(item.value_json) for update in updates for item in update.update}
        assert config["learning_rate"] == 1e-3 and config["report_to"] == ["wandb"]
        assert config["model"]["testbed"]["hidden_size"] == 32
        for r in records:
            if r.WhichOneof("record_type") == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
                assert row["_step"] == r.history.step.num
                got[r.history.step.num] = {k: v for k, v in row.items() if not k.startswith("_")}  # resumed wins
    assert sorted(got) == [1, 2, 3, 4]
    for tag, points in expected.items():
        assert [(step, got[step][tag]) for step, _ in points] == points, tag
    assert set().union(*got.values()) == set(expected)


def test_trackio_run_holds_the_metrics_jsonl_values_and_steps(tmp_path):
    pytest.importorskip("trackio")
    script = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
from tests.test_trackers import _crashed_then_resumed
from trackio.sqlite_storage import SQLiteStorage
lines = _crashed_then_resumed(__import__("pathlib").Path({str(tmp_path / "run")!r}), "report_to=trackio")
logs = SQLiteStorage.get_logs("neggrad", "run")
open({str(tmp_path / "out.json")!r}, "w").write(json.dumps({{"lines": lines, "logs": logs}}))
"""
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "OMP_NUM_THREADS": "1"}  # read at import
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    expected = _series(out["lines"])
    by_step: dict[int, dict] = {}
    for log in out["logs"]:
        by_step[log["step"]] = log  # a step logged again after the resume: the later value
    assert sorted(by_step) == [1, 2, 3, 4]
    for tag, points in expected.items():
        assert [(step, float(by_step[step][tag])) for step, _ in points] == points, tag
