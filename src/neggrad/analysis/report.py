"""A side-by-side report of finished runs: one table row per method over its seeds, and the curves.

``neggrad report RUN_DIR...`` and ``neggrad compare`` write into one folder:

    report.md, report.html   the table, the plots and how to read them (HTML: self-contained, images relative)
    summary.json             the table as data
    accuracy.png, accuracy_samples.png, accuracy_time.png, zero_variance.png, entropy.png, clip.png

Runs are grouped by the ``method`` of their ``config.yaml``. A metric a run did not log is left out of
its row and its curves, never an error.
"""

from __future__ import annotations

import html
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import yaml

from neggrad.trainer.metrics import RunFileError, read_metrics

LEARNS_FROM_ALL_WRONG = ("ngrpo", "nsr", "w_reinforce")
"""Advantage estimators that give a group of all-wrong completions a non-zero advantage without needing
variance: NGRPO's virtual max-reward sample, NSR's A = -1, W-REINFORCE's -1 for wrong answers."""

TARGET_MARGIN = 0.1
"""Default target accuracy: the best method's mean accuracy before RL plus this (capped at 1)."""

ZERO_VARIANCE = ("groups/all_wrong_frac", "groups/all_correct_frac")
CLIP = ("clip/low_frac", "clip/high_frac")


class ReportError(ValueError):
    """Nothing to report, or a folder that is not a run: the message says what was expected."""


@dataclass
class Run:
    """One run directory as read from disk; ``summary`` is None while a run has not ended."""

    path: Path
    config: dict
    summary: dict | None
    metrics: list[dict]

    @property
    def method(self) -> str:
        return str(self.config.get("label") or self.config.get("method") or (self.summary or {}).get("method") or "?")

    @property
    def seed(self) -> int | None:
        return self.config.get("seed")

    def pass_at_k(self) -> dict[int, float]:
        """{k: pass@k} of the latest checkpoint evaluated with ``neggrad eval RUN --pass-k`` (evals/step-N.json)."""
        saved = sorted((self.path / "evals").glob("step-*.json"), key=lambda p: int(p.stem.removeprefix("step-") or 0))
        if not saved:
            return {}
        try:
            result = json.loads(saved[-1].read_text())
        except (json.JSONDecodeError, OSError):
            return {}
        prefix = "eval/pass_at_"
        return {
            int(key.removeprefix(prefix)): float(v)
            for key, v in result.items()
            if key.startswith(prefix) and key.removeprefix(prefix).isdigit() and _num(v) is not None
        }


# ---------------------------------------------------------------- loading
def _is_run(folder: Path) -> bool:
    has_output = (folder / "summary.json").is_file() or (folder / "metrics.jsonl").is_file()
    return (folder / "config.yaml").is_file() and has_output


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """Run directories among ``paths``, or below them (a ``neggrad compare`` output folder), in path order."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise ReportError(f"{path} is not a directory: pass run directories or a `neggrad compare` --out folder")
        found += [path] if _is_run(path) else sorted(c.parent for c in path.rglob("config.yaml") if _is_run(c.parent))
    if not found:
        raise ReportError(
            f"no neggrad runs in {', '.join(map(str, paths))}: a run directory holds config.yaml and "
            "metrics.jsonl or summary.json"
        )
    return list(dict.fromkeys(found))


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Read every run directory found in ``paths`` (see ``find_run_dirs``)."""
    runs = []
    for folder in find_run_dirs(paths):
        try:
            config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
            summary_path = folder / "summary.json"
            summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
            metrics = read_metrics(folder / "metrics.jsonl") if (folder / "metrics.jsonl").is_file() else []
        except (yaml.YAMLError, json.JSONDecodeError, RunFileError) as err:
            raise ReportError(f"run {folder} has an unreadable file: {err}") from None
        runs.append(Run(folder, config, summary, metrics))
    return runs


# ---------------------------------------------------------------- curves and numbers
def _num(value) -> float | None:
    """A finite number, else None (missing, or non-finite: MetricsWriter stores those as "nan")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def eval_curve(run: Run) -> dict[int, float]:
    """Greedy held-out accuracy by step: before RL (step 0), every evaluation, and after the last step."""
    summary = run.summary or {}
    points = {}
    if (before := _num(summary.get("accuracy_before"))) is not None:
        points[0] = before
    for record in run.metrics:
        if (acc := _num(record.get("eval/accuracy"))) is not None:
            points[int(record["step"])] = acc
    if (after := _num(summary.get("accuracy_after"))) is not None and "steps" in summary:
        points[int(summary["steps"])] = after
    return dict(sorted(points.items()))


COMPUTE_KINDS = ("samples", "tokens", "seconds")
"""What a run can spend (``budget.*``, the ``budget/*`` metrics)."""


def _generation_batch(config: dict) -> int | None:
    """Completions one generation round of the run samples (``Config.generation_batch_size``) from its config."""
    keys = ("per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation")
    values = [config.get(k, 1 if k == "steps_per_generation" else None) for k in keys]
    return math.prod(values) if all(isinstance(v, int) for v in values) else None


def compute_curve(run: Run, kind: str) -> dict[int, float]:
    """What the run had spent of ``kind`` (samples, tokens or seconds) by the end of each step, 0 at step 0.

    From the ``budget/*`` metrics. Runs that predate them: samples = ``groups/gen_rounds`` x the generation batch
    of their config.yaml + ``hint/extra_generations``, summed; seconds = ``time/step`` summed (without the
    evaluation before step 1); tokens are not reconstructed (an empty curve).
    """
    curve = {0: 0.0}
    total = 0.0
    batch = _generation_batch(run.config)
    for record in run.metrics:
        if "step" not in record:
            continue
        logged = _num(record.get(f"budget/{kind}"))
        if logged is not None:
            curve[int(record["step"])] = total = logged
            continue
        if kind == "samples" and batch is not None and (rounds := _num(record.get("groups/gen_rounds"))) is not None:
            total += rounds * batch + (_num(record.get("hint/extra_generations")) or 0.0)
        elif kind == "seconds" and (seconds := _num(record.get("time/step"))) is not None:
            total += seconds
        else:
            return {}
        curve[int(record["step"])] = total
    return curve if len(curve) > 1 else {}


def eval_by_compute(run: Run, kind: str) -> dict[float, float]:
    """:func:`eval_curve` against what the run had spent of ``kind`` at each evaluation (steps without a known
    spend are left out)."""
    spent = compute_curve(run, kind)
    return {spent[step]: acc for step, acc in eval_curve(run).items() if step in spent}


def value_at(curve: dict[float, float], x: float) -> float | None:
    """The curve at ``x``, linearly interpolated between its two nearest points (None outside its range)."""
    points = sorted(curve.items())
    if not points or not points[0][0] <= x <= points[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]  # a single point, at x


def budget_kind(runs: list[Run]) -> str:
    """The kind of budget the runs share (``budget.samples`` / ``tokens`` / ``seconds`` in their configs);
    samples when they set none or different kinds."""
    kinds = {
        next((k for k in COMPUTE_KINDS if ((r.config.get("budget") or {}).get(k)) is not None), None) for r in runs
    }
    return kinds.pop() if len(kinds) == 1 and None not in kinds else "samples"


def common_budget(runs: list[Run], kind: str) -> float | None:
    """The largest amount of ``kind`` every run reached: the least any run spent (None if a run's spend is
    unknown)."""
    spent = [max(curve.values()) if (curve := compute_curve(r, kind)) else None for r in runs]
    return None if not spent or None in spent else min(spent)


def metric_curve(run: Run, names: tuple[str, ...]) -> dict[int, float]:
    """The sum of the named metrics by step; steps that log none of them are left out."""
    curve = {}
    for record in run.metrics:
        values = [v for v in (_num(record.get(n)) for n in names) if v is not None]
        if values and "step" in record:
            curve[int(record["step"])] = sum(values)
    return curve


def learns_from_all_wrong(config: dict) -> bool:
    """Whether an all-wrong group gets a gradient: a variance-free estimator, and no ``zero_std`` filter.

    GRPO, Dr. GRPO and RLOO centre rewards on the group, so equal rewards give A = 0; PSR and RAFT use
    correct completions only. NGRPO, NSR and W-REINFORCE (and Reinforce-Rej with +-1 rewards) do give
    wrong answers in such a group a negative advantage, unless ``group_filter: zero_std`` drops the group
    first (DAPO, Reinforce-Rej's preset). Correctness only: an overlong penalty's variance is not counted.
    A ``zero_variance.all_wrong`` strategy other than keep / drop, or judge feedback, gives such groups a
    gradient whatever the estimator (issue 9's switch, docs/algorithms.md §10).
    """
    strategy = (config.get("zero_variance") or {}).get("all_wrong", "preset")
    if strategy not in ("preset", "keep", "drop") or (config.get("feedback") or {}).get("enabled"):
        return True
    estimator = config.get("advantage_estimator")
    variance_free = estimator in LEARNS_FROM_ALL_WRONG or (
        estimator == "reinforce_rej" and config.get("reward_scheme") == "pm1"
    )
    return variance_free and config.get("group_filter") != "zero_std"


def all_wrong_compute(run: Run) -> float | None:
    """Share of the run's generation, hint, judge and update time spent on all-wrong groups (``time/{kind}``)."""
    kinds = ("time/all_wrong", "time/all_correct", "time/mixed", "time/unscorable")
    rows = [m for m in run.metrics if all(_num(m.get(k)) is not None for k in kinds)]
    total = sum(m[k] for m in rows for k in kinds)
    return sum(m["time/all_wrong"] for m in rows) / total if rows and total > 0 else None


def default_target(runs: list[Run]) -> float | None:
    """The best method's mean accuracy before RL + TARGET_MARGIN, capped at 1 (None if none was measured)."""
    befores = [
        _mean(_num((r.summary or {}).get("accuracy_before")) for r in members)
        for members in group_by_method(runs).values()
    ]
    best = max((b for b in befores if b is not None), default=None)
    return None if best is None else min(1.0, best + TARGET_MARGIN)


def group_by_method(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.method, []).append(run)
    return groups


def _steps_to(curve: dict[int, float], target: float | None) -> int | None:
    return next((step for step, acc in curve.items() if target is not None and acc >= target), None)


def summarize(runs: list[Run], *, target: float | None) -> list[dict]:
    """One row per method (in order of first appearance), aggregated over its runs (seeds).

    Final accuracy: ``accuracy_after`` of each run, mean and sample std (n - 1; None for one run). Best
    accuracy: each run's best greedy evaluation, before and after included, then the mean. Steps to
    target: each run's first evaluated step at or above ``target`` (default ``default_target``), mean over
    the runs that reach it. At the common budget: each run's held-out accuracy at the most of ``budget_kind`` every
    run (of every method) spent, interpolated between the evaluations around it (:func:`value_at`), with the
    samples and seconds each run spent in all. All-wrong learned from: each run's mean ``groups/all_wrong_frac`` if
    ``learns_from_all_wrong`` its config, else 0. Compute on all-wrong groups: ``all_wrong_compute`` (None
    for runs that predate ``time/{kind}``). Step time: mean ``time/step``. pass@k: the runs' saved
    ``neggrad eval --pass-k`` results.
    """
    if target is None:
        target = default_target(runs)
    kind = budget_kind(runs)
    common = common_budget(runs, kind)
    rows = []
    for method, members in group_by_method(runs).items():
        summaries = [r.summary or {} for r in members]
        finals = [v for v in (_num(s.get("accuracy_after")) for s in summaries) if v is not None]
        curves = [eval_curve(r) for r in members]
        reached = [s for s in (_steps_to(c, target) for c in curves) if s is not None]
        all_wrong = [
            _mean(metric_curve(r, ("groups/all_wrong_frac",)).values()) if learns_from_all_wrong(r.config) else 0.0
            for r in members
        ]
        at_budget = [] if common is None else [value_at(eval_by_compute(r, kind), common) for r in members]
        at_budget = [v for v in at_budget if v is not None]
        per_k: dict[int, list[float]] = {}
        for r in members:
            for k, v in r.pass_at_k().items():
                per_k.setdefault(k, []).append(v)
        rows.append(
            {
                "method": method,
                "seeds": [r.seed for r in members],
                "steps": [s.get("steps") for s in summaries],
                "accuracy_before": _mean(_num(s.get("accuracy_before")) for s in summaries),
                "final_accuracy_mean": _mean(finals),
                "final_accuracy_std": statistics.stdev(finals) if len(finals) > 1 else None,
                "best_accuracy_mean": _mean(max(c.values()) if c else None for c in curves),
                "target": target,
                "steps_to_target_mean": _mean(reached),
                "reached_target": len(reached),
                "learns_from_all_wrong": any(learns_from_all_wrong(r.config) for r in members),
                "all_wrong_learned_frac": _mean(all_wrong),
                "step_time_s": _mean(_mean(metric_curve(r, ("time/step",)).values()) for r in members),
                "budget_kind": kind,
                "common_budget": common,
                "accuracy_at_budget_mean": _mean(at_budget),
                "accuracy_at_budget_std": statistics.stdev(at_budget) if len(at_budget) > 1 else None,
                "samples_spent_mean": _mean(max(compute_curve(r, "samples").values(), default=None) for r in members),
                "seconds_spent_mean": _mean(max(compute_curve(r, "seconds").values(), default=None) for r in members),
                "all_wrong_compute_frac": _mean(all_wrong_compute(r) for r in members),
                "displaced_frac": _mean(_mean(metric_curve(r, ("lld/displaced_frac",)).values()) for r in members),
                "delta_seq_mean": _mean(_mean(metric_curve(r, ("lld/delta_seq_mean",)).values()) for r in members),
                "pass_at_k": {  # k: (mean, std or None, runs evaluated)
                    k: (_mean(v), statistics.stdev(v) if len(v) > 1 else None, len(v))
                    for k, v in sorted(per_k.items())
                },
            }
        )
    return rows


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The summary rows as a header and text cells, shared by Markdown, HTML and the terminal."""

    def fmt(value: float | None, spec: str = ".3f") -> str:
        return "-" if value is None else format(value, spec)

    target = rows[0]["target"] if rows else None
    common, kind = (rows[0]["common_budget"], rows[0]["budget_kind"]) if rows else (None, "samples")
    at = "common budget" if common is None else f"{common:,.0f} {kind}"
    header = [
        "method",
        "seeds",
        "start acc",
        "final acc (mean ± std)",
        "best acc",
        f"steps to {fmt(target)} (seeds)",
        "all-wrong groups learned from",
        "compute on all-wrong groups",
        "displaced correct (LLD)",
        "Δ log-lik correct",
        "s / step",
        f"acc at {at} (mean ± std)",
        "samples generated",
        "wall time (s)",
    ]
    ks = sorted({k for row in rows for k in row.get("pass_at_k", {})})  # final checkpoints, `neggrad eval --pass-k`
    header += [f"pass@{k} (final)" for k in ks]
    cells = []
    for row in rows:
        pass_cells = []
        for k in ks:
            mean, std, n = row.get("pass_at_k", {}).get(k, (None, None, 0))
            text = fmt(mean) + (f" ± {std:.3f}" if std is not None else "")
            pass_cells.append(text if n == len(row["seeds"]) or mean is None else f"{text} ({n} seeds)")
        final = fmt(row["final_accuracy_mean"])
        if row["final_accuracy_std"] is not None:
            final += f" ± {row['final_accuracy_std']:.3f}"
        at_budget = fmt(row.get("accuracy_at_budget_mean"))
        if row.get("accuracy_at_budget_std") is not None:
            at_budget += f" ± {row['accuracy_at_budget_std']:.3f}"
        cells.append(
            [
                row["method"],
                str(len(row["seeds"])),
                fmt(row["accuracy_before"]),
                final,
                fmt(row["best_accuracy_mean"]),
                f"{fmt(row['steps_to_target_mean'], '.0f')} ({row['reached_target']}/{len(row['seeds'])})",
                fmt(row["all_wrong_learned_frac"], ".2f"),
                fmt(row.get("all_wrong_compute_frac"), ".2f"),
                fmt(row.get("displaced_frac"), ".3f"),
                fmt(row.get("delta_seq_mean"), "+.3f"),
                fmt(row["step_time_s"], ".2f"),
                at_budget,
                fmt(row.get("samples_spent_mean"), ",.0f"),
                fmt(row.get("seconds_spent_mean"), ".0f"),
                *pass_cells,
            ]
        )
    return header, cells


def compact_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The first five columns of :func:`table` (method, seeds, start, final mean ± std, best): what fits an
    80-column terminal; the rest is in report.md and report.html."""
    header, cells = table(rows)
    return ["method", "seeds", "start", "final (mean ± std)", "best"], [row[:5] for row in cells]


# ---------------------------------------------------------------- plots
@dataclass(frozen=True)
class Figure:
    """One plot: per method, each line is (curve of a run, style, moving-mean window, min-max band, legend).

    ``xlabel`` other than "step": the curves' x is compute, which differs between seeds, so the mean and band are
    taken over the seeds' curves interpolated at every x of any of them (each where its range covers x)."""

    title: str
    ylabel: str
    caption: str
    lines: tuple
    xlabel: str = "step"


FIGURES = {
    "accuracy.png": Figure(
        "greedy held-out accuracy",
        "accuracy",
        "Greedy held-out accuracy: mean over seeds (line), min to max (band), target (dotted). "
        "Dashed: accuracy of the sampled training completions, 5-step moving mean.",
        (
            (eval_curve, "o-", 1, True, None),
            (lambda r: metric_curve(r, ("accuracy",)), "--", 5, False, "sampled, 5-step mean"),
        ),
    ),
    "accuracy_samples.png": Figure(
        "greedy held-out accuracy against completions generated",
        "accuracy",
        "Greedy held-out accuracy against the completions generated so far (budget/samples: every generation "
        "round and hint re-generation), mean over seeds (line), min to max (band); dotted: the common budget of "
        "the table. A method that samples more per step moves right faster.",
        ((lambda r: eval_by_compute(r, "samples"), "o-", 1, True, None),),
        "completions generated",
    ),
    "accuracy_time.png": Figure(
        "greedy held-out accuracy against wall time",
        "accuracy",
        "Greedy held-out accuracy against the run's wall-clock seconds (budget/seconds; older runs: the sum of "
        "time/step), mean over seeds, min to max (band). Machine-dependent: compare runs made on the same "
        "hardware and load.",
        ((lambda r: eval_by_compute(r, "seconds"), "o-", 1, True, None),),
        "wall time (s)",
    ),
    "zero_variance.png": Figure(
        "groups without variance",
        "fraction of groups",
        "Fraction of sampled groups whose completions are all wrong or all correct, mean over seeds; "
        "dotted: the all-wrong part alone.",
        (
            (lambda r: metric_curve(r, ZERO_VARIANCE), "-", 1, True, None),
            (lambda r: metric_curve(r, ZERO_VARIANCE[:1]), ":", 1, False, "all wrong"),
        ),
    ),
    "entropy.png": Figure(
        "policy entropy",
        "entropy (nats)",
        "Mean token entropy of the policy on trained completions (policy/entropy).",
        ((lambda r: metric_curve(r, ("policy/entropy",)), "-", 1, True, None),),
    ),
    "lld.png": Figure(
        "Lazy Likelihood Displacement",
        "fraction of correct completions",
        "Fraction of the correct completions trained on whose log-likelihood the step's update lowered "
        "(lld/displaced_frac; arXiv:2505.18830 Def. 4.1 with eps = 0), 5-step moving mean over seeds, "
        "band min to max.",
        ((lambda r: metric_curve(r, ("lld/displaced_frac",)), "-", 5, True, None),),
    ),
    "lld_delta.png": Figure(
        "likelihood change of correct completions per update",
        "Δ log-likelihood (nats per sequence)",
        "Mean change of the sequence log-likelihood of the correct completions over each step's update "
        "(lld/delta_seq_mean), 5-step moving mean; higher is better, below 0 is displacement.",
        ((lambda r: metric_curve(r, ("lld/delta_seq_mean",)), "-", 5, True, None),),
    ),
    "lld_probe.png": Figure(
        "held-out correct answers since step 0",
        "Δ log-likelihood per token",
        "Probe set (docs/algorithms.md §6.3): mean per-token log-likelihood change of fixed held-out correct answers "
        "against step 0 (lld/probe/delta_tok_mean).",
        ((lambda r: metric_curve(r, ("lld/probe/delta_tok_mean",)), "o-", 1, True, None),),
    ),
    "clip.png": Figure(
        "clipped tokens",
        "fraction of tokens",
        "Fraction of tokens whose ratio was clipped (clip/low_frac + clip/high_frac).",
        ((lambda r: metric_curve(r, CLIP), "-", 1, True, None),),
    ),
}


def require_matplotlib() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend, or a ReportError that says how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ReportError("plots need matplotlib: pip install 'neggrad[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _aggregate(
    curves: list[dict[float, float]], *, interpolate: bool = False
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Steps (x), and the mean, min and max over the curves that have each x; ``interpolate``: over the curves
    whose range covers x, each interpolated there (:func:`value_at`)."""
    steps = sorted(set().union(*curves))
    if interpolate:
        at = [[v for v in (value_at(c, x) for c in curves) if v is not None] for x in steps]
    else:
        at = [[c[s] for c in curves if s in c] for s in steps]
    return steps, [statistics.fmean(v) for v in at], [min(v) for v in at], [max(v) for v in at]


def _moving_mean(values: list[float], window: int) -> list[float]:
    return [statistics.fmean(values[max(0, i + 1 - window) : i + 1]) for i in range(len(values))]


def place_legend(ax) -> None:
    """The legend right of the axes, outside the plot area, so it never covers a curve (saved with
    ``bbox_inches="tight"``, the figure grows to hold it)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small", frameon=False)


def write_plots(
    runs: list[Run], out_dir: Path, *, target: float | None, common_samples: float | None = None
) -> list[str]:
    """Write the FIGURES that have data; return their file names (``common_samples``: the table's common budget,
    when in samples, marked on accuracy_samples.png)."""
    plt = require_matplotlib()
    written = []
    for name, figure in FIGURES.items():
        fig, ax = plt.subplots(figsize=(7, 4))
        styles = set()
        for i, (method, members) in enumerate(group_by_method(runs).items()):
            for curve_of, style, window, band, legend in figure.lines:
                curves = [c for c in map(curve_of, members) if c]
                if not curves:
                    continue
                steps, mean, low, high = _aggregate(curves, interpolate=figure.xlabel != "step")
                label = method if legend is None else None
                ax.plot(steps, _moving_mean(mean, window), style, color=f"C{i}", label=label, markersize=3)
                if band and len(curves) > 1:
                    ax.fill_between(steps, low, high, color=f"C{i}", alpha=0.2, linewidth=0)
                styles.add((style, legend))
        if styles:
            for style, legend in sorted(s for s in styles if s[1]):
                ax.plot([], [], style, color="grey", label=legend)
            if name == "accuracy.png" and target is not None:
                ax.axhline(target, color="grey", linestyle=":", linewidth=1)
            if name == "accuracy_samples.png" and common_samples is not None:
                ax.axvline(common_samples, color="grey", linestyle=":", linewidth=1)
            ax.set(title=figure.title, xlabel=figure.xlabel, ylabel=figure.ylabel)
            ax.grid(alpha=0.3)
            place_legend(ax)
            fig.savefig(out_dir / name, dpi=110, bbox_inches="tight")
            written.append(name)
        plt.close(fig)
    return written


# ---------------------------------------------------------------- documents
HOW_TO_READ = [
    "Each row is one method over its seeds (the seeds column counts them; their ids are in summary.json); a seed "
    "fixes the model init, the SFT warm start and the sampling, so seed s of every method starts from the same "
    "policy. Accuracies are greedy pass@1 on the held-out set. Final: after the last step, mean ± sample std "
    "(n - 1) over seeds. Best: the best of each "
    "run's evaluations (before, every eval_steps, after), averaged; it picks the checkpoint on the test set, "
    "so it flatters every method alike.",
    "Steps to target: the first evaluated step whose accuracy reaches the target, averaged over the seeds that "
    "reach it (how many, in brackets). Evaluations happen every eval_steps, so that is its resolution. The "
    f"default target is the best method's mean start accuracy + {TARGET_MARGIN} (capped at 1); --target sets it.",
    "All-wrong groups learned from: the mean fraction of sampled groups whose completions were all wrong "
    "(groups/all_wrong_frac), counted only for methods that give such a group a gradient (advantage_estimator "
    "ngrpo, nsr or w_reinforce, or reinforce_rej with +-1 rewards, and no group_filter zero_std; or judge feedback, "
    "or a zero_variance.all_wrong strategy other than keep / drop). GRPO-style "
    "centring gives an all-wrong group zero advantage and DAPO drops it, so they score 0: this column is the "
    "share of the batch that only the negative-sample methods use. s / step: mean wall time of a training step.",
    "At the common budget: accuracy where every run has spent the same compute, so a method that samples more per "
    "step (dynamic sampling's refill rounds, hints) gets no credit for the extra samples. The budget is the least "
    "that any run of the report spent of the kind its runs' budget.* sets (completions generated when none or "
    "different kinds are set), i.e. the largest budget every arm reached; each run's greedy accuracy there is "
    "interpolated linearly between its two evaluations around it (with budget.eval_every, every run evaluates at "
    "the same fractions of the budget, and a budget run ends within one step of it, so this is at most one step's "
    "interpolation), then averaged over seeds (± sample std). Samples generated and wall time: what each run "
    "spent in all, mean over seeds (runs from before the budget/* metrics: samples from groups/gen_rounds and "
    "hint/extra_generations, time as the sum of time/step).",
    "Displaced correct (LLD): over all steps, the mean fraction of the correct completions a step trained on "
    "whose log-likelihood its update lowered (Lazy Likelihood Displacement, arXiv:2505.18830); Δ log-lik "
    "correct: their mean change in nats per sequence. A method that learns well from wrong answers without "
    "hurting right ones shows a low fraction and a positive Δ. '-' where a run did not log LLD.",
]


def _markdown(header: list[str], cells: list[list[str]], intro: str, figures: list[str]) -> str:
    lines = ["# neggrad comparison", "", intro, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    lines += ["", "## How to read this", ""]
    for paragraph in HOW_TO_READ:
        lines += [paragraph, ""]
    for name in figures:
        lines += [f"![{name}]({name})", "", FIGURES[name].caption, ""]
    return "\n".join(lines)


def _html(header: list[str], cells: list[list[str]], intro: str, figures: list[str]) -> str:
    def row(tag: str, values: list[str]) -> str:
        return "<tr>" + "".join(f"<{tag}>{html.escape(v)}</{tag}>" for v in values) + "</tr>"

    body = [f"<h1>neggrad comparison</h1>\n<p>{html.escape(intro)}</p>", "<table>", row("th", header)]
    body += [row("td", r) for r in cells]
    body += ["</table>", "<h2>How to read this</h2>"] + [f"<p>{html.escape(p)}</p>" for p in HOW_TO_READ]
    body += [
        f'<figure><img src="{n}" alt="{n}"><figcaption>{html.escape(FIGURES[n].caption)}</figcaption></figure>'
        for n in figures
    ]
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}td:first-child{text-align:left}"
        "img{max-width:100%}"
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>neggrad comparison</title>'
        f"<style>{style}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(runs: list[Run], out_dir: str | Path, *, target: float | None = None) -> dict:
    """Write report.md, report.html, summary.json and the plots into ``out_dir``; return summary.json's data."""
    out_dir = Path(out_dir)
    if (out_dir / "config.yaml").is_file():
        raise ReportError(f"{out_dir} is a run directory and the report would replace its summary.json: pass --out")
    if not runs:
        raise ReportError("no runs to report")
    chosen = target
    rows = summarize(runs, target=target)
    target = rows[0]["target"]
    out_dir.mkdir(parents=True, exist_ok=True)
    common = rows[0]["common_budget"] if rows[0]["budget_kind"] == "samples" else None
    figures = write_plots(runs, out_dir, target=target, common_samples=common)
    groups = group_by_method(runs)
    source = "set by --target" if chosen is not None else f"best mean start accuracy + {TARGET_MARGIN}"
    intro = (
        f"{len(runs)} runs of {len(groups)} methods ({', '.join(groups)}). "
        f"Target accuracy {'-' if target is None else f'{target:.3f}'} ({source})."
    )
    if rows[0]["common_budget"] is not None:
        intro += f" Common budget: {rows[0]['common_budget']:,.0f} {rows[0]['budget_kind']} (the least any run spent)."
    header, cells = table(rows)
    (out_dir / "report.md").write_text(_markdown(header, cells, intro, figures))
    (out_dir / "report.html").write_text(_html(header, cells, intro, figures))
    data = {
        "target": target,
        "target_source": source,
        "methods": rows,
        "runs": [str(r.path) for r in runs],
        "figures": figures,
    }
    (out_dir / "summary.json").write_text(json.dumps(data, indent=1))
    return data
