"""Reading a config: YAML files, dotted command-line overrides, presets, errors that name the key; and
which keys a resumed run may change."""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from neggrad.config.base import ConfigError
from neggrad.config.schema import Config


def _suggest(loc: tuple) -> str:
    """ ", did you mean 'learning_rate'?" for a misspelt key, found among its section's fields."""
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        annotation = model.model_fields.get(str(part))
        inner = getattr(annotation, "annotation", None)
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return ""
        model = inner
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f", did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?" if close else ""


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"unknown config key {loc!r}{_suggest(first['loc'])} (`neggrad config` prints every valid key)"
    msg = first["msg"].removeprefix("Value error, ")
    if kind in ("value_error", "assertion_error"):  # our validators name their keys and values themselves
        return msg
    return f"{loc}: {msg} (got {first.get('input')!r})" if "input" in first else f"{loc}: {msg}"


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML, so 1e-5, true, null and lists work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value (example: learning_rate=1e-5)")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise ConfigError(f"override {text!r} has no key (example: learning_rate=1e-5)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"override {key}={raw}: the value must be a finite number")
    return key.split("."), value


def _set_dotted(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {'.'.join(path)}: {part!r} is a value, not a section")
        node = child
    node[path[-1]] = value


def read_yaml(path: str | Path) -> dict:
    """Read a config file into a plain dict; a missing or malformed file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def build_config(raw: dict | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Raw dict (from YAML) + ``key.sub=value`` overrides -> validated Config with its method preset applied."""
    from neggrad.config.presets import apply_preset  # noqa: PLC0415 (methods imports this module)

    tree = dict(raw or {})
    for text in overrides:
        path, value = parse_override(text)
        _set_dotted(tree, path, value)
    try:
        return Config.model_validate(apply_preset(tree))
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    except ValueError as err:
        raise ConfigError(str(err)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML file (or the defaults) and apply overrides; raise ConfigError on any problem."""
    return build_config(read_yaml(path) if path else {}, overrides)


def dump_config(config: Config) -> str:
    """The resolved config as YAML, every key explicit, so a run directory fully describes its run."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


RESUME_KEYS = (
    "max_steps",
    "eval_steps",
    "eval_avg_k",
    "save_steps",
    "save_total_limit",
    "num_samples_logged",
    "report_to",
    "budget.samples",
    "budget.tokens",
    "budget.seconds",
    "budget.eval_every",
    "lld.probe_every",
    "model.gradient_checkpointing",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
)
"""Keys ``neggrad train --resume RUN key=value`` may change: the budget (max_steps, budget.*), the evaluation,
checkpoint and logging cadence, and memory-only settings (the micro-batch split only with the same completions per
optimizer step). None changes what was already trained; every other key is refused."""


def config_changes(old: Config, new: Config) -> dict[str, list]:
    """``{dotted key: [old value, new value]}`` of every leaf that differs between two configs."""

    def flat(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out

    before, after = flat(old.model_dump(mode="json")), flat(new.model_dump(mode="json"))
    return {key: [before.get(key), after.get(key)] for key in {**before, **after} if before.get(key) != after.get(key)}


def check_resume_changes(changes: dict[str, list], old: Config, new: Config) -> None:
    """Raise ConfigError unless every change of a resumed run's config is one of RESUME_KEYS (and the micro-batch
    split keeps the completions per optimizer step)."""
    refused = [key for key in changes if key not in RESUME_KEYS]
    if refused:
        raise ConfigError(
            f"--resume cannot change {', '.join(refused)}: it would change what was already trained; "
            f"keys that may change: {', '.join(RESUME_KEYS)}"
        )
    per_step = [c.per_device_train_batch_size * c.gradient_accumulation_steps for c in (old, new)]
    if per_step[0] != per_step[1]:
        raise ConfigError(
            f"--resume may split the batch differently but not resize it: per_device_train_batch_size * "
            f"gradient_accumulation_steps must stay {per_step[0]} (got {per_step[1]})"
        )
