"""The comparison report on hand-made runs whose numbers are worked out by hand."""

import json
import math
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

import neggrad.cli
from neggrad.analysis.report import ReportError, Run, learns_from_all_wrong, load_runs, summarize, write_report
from neggrad.cli import main


def _run(method, seed, *, estimator, group_filter="none", before=None, after=None, steps=4, metrics=()):
    config = {"method": method, "seed": seed, "advantage_estimator": estimator, "group_filter": group_filter}
    summary = None
    if after is not None:
        summary = {
            "status": "completed",
            "method": method,
            "steps": steps,
            "accuracy_before": before,
            "accuracy_after": after,
        }
    return Run(Path(f"{method}/seed-{seed}"), config, summary, list(metrics))


RUNS = [
    # grpo: eval curves {0: 0.4, 2: 0.5, 4: 0.6} and {0: 0.2, 2: 0.3, 4: 0.5}
    _run(
        "grpo",
        0,
        estimator="grpo",
        before=0.4,
        after=0.6,
        metrics=[
            {"step": 1, "groups/all_wrong_frac": 0.2, "time/step": 1.0, "lld/displaced_frac": 0.5},
            {"step": 2, "groups/all_wrong_frac": 0.2, "time/step": 3.0, "eval/accuracy": 0.5},
        ],
    ),
    _run(
        "grpo",
        1,
        estimator="grpo",
        before=0.2,
        after=0.5,
        metrics=[
            {"step": 2, "eval/accuracy": 0.3, "time/step": 2.0, "lld/displaced_frac": 0.1, "lld/delta_seq_mean": -0.2},
        ],
    ),
    # ngrpo: {0: 0.35, 2: 0.46, 4: 0.8}; all-wrong fractions 0.5 and 0.3 (a "nan" and a missing one skipped)
    _run(
        "ngrpo",
        0,
        estimator="ngrpo",
        group_filter="all_correct",
        before=0.35,
        after=0.8,
        metrics=[
            {"step": 1, "groups/all_wrong_frac": 0.5},
            {"step": 2, "groups/all_wrong_frac": 0.3, "eval/accuracy": 0.46},
            {"step": 3, "groups/all_wrong_frac": "nan"},
            {"step": 4},
        ],
    ),
    # dapo, still running (no summary): all-wrong groups are dropped by zero_std, so 0 despite 0.9
    _run(
        "dapo",
        0,
        estimator="grpo",
        group_filter="zero_std",
        metrics=[
            {"step": 1, "groups/all_wrong_frac": 0.9},
            {"step": 2, "eval/accuracy": 0.1},
        ],
    ),
]


def test_summary_rows_match_hand_arithmetic():
    # target = best mean start accuracy + 0.1 = max(mean(0.4, 0.2), 0.35) + 0.1 = 0.45
    grpo, ngrpo, dapo = summarize(RUNS, target=None)
    assert [grpo["method"], ngrpo["method"], dapo["method"]] == ["grpo", "ngrpo", "dapo"]
    assert grpo["target"] == pytest.approx(0.45)
    # grpo final (0.6, 0.5): mean 0.55, sample std sqrt((0.05^2 + 0.05^2) / 1) = 0.0707
    assert grpo["final_accuracy_mean"] == pytest.approx(0.55)
    assert grpo["final_accuracy_std"] == pytest.approx(math.sqrt(0.005))
    assert grpo["best_accuracy_mean"] == pytest.approx((0.6 + 0.5) / 2)
    assert grpo["accuracy_before"] == pytest.approx(0.3)
    # seed 0 reaches 0.45 at step 2 (0.5), seed 1 only at step 4 (0.5): mean 3, 2 of 2
    assert grpo["steps_to_target_mean"] == 3 and grpo["reached_target"] == 2
    assert grpo["all_wrong_learned_frac"] == 0.0  # centred advantages: an all-wrong group gives no gradient
    assert grpo["step_time_s"] == pytest.approx((2.0 + 2.0) / 2)  # seed means (1 + 3) / 2 and 2
    # one seed: no std
    assert ngrpo["final_accuracy_std"] is None and ngrpo["final_accuracy_mean"] == pytest.approx(0.8)
    assert ngrpo["steps_to_target_mean"] == 2 and ngrpo["reached_target"] == 1
    assert ngrpo["all_wrong_learned_frac"] == pytest.approx((0.5 + 0.3) / 2)
    assert ngrpo["step_time_s"] is None  # not logged: left out, no crash
    # a run without summary: no final accuracy, never reaches the target (best eval 0.1)
    assert dapo["final_accuracy_mean"] is None and dapo["reached_target"] == 0
    assert dapo["steps_to_target_mean"] is None and dapo["all_wrong_learned_frac"] == 0.0


def test_a_given_target_replaces_the_default():
    (grpo,) = summarize(RUNS[:2], target=0.55)  # seed 0 reaches 0.6 at step 4, seed 1 never (best 0.5)
    assert grpo["target"] == 0.55 and grpo["steps_to_target_mean"] == 4 and grpo["reached_target"] == 1


@pytest.mark.parametrize(
    ("estimator", "reward_scheme", "group_filter", "learns"),
    [
        ("grpo", "binary", "none", False),  # A = r - mean = 0 in a group of equal rewards
        ("rloo", "binary", "none", False),
        ("psr", "binary", "none", False),  # trains on correct completions only
        ("ngrpo", "binary", "all_correct", True),  # virtual max-reward sample makes the mean > 0
        ("nsr", "binary", "none", True),
        ("nsr", "binary", "zero_std", False),  # the filter drops all-wrong groups first
        ("w_reinforce", "binary", "none", True),
        ("reinforce_rej", "pm1", "zero_std", False),  # its preset drops zero-variance groups
        ("reinforce_rej", "pm1", "none", True),  # A = r = -1 for every wrong answer
        ("reinforce_rej", "binary", "none", False),  # A = r = 0
    ],
)
def test_which_configs_learn_from_all_wrong_groups(estimator, reward_scheme, group_filter, learns):
    config = {"advantage_estimator": estimator, "reward_scheme": reward_scheme, "group_filter": group_filter}
    assert learns_from_all_wrong(config) is learns


def test_judge_and_zero_variance_strategies_learn_from_all_wrong_groups():
    base = {"advantage_estimator": "grpo", "reward_scheme": "binary", "group_filter": "none"}
    assert learns_from_all_wrong({**base, "feedback": {"enabled": True}}) is True
    assert learns_from_all_wrong({**base, "zero_variance": {"all_wrong": "rl_zvp"}}) is True
    assert learns_from_all_wrong({**base, "zero_variance": {"all_wrong": "drop"}}) is False


def _write_run(folder, run):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(run.config))
    if run.summary:
        (folder / "summary.json").write_text(json.dumps(run.summary))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in run.metrics))


def test_report_from_run_folders_writes_table_plots_and_data(tmp_path):
    for run in RUNS:
        _write_run(tmp_path / "runs" / run.path, run)
    (tmp_path / "runs" / "notes").mkdir()  # not a run: skipped
    runs = load_runs([tmp_path / "runs"])
    assert sorted(str(r.path.relative_to(tmp_path / "runs")) for r in runs) == sorted(str(r.path) for r in RUNS)
    data = write_report(runs, tmp_path / "runs", target=None)
    out = tmp_path / "runs"
    for name in ("report.md", "report.html", "accuracy.png", "zero_variance.png", "lld.png", "lld_delta.png"):
        assert (out / name).is_file(), name
    assert not (out / "entropy.png").exists()  # no run logged policy/entropy: no empty plot
    markdown = (out / "report.md").read_text()
    # LLD columns: displaced = mean of the run means 0.5 and 0.1; delta only logged by seed 1
    assert "| grpo | 2 | 0.300 | 0.550 ± 0.071 | 0.550 | 3 (2/2) | 0.00 | - | 0.300 | -0.200 | 2.00 |" in markdown
    assert "| ngrpo | 1 |" in markdown and "| - | - |" in markdown  # runs without LLD metrics
    assert "![accuracy.png](accuracy.png)" in markdown and "How to read this" in markdown
    assert '<img src="accuracy.png"' in (out / "report.html").read_text()
    assert json.loads((out / "summary.json").read_text())["methods"] == data["methods"]
    # the report's own summary.json has no config.yaml beside it, so a second report finds the same runs
    assert len(load_runs([out])) == len(RUNS)


def test_report_refuses_to_write_into_a_run_directory(tmp_path):
    _write_run(tmp_path / "run", RUNS[0])
    with pytest.raises(ReportError, match="pass --out"):
        write_report(load_runs([tmp_path / "run"]), tmp_path / "run")


def test_missing_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(ReportError, match=r"pip install 'neggrad\[report\]'"):
        write_report(RUNS, tmp_path / "out")


def test_report_of_an_empty_folder_exits_2_with_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no neggrad runs in" in err and len(err.strip().splitlines()) == 1, err


def test_compute_on_all_wrong_groups_is_the_share_of_time_per_kind(tmp_path):
    from neggrad.analysis.report import Run, all_wrong_compute

    lines = [
        {"time/all_wrong": 3.0, "time/all_correct": 1.0, "time/mixed": 4.0, "time/unscorable": 0.0},
        {"time/all_wrong": 1.0, "time/all_correct": 0.0, "time/mixed": 1.0, "time/unscorable": 0.0},
        {"time/step": 9.0},  # an old line without the per-kind times is skipped
    ]
    assert all_wrong_compute(Run(tmp_path, {}, None, lines)) == pytest.approx(4.0 / 10.0)
    assert all_wrong_compute(Run(tmp_path, {}, None, lines[2:])) is None


def test_the_terminal_table_fits_80_columns_and_points_to_the_full_report(tmp_path, capsys, monkeypatch):
    for run in RUNS:
        _write_run(tmp_path / "runs" / run.path, run)
    monkeypatch.setattr(neggrad.cli, "out", Console(width=80))
    monkeypatch.chdir(tmp_path)
    assert main(["report", "runs", "--out", "r"]) == 0
    printed = capsys.readouterr().out
    assert "…" not in printed and max(len(line) for line in printed.splitlines()) <= 80
    grpo = next(line for line in printed.splitlines() if "grpo" in line and "ngrpo" not in line)
    assert [cell.strip() for cell in grpo.strip("│ ").split("│")] == ["grpo", "2", "0.300", "0.550 ± 0.071", "0.550"]
    assert "report.md" in printed and "report.html" in printed


def test_plot_legends_stay_outside_the_curves(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    from neggrad.analysis.report import place_legend

    fig, ax = plt.subplots(figsize=(7, 4))
    for i in range(6):  # curves that fill the whole plot area, as accuracy curves do
        ax.plot(range(50), [(x * (i + 1)) % 7 / 7 for x in range(50)], label=f"method {i}")
    place_legend(ax)
    fig.savefig(tmp_path / "p.png", bbox_inches="tight")
    renderer = fig.canvas.get_renderer()
    legend, axes = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert not legend.overlaps(axes)
    plt.close(fig)


def _budget_run(method, seed, *, before, after, evals, samples=None, seconds=None, rounds=None, budget=None):
    """A run of 16 completions a round whose spend is logged (``budget/*``) or, as older runs, reconstructed."""
    config = {"method": method, "seed": seed, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2}
    if budget:
        config["budget"] = budget
    steps = len(samples or rounds)
    metrics = []
    for i in range(steps):
        line = {"step": i + 1}
        if samples:
            line.update({"budget/samples": samples[i], "budget/seconds": seconds[i]})
        else:
            line.update({"groups/gen_rounds": rounds[i], "time/step": seconds[i]})
        if i + 1 in evals:
            line["eval/accuracy"] = evals[i + 1]
        metrics.append(line)
    summary = {"status": "completed", "method": method, "steps": steps, "accuracy_before": before}
    return Run(Path(f"{method}/seed-{seed}"), config, {**summary, "accuracy_after": after}, metrics)


BUDGET_RUNS = [
    # keep: 16 samples a step, 10 s a step; accuracy by samples {0: 0.2, 32: 0.3, 64: 0.5} and {0: 0.2, 48: 0.4,
    # 64: 0.3}
    _budget_run("keep", 0, before=0.2, after=0.5, evals={2: 0.3}, samples=[16, 32, 48, 64], seconds=[10, 20, 30, 40]),
    _budget_run("keep", 1, before=0.2, after=0.3, evals={3: 0.4}, samples=[16, 32, 48, 64], seconds=[10, 20, 30, 40]),
    # drop, logged before budget/*: 2 rounds of 16 a step (32, 64, 96 samples), 5 s a step;
    # accuracy {0: 0.2, 32: 0.4, 96: 0.6}, so 0.5 at 64 samples
    _budget_run("drop", 0, before=0.2, after=0.6, evals={1: 0.4}, rounds=[2, 2, 2], seconds=[5, 5, 5]),
]


def test_report_gives_accuracy_at_the_common_budget_and_what_each_arm_spent(tmp_path):
    from neggrad.analysis.report import common_budget, compute_curve

    assert compute_curve(BUDGET_RUNS[2], "samples") == {0: 0.0, 1: 32.0, 2: 64.0, 3: 96.0}
    assert compute_curve(BUDGET_RUNS[2], "tokens") == {}  # not reconstructed for older runs
    assert common_budget(BUDGET_RUNS, "samples") == 64  # the largest budget every run reached
    for run in BUDGET_RUNS:
        _write_run(tmp_path / "runs" / run.path, run)
    data = write_report(load_runs([tmp_path / "runs"]), tmp_path / "report")
    drop, keep = data["methods"]  # found in path order
    assert keep["common_budget"] == drop["common_budget"] == 64 and keep["budget_kind"] == "samples"
    assert keep["accuracy_at_budget_mean"] == pytest.approx(0.4)  # 0.5 and 0.3 at 64 samples
    assert keep["accuracy_at_budget_std"] == pytest.approx(math.sqrt(0.02))
    assert drop["accuracy_at_budget_mean"] == pytest.approx(0.5) and drop["accuracy_at_budget_std"] is None
    assert (keep["samples_spent_mean"], keep["seconds_spent_mean"]) == (64, 40)
    assert (drop["samples_spent_mean"], drop["seconds_spent_mean"]) == (96, 15)
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| acc at 64 samples (mean ± std) | samples generated | wall time (s) |" in markdown
    assert "| 0.400 ± 0.141 | 64 | 40 |" in markdown and "| 0.500 | 96 | 15 |" in markdown
    assert "Common budget: 64 samples" in markdown
    for name in ("accuracy_samples.png", "accuracy_time.png"):
        assert (tmp_path / "report" / name).is_file() and f"![{name}]({name})" in markdown


def test_the_common_budget_follows_the_runs_budget_kind():
    from neggrad.analysis.report import budget_kind, value_at

    seconds = [
        _budget_run(
            "a", 0, before=0.1, after=0.2, evals={}, samples=[16, 32], seconds=[30, 70], budget={"seconds": 60}
        ),
        _budget_run(
            "b", 0, before=0.1, after=0.4, evals={}, samples=[48, 96], seconds=[35, 65], budget={"seconds": 60}
        ),
    ]
    assert budget_kind(seconds) == "seconds"
    rows = summarize(seconds, target=None)
    assert [r["common_budget"] for r in rows] == [65, 65]
    # a: {0: 0.1, 70: 0.2} -> 0.1 + 0.1 * 65/70; b: ends at 65 s with 0.4
    assert rows[0]["accuracy_at_budget_mean"] == pytest.approx(0.1 + 0.1 * 65 / 70)
    assert rows[1]["accuracy_at_budget_mean"] == pytest.approx(0.4)
    assert budget_kind([*seconds, BUDGET_RUNS[0]]) == "samples"  # mixed kinds: completions generated
    assert value_at({0: 0.0, 10: 1.0}, 11) is None and value_at({5: 0.3}, 5) == 0.3
