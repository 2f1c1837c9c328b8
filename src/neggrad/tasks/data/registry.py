"""Ready eval sets: the math benchmarks RLVR papers report, by hub id, split and column mapping.

Use a name as ``data.eval_source`` (or ``data.source``). Each entry says how its ids and columns were checked:
"card" means the dataset card's feature list (or an exact copy of it) was read; "docs" means another library's
documentation of its loader; "code" means only third-party loading code was seen, so the columns are the likeliest
names but unverified against the card. Check those before reporting numbers, and correct the entry here if the
hub disagrees. None was loaded from the hub while writing this (no network then).
"""

from __future__ import annotations

from dataclasses import dataclass

from neggrad.tasks.data.sources import AnswerFormat, Columns


@dataclass(frozen=True)
class EvalSet:
    """Where a benchmark lives on the hub and how to read it."""

    hub_id: str
    split: str
    columns: Columns
    size: int
    """Problems in the split, as the card (or code) states it."""
    checked: str
    """How hub id and columns were verified: "card", "docs" or "code" (see the module docstring)."""
    subset: str | None = None
    answer_format: AnswerFormat = "plain"


EVAL_SETS: dict[str, EvalSet] = {
    # Lightman et al. 2023 (arXiv:2305.20050) 500-problem MATH test subset; level is an int 1-5.
    "math500": EvalSet("HuggingFaceH4/MATH-500", "test", Columns("problem", "answer", "solution"), 500, "card"),
    # AIME 2024 I and II; the card says it is taken from AI-MO/aimo-validation-aime.
    "aime24": EvalSet("HuggingFaceH4/aime_2024", "train", Columns("problem", "answer", "solution"), 30, "card"),
    # AIME 2025 I and II as MathArena uses them (answer is an int); checked against its eval.yaml field spec.
    "aime25": EvalSet("MathArena/aime_2025", "train", Columns("problem", "answer"), 30, "card"),
    # AMC 2023, 40 problems; columns seen in loading code only (answer may be a float: 27.0 is read as "27").
    "amc23": EvalSet("math-ai/amc23", "test", Columns("question", "answer"), 40, "code"),
    # Minerva math (Lewkowycz et al. 2022, arXiv:2206.14858), 272 problems; columns seen in loading code only.
    "minerva": EvalSet("math-ai/minervamath", "test", Columns("question", "answer"), 272, "code"),
    # OlympiadBench text-only English math (He et al. 2024, arXiv:2402.14008), 674 problems; final_answer is a
    # list (joined by ", "); columns seen in loading code only.
    "olympiadbench": EvalSet("math-ai/olympiadbench", "test", Columns("question", "final_answer"), 674, "code"),
    # GSM8K (Cobbe et al. 2021, arXiv:2110.14168); the answer column is a worked solution ending "#### 72".
    "gsm8k": EvalSet("openai/gsm8k", "test", Columns("question", "answer"), 1319, "docs", "main", "gsm8k"),
}


def eval_set(name: str) -> EvalSet:
    """The registered eval set ``name`` (case-insensitive); KeyError listing the names otherwise."""
    try:
        return EVAL_SETS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown eval set {name!r}; choose one of {', '.join(EVAL_SETS)}") from None
