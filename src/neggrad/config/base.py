"""What every config section shares: strict keys, attribute docstrings as help, one error type."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

NTHR_ESTIMATORS = ("grpo", "rloo", "ngrpo")
"""Advantage estimators NTHR can sit on: they score whole groups, wrong answers included."""


class ConfigError(ValueError):
    """A config that cannot run: the message names the key and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)
