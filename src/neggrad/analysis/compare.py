"""Several methods on one budget and the same seeds, one run directory each: ``OUT/METHOD/seed-S/``.

Every run gets the same config file and overrides, then ``method=METHOD`` and ``seed=S`` on top, so
only the preset differs between methods. Runs go one after another (``run_compare``), or several at once
(``run_parallel``, ``--jobs N``: each run a ``neggrad train`` subprocess with its share of the cores). Rerunning
the same command keeps finished runs (``summary.json`` says completed), resumes interrupted ones from their last
checkpoint and restarts any that stopped before their first checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from neggrad.config import Config, build_config, dump_config, parse_override
from neggrad.config.presets import PRESETS
from neggrad.trainer.checkpoint import list_checkpoints

logger = logging.getLogger(__name__)

RunStatus = Literal["completed", "resume", "new"]
Runner = Callable[..., dict]
"""``runner(config, run_dir, resume=bool) -> summary``, e.g. ``neggrad.trainer.loop.train``."""


class CompareError(ValueError):
    """A comparison that cannot start or continue: the message says what to change."""


@dataclass(frozen=True)
class PlannedRun:
    """One (method, seed) cell of the comparison and where it is written."""

    method: str
    seed: int
    config: Config
    run_dir: Path


def parse_methods(text: str) -> list[str]:
    """``"grpo, ngrpo,dapo"`` -> ``["grpo", "ngrpo", "dapo"]``; names are checked by ``plan_runs``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise CompareError(f"--methods {text!r} names no method: give a list such as grpo,ngrpo,dapo")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise CompareError(f"--methods lists {', '.join(repeated)} more than once: add seeds with --seeds instead")
    return names


def plan_runs(raw: dict, overrides: list[str], *, methods: list[str], seeds: int, out: Path) -> list[PlannedRun]:
    """Build and validate every run's config before any training (an unknown method is a ConfigError)."""
    if seeds < 1:
        raise CompareError(f"--seeds must be at least 1, got {seeds}")
    pinned = sorted((set(raw) | {parse_override(o)[0][0] for o in overrides}) & set(PRESETS["grpo"].values))
    if pinned:
        logger.warning(
            "the config sets %s, which every method's preset sets too: all methods will use your value",
            ", ".join(pinned),
        )
    return [
        PlannedRun(
            method,
            seed,
            build_config(raw, [*overrides, f"method={method}", f"seed={seed}"]),
            Path(out) / method / f"seed-{seed}",
        )
        for method in methods
        for seed in range(seeds)
    ]


def read_study(path: Path) -> tuple[Path, int | None, list[str], dict[str, list[str]]]:
    """A study file: ``config`` (path, relative to the study file or the working folder), optional ``seeds``,
    ``overrides`` (for every arm) and ``arms`` (name -> list of key=value overrides). Returns them checked."""
    try:
        study = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise CompareError(f"cannot read study {path}: {err}") from None
    unknown = set(study) - {"config", "seeds", "overrides", "arms"}
    if unknown or not isinstance(study.get("arms"), dict) or not study["arms"] or "config" not in study:
        raise CompareError(
            f"{path}: a study needs `config: FILE` and `arms: {{name: [key=value, ...]}}` (optional `seeds`, "
            f"`overrides`){'; unknown keys: ' + ', '.join(sorted(unknown)) if unknown else ''}"
        )
    config = Path(study["config"])
    if not config.is_absolute() and not config.exists() and (path.parent / config).exists():
        config = path.parent / config
    arms = {}
    for name, values in study["arms"].items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise CompareError(f"{path}: arm {name!r} must be a list of key=value strings, got {values!r}")
        arms[str(name)] = values
    return config, study.get("seeds"), list(study.get("overrides") or []), arms


def plan_arms(
    raw: dict, overrides: list[str], *, arms: dict[str, list[str]], seeds: int, out: Path
) -> list[PlannedRun]:
    """Like ``plan_runs`` for named arms (a study): each arm's overrides on top, ``label`` = the arm's name,
    runs in OUT/ARM/seed-S."""
    if seeds < 1:
        raise CompareError(f"--seeds must be at least 1, got {seeds}")
    return [
        PlannedRun(
            name,
            seed,
            build_config(raw, [*overrides, *values, f"label={name}", f"seed={seed}"]),
            Path(out) / name / f"seed-{seed}",
        )
        for name, values in arms.items()
        for seed in range(seeds)
    ]


def _differences(saved: dict, wanted: dict, defaults: dict, prefix: str = "") -> list[str]:
    """Keys whose value differs; a key the saved config lacks (written by an older neggrad) counts as
    unchanged when the wanted value is that key's default, so new options do not orphan finished runs."""
    diffs = []
    for key in sorted(set(saved) | set(wanted)):
        old, new, default = saved.get(key), wanted.get(key), (defaults or {}).get(key)
        if key not in saved and new == default:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            diffs += _differences(old, new, default if isinstance(default, dict) else {}, f"{prefix}{key}.")
        elif old != new:
            diffs.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return diffs


def run_status(run: PlannedRun) -> RunStatus:
    """Whether ``run`` is done, can resume from a checkpoint, or must (re)start; a run trained with another
    config is a CompareError, since reusing it would compare runs of different budgets."""
    saved = run.run_dir / "config.yaml"
    if saved.is_file():
        defaults = Config().model_dump(mode="json")
        diffs = _differences(yaml.safe_load(saved.read_text()) or {}, run.config.model_dump(mode="json"), defaults)
        if diffs:
            raise CompareError(
                f"{run.run_dir} was trained with another config ({'; '.join(diffs[:3])}): rerun with the same "
                "config and overrides, or choose another --out"
            )
    if _summary_status(run.run_dir / "summary.json") == "completed":
        return "completed"
    if list_checkpoints(run.run_dir / "checkpoints"):
        return "resume"
    return "new"


def _summary_status(path: Path) -> str | None:
    """``status`` of a ``summary.json``; None when there is none, or it was torn by a crash mid-write (the run then
    resumes from its last checkpoint and writes it again)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("status")
    except (ValueError, AttributeError):
        logger.warning("%s is unreadable (torn by a crash?): the run is treated as unfinished", path)
        return None


def _clear_unfinished(run_dir: Path) -> None:
    """Remove what a run left before its first checkpoint, so it can start again from step 0."""
    leftovers = [run_dir / n for n in ("metrics.jsonl", "summary.json", "samples", "checkpoints")]
    if any(p.exists() for p in leftovers):
        logger.warning("%s stopped before its first checkpoint: starting it again", run_dir)
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run_compare(
    runs: list[PlannedRun],
    *,
    runner: Runner | None = None,
    on_run: Callable[[int, PlannedRun, RunStatus], None] | None = None,
) -> list[dict]:
    """Train each run that is not completed, in order; stop after a run that does not complete (Ctrl-C).

    Args:
        runs: from ``plan_runs``; every status is checked before the first run trains.
        runner: ``runner(config, run_dir, resume=...) -> summary``; default ``neggrad.trainer.loop.train``.
        on_run: called before each run with its 0-based index, the run and its status.

    Returns:
        The summaries in plan order, up to and including an interrupted run.
    """
    if runner is None:
        from neggrad.trainer.loop import train as runner
    statuses = [run_status(run) for run in runs]
    summaries = []
    for index, (run, status) in enumerate(zip(runs, statuses, strict=True)):
        if on_run is not None:
            on_run(index, run, status)
        if status == "completed":
            summaries.append(json.loads((run.run_dir / "summary.json").read_text()))
            continue
        if status == "new":
            _clear_unfinished(run.run_dir)
        summary = runner(run.config, run.run_dir, resume=status == "resume")
        summaries.append(summary)
        if summary.get("status") != "completed":
            break
    return summaries


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LOG_NAME = "train.log"
"""What a run trained by ``run_parallel`` printed, appended to ``RUN_DIR/train.log`` (each attempt after a header)."""


@dataclass(frozen=True)
class RunOutcome:
    """How a run of ``run_parallel`` ended: ``completed`` or ``interrupted`` (``summary`` from its summary.json, or
    None for a run stopped before it wrote one), or ``failed`` (``returncode`` and ``error``: its last line)."""

    status: Literal["completed", "interrupted", "failed"]
    summary: dict | None = None
    returncode: int = 0
    error: str = ""


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, which a container or ``taskset`` can narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """Torch threads for each of ``jobs`` runs at once: an equal share of the cores, at least one."""
    return max(1, (cores or available_cores()) // jobs)


def train_command(run: PlannedRun, status: RunStatus, config_file: Path) -> list[str]:
    """``neggrad train`` for one run: a new run from its written config, an interrupted one with ``--resume``."""
    base = [sys.executable, "-m", "neggrad.cli", "train"]
    if status == "resume":
        return [*base, "--resume", str(run.run_dir)]
    return [*base, "--config", str(config_file), "--run-dir", str(run.run_dir)]


def warm_start_to_build(run: PlannedRun) -> str | None:
    """The SFT warm start a new testbed run would train before its first step (its cache key), or None when it
    needs none or finds it cached. Two runs that would build the same one are not started together."""
    cfg = run.config
    if cfg.model.name_or_path != "testbed" or not cfg.sft.enabled:
        return None
    from neggrad.models.testbed.sft import cache_key, is_cached

    seed = cfg.seed if cfg.sft.seed is None else cfg.sft.seed
    if is_cached(cfg.model.testbed, cfg.task, cfg.sft, seed=seed):
        return None
    return cache_key(cfg.model.testbed, cfg.task, cfg.sft, seed=seed)


@dataclass
class _Job:
    process: subprocess.Popen
    reader: threading.Thread
    log: object
    last_line: list[str]
    builds: str | None = None  # what it builds that others wait for (``warm_start_to_build``)
    signalled: int = 0  # how many of the received signals were passed on to it


def run_parallel(
    runs: list[PlannedRun],
    *,
    jobs: int,
    command: Callable[[PlannedRun, RunStatus, Path], list[str]] | None = None,
    builds: Callable[[PlannedRun], str | None] = warm_start_to_build,
    env: dict[str, str] | None = None,
    on_run: Callable[[int, PlannedRun, RunStatus], None] | None = None,
    on_line: Callable[[int, PlannedRun, str], None] | None = None,
    on_done: Callable[[int, PlannedRun, RunOutcome], None] | None = None,
) -> list[RunOutcome | None]:
    """Train the runs that are not completed, up to ``jobs`` at once, each in its own process.

    Runs start in plan order, except that a new run waits while a running one builds what it would build too
    (``builds``: the same SFT warm start), and a later run takes its place. Each process gets
    ``OMP_NUM_THREADS`` = ``threads_per_job`` (cores split between the jobs actually running at once), its output
    in ``RUN_DIR/train.log``; every line it writes to stderr is also passed to ``on_line``. A run that fails
    (non-zero exit) is reported to ``on_done`` and the others go on. SIGINT / SIGTERM are passed on to every
    running process (the first: each finishes its step and saves a checkpoint; again: they stop at once) and no
    further run starts; so does a run that ends interrupted.

    Args:
        runs: from ``plan_runs`` / ``plan_arms``; every status is checked before the first run starts.
        jobs: how many runs train at once (>= 1).
        command: ``command(run, status, config_file) -> argv`` of one run; default ``train_command``.
        builds: ``builds(run) -> key``: a shared artifact a new run would build first, None when nothing is left
            to build; default ``warm_start_to_build``.
        env: variables set for every run's process on top of this one's.
        on_run: called as each run is reached, with its 0-based index, the run and its status.
        on_line: called with each stderr line (no newline) of a run's process, from a reader thread.
        on_done: called as each started run ends.

    Returns:
        One outcome per run in plan order (a completed run kept from before: ``completed`` with its summary);
        None for a run never started because the comparison was interrupted.
    """
    if jobs < 1:
        raise CompareError(f"--jobs must be at least 1, got {jobs}")
    command = command or train_command
    statuses = [run_status(run) for run in runs]
    to_train = sum(status != "completed" for status in statuses)
    threads = threads_per_job(max(1, min(jobs, to_train)))
    logger.info("%d runs at a time, torch threads per run: %d", max(1, min(jobs, to_train)), threads)
    child_env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    outcomes: list[RunOutcome | None] = [None] * len(runs)
    running: dict[int, _Job] = {}
    signals: list[int] = []  # received so far; the loop passes each on to every running process
    stopping = False  # a signal, or a run that ended interrupted: start no further run

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda signum, frame: signals.append(signum)) for sig in STOP_SIGNALS}
    try:
        with tempfile.TemporaryDirectory(prefix="neggrad-compare-") as tmp:
            _keep_completed(runs, statuses, outcomes, on_run)
            queue = [index for index, status in enumerate(statuses) if status != "completed"]
            while running or (queue and not stopping):
                stopping = stopping or bool(signals)
                while queue and not stopping and len(running) < jobs:
                    ready = _next_ready(queue, runs, statuses, running, builds)
                    if ready is None:
                        break  # every queued run waits for a build under way
                    index, key = ready
                    queue.remove(index)
                    run, status = runs[index], statuses[index]
                    if on_run is not None:
                        on_run(index, run, status)
                    running[index] = _start(index, run, status, Path(tmp), command, child_env, on_line)
                    running[index].builds = key
                stopping = _collect_finished(running, runs, signals, outcomes, on_done) or stopping
                time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for job in running.values():  # only after an error of this process: let each run save and stop
            job.process.terminate()
            job.process.wait()
    return outcomes


def _keep_completed(runs, statuses, outcomes: list, on_run) -> None:
    """Outcomes of the runs completed before this comparison started, from their summary.json."""
    for index, (run, status) in enumerate(zip(runs, statuses, strict=True)):
        if status == "completed":
            if on_run is not None:
                on_run(index, run, status)
            outcomes[index] = RunOutcome("completed", json.loads((run.run_dir / "summary.json").read_text()))


def _collect_finished(running: dict, runs, signals: list, outcomes: list, on_done) -> bool:
    """Pass pending signals on, record the jobs that ended (removed from ``running``); True if one ended
    interrupted (then no further run starts)."""
    interrupted = False
    for index, job in list(running.items()):
        if not _pass_signals_and_poll(job, signals):
            continue
        del running[index]
        outcomes[index] = outcome = _finish(runs[index], job, interrupted=bool(signals))
        interrupted = interrupted or outcome.status == "interrupted"
        if on_done is not None:
            on_done(index, runs[index], outcome)
    return interrupted


def _next_ready(queue: list[int], runs, statuses, running: dict, builds) -> tuple[int, str | None] | None:
    """The first queued run that does not wait for a build another running job is doing, with its build key."""
    claimed = {job.builds for job in running.values()} - {None}
    for index in queue:
        key = builds(runs[index]) if statuses[index] == "new" else None
        if key is None or key not in claimed:
            return index, key
    return None


def _pass_signals_and_poll(job: _Job, signals: list[int]) -> bool:
    """Send ``job`` the signals it has not seen yet (while it runs); whether its process has ended."""
    for signum in signals[job.signalled :]:
        if job.process.poll() is None:
            job.process.send_signal(signum)
    job.signalled = len(signals)
    return job.process.poll() is not None


def _start(index, run, status, tmp: Path, command, env, on_line) -> _Job:
    if status == "new":
        _clear_unfinished(run.run_dir)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    config_file = tmp / f"run-{index}.yaml"
    config_file.write_text(dump_config(run.config))
    argv = command(run, status, config_file)
    log = (run.run_dir / LOG_NAME).open("a", encoding="utf-8")
    threads = env["OMP_NUM_THREADS"]
    log.write(f"==> {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv[1:])} (OMP_NUM_THREADS={threads})\n")
    log.flush()
    # a session of its own: a Ctrl-C at the terminal reaches only this process, which passes it on once
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    last_line = [""]

    def read() -> None:
        for line in process.stderr:
            log.write(line)
            log.flush()
            if line.strip():
                last_line[0] = line.strip()
                if on_line is not None:
                    try:
                        on_line(index, run, line.rstrip())
                    except Exception:  # a display error must not stop the draining (a full pipe blocks the run)
                        logger.exception("showing a line of %s failed", run.run_dir)

    reader = threading.Thread(target=read, name=f"compare-run-{index}", daemon=True)
    reader.start()
    return _Job(process, reader, log, last_line)


def _finish(run: PlannedRun, job: _Job, *, interrupted: bool) -> RunOutcome:
    job.reader.join()
    job.log.close()
    code = job.process.returncode
    if code == 0:
        summary = json.loads((run.run_dir / "summary.json").read_text())
        return RunOutcome("completed" if summary.get("status") == "completed" else "interrupted", summary)
    if interrupted:  # stopped by the signal before its loop could save (while loading, or a second signal)
        return RunOutcome("interrupted", None, code, job.last_line[0])
    return RunOutcome("failed", None, code, job.last_line[0] or f"exit code {code}")
