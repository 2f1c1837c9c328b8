"""Several methods on one budget and the same seeds, one run directory each: ``OUT/METHOD/seed-S/``.

Every run gets the same config file and overrides, then ``method=METHOD`` and ``seed=S`` on top, so
only the preset differs between methods. Runs go one after another. Rerunning the same command keeps
finished runs (``summary.json`` says completed), resumes interrupted ones from their last checkpoint
and restarts any that stopped before their first checkpoint.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from neggrad.checkpoint import list_checkpoints
from neggrad.config import Config, build_config, parse_override
from neggrad.methods import PRESETS

logger = logging.getLogger(__name__)

RunStatus = Literal["completed", "resume", "new"]
Runner = Callable[..., dict]
"""``runner(config, run_dir, resume=bool) -> summary``, e.g. ``neggrad.train.train``."""


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
        runner: ``runner(config, run_dir, resume=...) -> summary``; default ``neggrad.train.train``.
        on_run: called before each run with its 0-based index, the run and its status.

    Returns:
        The summaries in plan order, up to and including an interrupted run.
    """
    if runner is None:
        from neggrad.train import train as runner
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
