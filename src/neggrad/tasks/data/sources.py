"""Prompt sets from local files (JSONL, JSON, Parquet) or the Hugging Face hub, read through a column mapping.

A *source* string is a local file when it names one (or ends in .jsonl / .json / .parquet), else a hub id read with
``datasets.load_dataset(source, subset, split=split)``. Rows become :class:`MathExample` records: the problem text,
the gold answer as text, and an optional reference solution. A mapped column the rows lack is an error that names
it and lists the columns there are.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from neggrad.config.paths import is_package_path, resolve_package_path
from neggrad.tasks.verifiers.math import last_boxed

logger = logging.getLogger(__name__)

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
AnswerFormat = Literal["plain", "boxed", "gsm8k"]


@dataclass(frozen=True)
class Columns:
    """Names of the columns holding the problem, the gold answer and (optionally) a worked solution."""

    problem: str = "problem"
    answer: str = "answer"
    solution: str | None = None


@dataclass(frozen=True)
class MathExample:
    """One prompt of a math task; ``prompt`` is the model's input, the rest is kept for verifiers and judges."""

    prompt: str
    """The formatted model input (template or chat template applied)."""
    answer: str
    """Gold answer as text: ``"\\frac{1}{2}"``, ``"72"``."""
    problem: str
    """The raw problem text."""
    solution: str | None = None
    """A worked reference solution, when the data has one."""


def split_json_key(source: str) -> tuple[str, str | None]:
    """``"file.json#problems"`` -> ``("file.json", "problems")``: the rows are under that top-level key of the file.

    Only for .json names (a file whose real name holds "#" is read as it is); anything else -> ``(source, None)``.
    """
    base, sep, key = source.rpartition("#")
    if sep and key and Path(base).suffix.lower() == ".json" and not Path(source).is_file():
        return base, key
    return source, None


def is_local(source: str) -> bool:
    """True when ``source`` names a local file (existing, with a data-file suffix, or ``pkg://``) not a hub id."""
    if is_package_path(source):
        return True
    source = split_json_key(source)[0]
    return Path(source).suffix.lower() in LOCAL_SUFFIXES or Path(source).is_file()


def read_local(path: str | Path) -> list[dict]:
    """Rows of a .jsonl (one object per line), .json or .parquet file.

    A .json file may hold a list of objects, an object with one list of objects in it (``{"data": [...]}``), or an
    object of objects keyed by id (each row then gets the key as ``"id"`` unless it has one); ``file.json#key``
    reads the value under ``key`` that way (e.g. ``v0.json#problems`` of the CHAMP data set). ``pkg://PACKAGE/...``
    names a file inside an installed package (:mod:`neggrad.config.paths`).
    """
    path, json_key = split_json_key(str(path))
    path = Path(resolve_package_path(path, key="data source"))
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path} line {number} is not JSON: {err.msg}") from None
        return _objects(rows, path)
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON (line {err.lineno}: {err.msg})") from None
        if json_key is not None:
            if not isinstance(data, dict) or json_key not in data:
                keys = ", ".join(map(str, data)) if isinstance(data, dict) else f"none (a {type(data).__name__})"
                raise ValueError(f"{path} has no top-level key {json_key!r}; its keys: {keys}")
            data = data[json_key]
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) == 1:
                data = lists[0]
            elif data and all(isinstance(v, dict) for v in data.values()):
                data = [{"id": key, **row} for key, row in data.items()]
        return _objects(data, path)
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from None
        return pq.read_table(path).to_pylist()
    raise ValueError(f"{path}: unknown data file type {suffix!r}; use one of {', '.join(LOCAL_SUFFIXES)}")


def _objects(rows: Any, path: Path) -> list[dict]:
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path} must hold a list of objects (one per problem), got {type(rows).__name__}")
    return rows


def read_hub(hub_id: str, *, subset: str | None, split: str) -> list[dict]:
    """Rows of split ``split`` of a hub data set (cached by ``datasets``; offline mode reads only the cache)."""
    try:
        import datasets
    except ImportError:
        raise ImportError(
            f"loading {hub_id!r} from the hub needs the datasets package: pip install datasets"
        ) from None
    try:
        dataset = datasets.load_dataset(hub_id, subset, split=split)
    except Exception as err:  # noqa: BLE001 (datasets raises many types; the user needs the one-line cause)
        cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"cannot load {hub_id!r} (subset {subset!r}, split {split!r}) from the hub: {cause}. "
            f"For a local file use a path ending in {', '.join(LOCAL_SUFFIXES)}"
        ) from None
    return list(dataset)


def read_rows(source: str, *, subset: str | None = None, split: str = "train") -> list[dict]:
    """Rows of ``source``: a local file, else a hub id."""
    return read_local(source) if is_local(source) else read_hub(source, subset=subset, split=split)


def _answer_text(value: Any, answer_format: AnswerFormat) -> str | None:
    """The gold answer as text; None when the row has none."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        value = ", ".join(_answer_text(v, "plain") or "" for v in value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)  # 27.0 -> "27"
    text = str(value).strip()
    if answer_format == "boxed":
        return last_boxed(text)
    if answer_format == "gsm8k":
        if "####" not in text:
            return None
        return text.rsplit("####", 1)[1].strip().replace(",", "")
    return text or None


def check_columns(rows: Sequence[dict], needed: dict[str, str], where: str) -> None:
    """Raise ValueError naming the first ``needed`` column (``{config_key: column}``) missing from ``rows``."""
    available = list(dict.fromkeys(key for row in rows[:100] for key in row))
    for key, column in needed.items():
        if not any(column in row for row in rows[:100]):
            raise ValueError(
                f"{key} = {column!r} is not a column of {where}; its columns are: {', '.join(available)} "
                f"(set {key} to one of them)"
            )


def keep(rows: Iterable[dict], filters: dict[str, list], where: str, key: str = "data.filters") -> list[dict]:
    """Rows whose value in every filter column is one of the listed values (compared as text: 3 matches "3")."""
    rows = list(rows)
    if rows and filters:
        check_columns(rows, {f"{key}.{column}": column for column in filters}, where)
    kept = rows
    for column, allowed in filters.items():
        allowed_text = {str(v) for v in allowed}
        before = kept
        kept = [row for row in kept if str(row.get(column)) in allowed_text]
        if not kept:
            seen = sorted({str(row.get(column)) for row in before})[:10]
            raise ValueError(
                f"{key}.{column} = {list(allowed)} keeps none of the {len(before)} rows of {where}; "
                f"values there: {', '.join(seen)}"
            )
    return kept


def to_examples(
    rows: Sequence[dict],
    *,
    columns: Columns,
    answer_format: AnswerFormat = "plain",
    where: str,
    key: str = "data.columns",
) -> list[tuple[str, str, str | None]]:
    """``(problem, answer, solution)`` of every row that has a problem and an answer, in order.

    Rows without either are skipped (and counted in a warning); if none is left that is an error.
    """
    needed = {f"{key}.problem": columns.problem, f"{key}.answer": columns.answer}
    if columns.solution is not None:
        needed[f"{key}.solution"] = columns.solution
    if not rows:
        raise ValueError(f"{where} has no rows")
    check_columns(rows, needed, where)
    out, skipped = [], 0
    for row in rows:
        problem = row.get(columns.problem)
        answer = _answer_text(row.get(columns.answer), answer_format)
        if not isinstance(problem, str) or not problem.strip() or not answer:
            skipped += 1
            continue
        solution = row.get(columns.solution) if columns.solution else None
        out.append((problem.strip(), answer, None if solution is None else str(solution)))
    if skipped:
        logger.warning("%s: skipped %d of %d rows without a problem or an answer", where, skipped, len(rows))
    if not out:
        raise ValueError(
            f"no row of {where} has both a problem ({columns.problem!r}) and an answer ({columns.answer!r}"
            f" read as {answer_format})"
        )
    return out
