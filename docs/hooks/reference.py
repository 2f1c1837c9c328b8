"""mkdocs hook: the config and metrics references, generated from the code at every build so they cannot drift.

- ``reference/config.md`` walks ``neggrad.config.Config``: every key, its type, default and docstring.
- ``reference/metrics.md`` lists ``neggrad.trainer.metrics.METRICS``.

Both pages exist only in the built site (``File.generated``); nothing is written into ``docs/``.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel

from neggrad.config import Config
from neggrad.trainer.metrics import METRICS

CONFIG_PAGE = "reference/config.md"
METRICS_PAGE = "reference/metrics.md"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def type_name(annotation: Any) -> str:
    """A short, readable type: ``int``, ``float | None``, ``"grpo" | "dapo"``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(value) for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(type_name(arg) for arg in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _section(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (also through ``Model | None``), or None for a plain value."""
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def config_sections(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, list[tuple]]]:
    """``(section key, section docstring, rows)`` for ``model`` and every nested section, depth first.

    A row is ``(dotted key, type, default as YAML/JSON text, docstring)``.
    """
    rows, nested = [], []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _section(field.annotation)
        if section is not None and field.default is None and field.default_factory is None:
            rows.append((key, type_name(field.annotation), "null", field.description or ""))
            nested.append((key, section))
            continue
        if section is not None:
            nested.append((key, section))
            continue
        default = field.get_default(call_default_factory=True)
        rows.append((key, type_name(field.annotation), json.dumps(default), field.description or ""))
    out = [(prefix.rstrip("."), (model.__doc__ or "").strip(), rows)]
    for key, section in nested:
        out.extend(config_sections(section, f"{key}."))
    return out


def config_page() -> str:
    lines = [
        "# Config reference",
        "",
        "Generated from `neggrad.config.Config` at build time: every key, its type, its default and its help text",
        "(the field's docstring). Set keys in YAML (`nthr: {eta: 0.5}`) or on the command line",
        "(`nthr.eta=0.5`). A method preset (`method: ngrpo`) fills the keys a file leaves unset; the defaults",
        "below are the model's, before any preset: `neggrad config --config my.yaml` prints a resolved config.",
        "",
    ]
    for section, doc, rows in config_sections():
        title = f"`{section}`" if section else "Top level"
        lines += [f"## {title}", ""]
        if doc and section:
            lines += [" ".join(doc.split()), ""]
        if not rows:
            continue
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for key, kind, default, description in rows:
            lines.append(f"| `{key}` | {_cell(kind)} | `{_cell(default)}` | {_cell(description)} |")
        lines.append("")
    return "\n".join(lines)


def metrics_page() -> str:
    lines = [
        "# Metrics reference",
        "",
        "Generated from `neggrad.trainer.metrics.METRICS` at build time. Each training step writes one line of",
        "`metrics.jsonl` with these keys (a key appears only on steps where it applies).",
        "",
        "| metric | meaning |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {_cell(meaning)} |" for name, meaning in METRICS.items()]
    return "\n".join(lines) + "\n"


def on_files(files, config):
    """mkdocs event: add the generated pages to the site."""
    from mkdocs.structure.files import File

    for path, content in ((CONFIG_PAGE, config_page()), (METRICS_PAGE, metrics_page())):
        files.append(File.generated(config, path, content=content))
    return files
