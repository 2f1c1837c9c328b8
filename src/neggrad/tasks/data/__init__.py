"""Prompt sets for real-model training and evaluation: local files or hub data sets, column maps, eval registry."""

from neggrad.tasks.data.registry import EVAL_SETS, EvalSet, eval_set
from neggrad.tasks.data.sets import load_prompt_sets, load_rows
from neggrad.tasks.data.sources import Columns, MathExample

__all__ = ["EVAL_SETS", "Columns", "EvalSet", "MathExample", "eval_set", "load_prompt_sets", "load_rows"]
