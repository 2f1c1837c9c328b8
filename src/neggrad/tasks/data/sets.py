"""The training and held-out prompt sets a ``data:`` config section describes, formatted as model inputs."""

from __future__ import annotations

import random

from neggrad.config import ColumnsConfig, DataConfig
from neggrad.tasks.data.prompts import format_prompt
from neggrad.tasks.data.registry import EVAL_SETS, eval_set
from neggrad.tasks.data.sources import AnswerFormat, Columns, MathExample, is_local, keep, read_rows, to_examples

MAX_DEFAULT_HOLDOUT = 500


def _columns(config: ColumnsConfig) -> Columns:
    return Columns(config.problem, config.answer, config.solution)


def _where(source: str, subset: str | None, split: str) -> str:
    if is_local(source):
        return source
    return f"{source}" + (f" ({subset})" if subset else "") + f" split {split!r}"


def load_rows(
    source: str,
    *,
    subset: str | None,
    split: str,
    columns: Columns,
    answer_format: AnswerFormat,
    filters: dict[str, list] | None = None,
    columns_key: str = "data.columns",
) -> list[tuple[str, str, str | None]]:
    """``(problem, answer, solution)`` rows of a file, hub id or registered eval set name, filtered.

    A registered name (``math500``) brings its own hub id, split, columns and answer format.
    """
    if source.lower() in EVAL_SETS and not is_local(source):
        entry = eval_set(source)
        columns_key = f"neggrad.tasks.data.EVAL_SETS[{source.lower()!r}].columns"  # a wrong entry is our bug
        source, subset, split = entry.hub_id, entry.subset, entry.split
        columns, answer_format = entry.columns, entry.answer_format
    where = _where(source, subset, split)
    rows = keep(read_rows(source, subset=subset, split=split), filters or {}, where)
    return to_examples(rows, columns=columns, answer_format=answer_format, where=where, key=columns_key)


def _format(rows, data: DataConfig, tokenizer) -> list[MathExample]:
    return [
        MathExample(
            prompt=format_prompt(
                problem,
                template=data.prompt_template,
                tokenizer=tokenizer,
                chat_template=data.chat_template,
                system_prompt=data.system_prompt,
            ),
            answer=answer,
            problem=problem,
            solution=solution,
        )
        for problem, answer, solution in rows
    ]


def load_prompt_sets(data: DataConfig, *, tokenizer=None) -> tuple[list[MathExample], list[MathExample]]:
    """(training examples, held-out examples) for ``data``, prompts formatted (chat template needs ``tokenizer``).

    Without ``data.eval_source`` a seeded draw of ``data.eval_size`` training rows (default a tenth, at most 500)
    is held out and never trained on; with it, the first ``data.eval_size`` rows of the eval source (default all).
    Filters apply to the training source only.
    """
    if data.source is None:
        raise ValueError("data.source is not set: there are no prompt sets to load (the testbed task is used)")
    train_rows = load_rows(
        data.source,
        subset=data.subset,
        split=data.split,
        columns=_columns(data.columns),
        answer_format=data.answer_format,
        filters=data.filters,
    )
    if data.eval_source is None:
        n_eval = data.eval_size or min(MAX_DEFAULT_HOLDOUT, max(1, len(train_rows) // 10))
        if n_eval >= len(train_rows):
            raise ValueError(
                f"data.source has {len(train_rows)} usable rows, too few to hold out {n_eval} for evaluation: "
                "set data.eval_source, or a smaller data.eval_size"
            )
        order = list(range(len(train_rows)))
        random.Random(f"neggrad-data-holdout|{data.seed}").shuffle(order)
        held_out = set(order[:n_eval])
        eval_rows = [train_rows[i] for i in sorted(held_out)]
        train_rows = [row for i, row in enumerate(train_rows) if i not in held_out]
    else:
        eval_rows = load_rows(
            data.eval_source,
            subset=data.eval_subset,
            split=data.eval_split,
            columns=_columns(data.eval_columns or data.columns),
            answer_format=data.eval_answer_format or data.answer_format,
            columns_key="data.eval_columns" if data.eval_columns else "data.columns",
        )[: data.eval_size]
    return _format(train_rows, data, tokenizer), _format(eval_rows, data, tokenizer)
