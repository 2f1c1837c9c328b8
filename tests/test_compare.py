"""`neggrad compare`: every (method, seed) run once, finished runs kept, interrupted ones resumed."""

import json
import os
import shutil
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from neggrad.analysis.compare import (
    CompareError,
    parse_methods,
    plan_runs,
    run_compare,
    run_parallel,
    run_status,
    threads_per_job,
    train_command,
)
from neggrad.cli import main
from neggrad.config import read_yaml
from neggrad.trainer.metrics import read_metrics
from tests.test_train import TINY

# two small training steps with one evaluation between them; no mid-run checkpoint
SMALL = [
    *TINY,
    "max_steps=2",
    "eval_steps=1",
    "save_steps=0",
    "num_generations=2",
    "per_device_train_batch_size=2",  # x 2 accumulation = 4 completions = 2 prompts x 2
    "max_completion_length=8",
    "task.eval_size=4",
]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """2 methods x 2 seeds, trained for real once for the whole module (about 20 s on CPU)."""
    tmp = tmp_path_factory.mktemp("compare")
    (tmp / "tiny.yaml").write_text("learning_rate: 1.0e-3\n")
    args = [
        "compare",
        "--methods",
        "grpo,ngrpo",
        "--seeds",
        "2",
        "--config",
        str(tmp / "tiny.yaml"),
        "--out",
        str(tmp / "out"),
        *SMALL,
    ]
    assert main(args) == 0
    return tmp / "out", args


def test_compare_trains_every_method_and_seed_and_reports(compared):
    out, _ = compared
    for method in ("grpo", "ngrpo"):
        for seed in (0, 1):
            run = out / method / f"seed-{seed}"
            assert json.loads((run / "summary.json").read_text())["status"] == "completed"
            config = read_yaml(run / "config.yaml")
            assert (config["method"], config["seed"], config["max_steps"]) == (method, seed, 2)
    for name in ("report.md", "report.html", "accuracy.png", "zero_variance.png", "entropy.png", "clip.png"):
        assert (out / name).is_file(), name
    rows = {row["method"]: row for row in json.loads((out / "summary.json").read_text())["methods"]}
    for method in ("grpo", "ngrpo"):
        finals = [
            json.loads((out / method / f"seed-{s}" / "summary.json").read_text())["accuracy_after"] for s in (0, 1)
        ]
        assert rows[method]["seeds"] == [0, 1]
        assert rows[method]["final_accuracy_mean"] == pytest.approx(statistics.fmean(finals))
        assert rows[method]["final_accuracy_std"] == pytest.approx(statistics.stdev(finals))
    assert "| grpo | 2 |" in (out / "report.md").read_text()  # a count; the seed ids are in summary.json


def test_rerunning_compare_keeps_finished_runs(compared, monkeypatch):
    out, args = compared
    metrics = sorted(out.glob("*/seed-*/metrics.jsonl"))
    mtimes = [p.stat().st_mtime_ns for p in metrics]

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("neggrad.trainer.loop.train", no_training)
    assert main(args) == 0
    assert [p.stat().st_mtime_ns for p in metrics] == mtimes and len(metrics) == 4
    # and the report alone, from the compare folder
    assert main(["report", str(out), "--out", str(out / "again")]) == 0
    assert (out / "again" / "report.html").is_file()


def test_unknown_method_stops_before_any_run(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("max_steps: 1\n")
    code = main(
        ["compare", "--methods", "grpo,magic", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "unknown method 'magic'" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_repeated_or_empty_method_lists_are_refused():
    with pytest.raises(CompareError, match="grpo more than once"):
        parse_methods("grpo,dapo,grpo")
    with pytest.raises(CompareError, match="names no method"):
        parse_methods(" , ")


def _plan(tmp_path, *overrides):
    return plan_runs({}, [*SMALL, *overrides], methods=["grpo"], seeds=3, out=tmp_path)


def _fake_train(calls, status="completed"):
    def runner(config, run_dir, *, resume):
        calls.append((run_dir.name, resume))
        return {"status": status}

    return runner


def test_runs_are_kept_resumed_or_restarted_by_what_their_folder_holds(tmp_path):
    done, interrupted, crashed = _plan(tmp_path)
    for run in (done, interrupted, crashed):
        run.run_dir.mkdir(parents=True)
        (run.run_dir / "config.yaml").write_text(yaml.safe_dump(run.config.model_dump(mode="json")))
        (run.run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    (done.run_dir / "summary.json").write_text('{"status": "completed"}')
    (interrupted.run_dir / "checkpoints" / "step-1").mkdir(parents=True)
    (interrupted.run_dir / "summary.json").write_text('{"status": "interrupted"}')
    (crashed.run_dir / "checkpoints" / ".tmp-step-2").mkdir(parents=True)  # died while saving its first one
    assert [run_status(r) for r in (done, interrupted, crashed)] == ["completed", "resume", "new"]
    calls = []
    run_compare([done, interrupted, crashed], runner=_fake_train(calls))
    assert calls == [("seed-1", True), ("seed-2", False)]
    assert not (crashed.run_dir / "metrics.jsonl").exists() and not (crashed.run_dir / "checkpoints").exists()


def test_an_interrupted_run_stops_the_comparison(tmp_path):
    calls = []
    summaries = run_compare(_plan(tmp_path), runner=_fake_train(calls, status="interrupted"))
    assert calls == [("seed-0", False)] and summaries == [{"status": "interrupted"}]


def test_a_run_trained_with_another_config_is_not_reused(tmp_path):
    old = _plan(tmp_path)[0]
    old.run_dir.mkdir(parents=True)
    (old.run_dir / "config.yaml").write_text(yaml.safe_dump(old.config.model_dump(mode="json")))
    new = _plan(tmp_path, "max_steps=3")[0]
    with pytest.raises(CompareError, match=r"another config \(max_steps: 2 -> 3\)"):
        run_status(new)


def test_the_testbed_compare_config_builds_for_each_method(tmp_path):
    raw = read_yaml(ROOT / "configs" / "testbed" / "compare.yaml")
    runs = plan_runs(raw, [], methods=["grpo", "ngrpo", "dapo"], seeds=3, out=tmp_path)
    assert len(runs) == 9 and {r.config.max_steps for r in runs} == {60}
    assert [r.config.loss_type for r in runs[::3]] == ["grpo", "dapo", "dapo"]  # presets still differ


def test_keys_added_by_a_newer_neggrad_do_not_orphan_finished_runs():
    from neggrad.analysis.compare import _differences
    from neggrad.config import Config

    defaults = Config().model_dump(mode="json")
    wanted = Config(learning_rate=1e-4).model_dump(mode="json")
    saved = {k: v for k, v in wanted.items() if k != "lld"}  # an older run: no lld section yet
    assert _differences(saved, wanted, defaults) == []
    changed = dict(wanted, lld=dict(wanted["lld"], enabled=False))
    assert _differences(saved, changed, defaults) == ["lld: None -> " + repr(changed["lld"])]
    assert _differences(dict(saved, learning_rate=2e-4), wanted, defaults) == ["learning_rate: 0.0002 -> 0.0001"]


def test_shipped_studies_plan_every_arm(tmp_path):
    from pathlib import Path

    from neggrad.analysis.compare import plan_arms, read_study
    from neggrad.config import read_yaml

    studies = sorted(Path("configs/studies").glob("*.yaml"))
    assert studies
    for study in studies:
        config, seeds, overrides, arms = read_study(study)
        planned = plan_arms(read_yaml(config), overrides, arms=arms, seeds=seeds, out=tmp_path)
        assert len(planned) == len(arms) * seeds
        assert {r.config.label for r in planned} == set(arms)
        assert planned[0].run_dir == tmp_path / next(iter(arms)) / "seed-0"


def test_a_bad_study_is_a_compare_error(tmp_path):
    from neggrad.analysis.compare import CompareError, read_study

    bad = tmp_path / "s.yaml"
    bad.write_text("config: x.yaml\narms: {a: method=grpo}\n")
    with pytest.raises(CompareError, match="must be a list"):
        read_study(bad)
    bad.write_text("arms: {a: [method=grpo]}\nextra: 1\n")
    with pytest.raises(CompareError, match="unknown keys: extra"):
        read_study(bad)


def test_arms_runs_a_subset_of_a_study(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text("learning_rate: 1.0e-3\n")
    study = tmp_path / "study.yaml"
    study.write_text("config: base.yaml\nseeds: 2\narms:\n  a: [method=grpo]\n  b: [method=ngrpo]\n")
    out = tmp_path / "out"
    args = ["compare", "--study", str(study), "--out", str(out), *SMALL]
    assert main([*args, "--arms", "b,zz"]) == 2  # an arm the study lacks: one line naming its arms
    assert "has the arms a, b" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--arms", "b", "--seeds", "1"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["b"]
    assert read_yaml(out / "b" / "seed-0" / "config.yaml")["method"] == "ngrpo"


def test_report_shows_pass_at_k_saved_by_eval(compared, tmp_path, capsys):
    out, _ = compared
    run = out / "grpo" / "seed-0"
    assert main(["eval", str(run), "--pass-k", "1,2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((run / "evals" / "step-2.json").read_text())
    assert saved["eval/pass_at_2"] == printed["eval/pass_at_2"] and saved["eval/pass_at_1"] <= saved["eval/pass_at_2"]
    assert main(["report", str(out), "--out", str(tmp_path / "r")]) == 0
    rows = {row["method"]: row for row in json.loads((tmp_path / "r" / "summary.json").read_text())["methods"]}
    assert rows["grpo"]["pass_at_k"]["2"][0] == pytest.approx(saved["eval/pass_at_2"])
    assert rows["ngrpo"]["pass_at_k"] == {}
    report = (tmp_path / "r" / "report.md").read_text()
    assert "pass@2 (final)" in report and "(1 seeds)" in report  # one of the two grpo seeds was evaluated


# ---------------------------------------------------------------- --jobs N: runs in subprocesses


def test_two_jobs_train_the_same_runs_as_one(compared, tmp_path, capsys):
    """`--jobs 2` (subprocesses, threads split) writes the same metrics, weights and report as the in-process run."""
    from safetensors.torch import load_file

    from tests.test_train import _untimed

    out, args = compared
    par = tmp_path / "par"
    assert main([*[a if a != str(out) else str(par) for a in args], "--jobs", "2"]) == 0
    printed = capsys.readouterr().err
    assert "[grpo s1]" in printed and "grpo step 2/2" in printed  # each run's lines, prefixed by the run
    for method in ("grpo", "ngrpo"):
        for seed in (0, 1):
            one, two = out / method / f"seed-{seed}", par / method / f"seed-{seed}"
            assert _untimed(read_metrics(two / "metrics.jsonl")) == _untimed(read_metrics(one / "metrics.jsonl"))
            weights = "checkpoints/step-2/model/model.safetensors"
            a, b = load_file(one / weights), load_file(two / weights)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
            assert "OMP_NUM_THREADS=" in (two / "train.log").read_text()

    def untimed_report(folder):
        rows = json.loads((folder / "summary.json").read_text())["methods"]
        timed = ("step_time_s", "seconds_spent_mean", "all_wrong_compute_frac")  # wall-clock readings
        return [{k: v for k, v in row.items() if k not in timed} for row in rows]

    assert untimed_report(par) == untimed_report(out)


def test_a_resumed_parallel_compare_trains_only_unfinished_runs(compared, tmp_path, monkeypatch):
    out, args = compared
    par = tmp_path / "par"
    shutil.copytree(out, par)
    unfinished = par / "ngrpo" / "seed-1"
    for name in ("summary.json", "metrics.jsonl", "checkpoints", "samples"):
        target = unfinished / name
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    started = []

    def command(run, status, config_file):
        started.append((run.run_dir, status))
        return train_command(run, status, config_file)

    monkeypatch.setattr("neggrad.analysis.compare.train_command", command)
    assert main([*[a if a != str(out) else str(par) for a in args], "--jobs", "2"]) == 0
    assert started == [(unfinished, "new")]
    assert json.loads((unfinished / "summary.json").read_text())["status"] == "completed"
    assert (par / "report.md").stat().st_mtime_ns > (out / "report.md").stat().st_mtime_ns


FAKE_RUN = """
import json, signal, sys, time
from pathlib import Path
run_dir, behaviour = Path(sys.argv[sys.argv.index("--run-dir") + 1]), sys.argv[1]
def stop(signum, frame):
    (run_dir / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
(run_dir / "ready").write_text("")
print("step 1 of", run_dir.parent.name, file=sys.stderr, flush=True)
if behaviour == "fail":
    print("neggrad: stopped: 3 consecutive steps had a non-finite loss", file=sys.stderr)
    sys.exit(1)
if behaviour == "wait":
    time.sleep(60)
summary = {"status": "completed", "run": str(run_dir), "accuracy_before": 0.25, "accuracy_after": 0.5}
(run_dir / "summary.json").write_text(json.dumps({**summary, "wall_time_s": 1.0}))
"""


def _fake_command(tmp_path, behaviours):
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)
    return lambda run, status, config_file: [
        sys.executable,
        str(script),
        behaviours.get(run.seed, "ok"),
        "--run-dir",
        str(run.run_dir),
    ]


def test_a_failing_parallel_run_is_reported_and_the_others_finish(tmp_path):
    runs = _plan(tmp_path / "out")
    lines, done = [], []
    outcomes = run_parallel(
        runs,
        jobs=2,
        command=_fake_command(tmp_path, {0: "fail"}),
        on_line=lambda i, run, line: lines.append((i, line)),
        on_done=lambda i, run, outcome: done.append(i),
    )
    assert [o.status for o in outcomes] == ["failed", "completed", "completed"]
    assert outcomes[0].returncode == 1 and "non-finite loss" in outcomes[0].error
    assert outcomes[2].summary["run"] == str(runs[2].run_dir)
    assert sorted(done) == [0, 1, 2] and (0, "step 1 of grpo") in lines
    assert "non-finite loss" in (runs[0].run_dir / "train.log").read_text()


def test_parallel_compare_exits_1_naming_the_failed_run(tmp_path, monkeypatch, capsys):
    (tmp_path / "c.yaml").write_text("learning_rate: 1.0e-3\n")
    monkeypatch.setattr("neggrad.analysis.compare.train_command", _fake_command(tmp_path, {1: "fail"}))
    out = tmp_path / "out"
    args = ["compare", "--methods", "grpo", "--seeds", "3", "--config", str(tmp_path / "c.yaml"), "--out", str(out)]
    assert main([*args, *SMALL, "--jobs", "3"]) == 1
    captured = capsys.readouterr()
    assert f"failed: {out / 'grpo' / 'seed-1'} (exit 1): neggrad: stopped: 3 consecutive" in captured.out
    assert "completed: accuracy 0.250 -> 0.500" in captured.err
    assert not (out / "report.md").exists()
    assert [json.loads((out / "grpo" / f"seed-{s}" / "summary.json").read_text())["status"] for s in (0, 2)] == [
        "completed",
        "completed",
    ]


def test_an_interrupt_reaches_every_running_run_and_starts_no_more(tmp_path):
    runs = _plan(tmp_path / "out")  # 3 runs, 2 at a time: the third never starts

    def interrupt_when_ready():
        deadline = time.monotonic() + 60
        while not all((r.run_dir / "ready").exists() for r in runs[:2]) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_ready, daemon=True).start()
    previous = signal.getsignal(signal.SIGINT)
    outcomes = run_parallel(runs, jobs=2, command=_fake_command(tmp_path, {0: "wait", 1: "wait"}))
    assert [o and o.status for o in outcomes] == ["interrupted", "interrupted", None]
    assert not runs[2].run_dir.exists() and signal.getsignal(signal.SIGINT) is previous


def test_a_run_waits_while_another_builds_its_warm_start(tmp_path):
    runs = _plan(tmp_path / "out")  # seeds 0 and 1 would build the same warm start; seed 2 needs none

    def builds(run):
        built = (runs[0].run_dir / "summary.json").exists()
        return "warm-start-A" if run.seed in (0, 1) and not built else None

    events = []
    outcomes = run_parallel(
        runs,
        jobs=3,
        command=_fake_command(tmp_path, {}),
        builds=builds,
        on_run=lambda i, run, status: events.append((i, builds(runs[1]))),  # what run 1 would build then
    )
    assert [o.status for o in outcomes] == ["completed"] * 3
    assert events == [(0, "warm-start-A"), (2, "warm-start-A"), (1, None)]  # 1 waited, 2 went ahead


def test_the_warm_start_to_build_is_known_before_a_run_starts(tmp_path):
    from neggrad.analysis.compare import warm_start_to_build

    plan = plan_runs(
        {}, [*SMALL, "sft.enabled=true", f"sft.cache_dir={tmp_path}"], methods=["grpo"], seeds=2, out=tmp_path
    )
    keys = [warm_start_to_build(run) for run in plan]
    assert all(keys) and keys[0] != keys[1]  # one per seed, none cached yet
    assert warm_start_to_build(_plan(tmp_path)[0]) is None  # SMALL trains from scratch: nothing to build


def test_threads_are_split_between_jobs():
    assert [threads_per_job(jobs, cores=8) for jobs in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    with pytest.raises(CompareError, match="--jobs must be at least 1, got 0"):
        run_parallel([], jobs=0)
