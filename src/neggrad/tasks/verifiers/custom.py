"""A verifier of your own, named in the config by import path: ``reward.kind: my_pkg.rewards:is_correct``.

The function receives the decoded completions and their gold answers (one per completion, each prompt's group
contiguous) and returns one correctness per completion::

    def is_correct(completions: list[str], answers: list[str]) -> list[bool]:
        return [c.strip().endswith(a) for c, a in zip(completions, answers)]

Return bools, or the numbers 0 and 1. The trainer's rewards, group classes (all-wrong / mixed / all-correct) and
advantages are all built on this binary correctness, so other values are refused rather than rounded. Return None
for an answer you cannot score (a checker that timed out): training leaves it out of its group's statistics with
advantage 0 (as TRL's ``None`` rewards), and evaluation counts it as not solved. The function
runs in the trainer's process without a timeout: bound its work yourself (or use ``reward.kind: math``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_import_path(text: str) -> bool:
    """True for ``"package.module:function"`` (a dotted module, a colon, a dotted attribute)."""
    return bool(_IMPORT_PATH.match(text))


def load_reward_fn(path: str) -> Callable[[list[str], list[str]], list[bool]]:
    """The callable at ``"package.module:function"``; ValueError naming the path and what is wrong otherwise."""
    if not is_import_path(path):
        raise ValueError(
            f"reward.kind {path!r} is not 'arithmetic', 'math' or an import path like 'my_pkg.rewards:is_correct'"
        )
    module_name, _, qualname = path.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"reward.kind {path!r}: cannot import module {module_name!r} ({err}); install it or add its folder to "
            "PYTHONPATH"
        ) from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"reward.kind {path!r}: {obj.__name__!r} has no attribute {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(
            f"reward.kind {path!r} is a {type(obj).__name__}, not a function (completions, answers) -> list[bool]"
        )
    return obj


class CustomReward:
    """Binary correctness from a user function (see the module docstring for its signature)."""

    def __init__(self, path: str):
        self.path = path
        self.fn = load_reward_fn(path)

    def score(self, completions: list[str], answers: list[str]) -> list[bool]:
        """(B,) correctness from the user function, checked for length and binary values (None: False)."""
        return [bool(v) for v in self.score_or_abstain(completions, answers)]

    def score_or_abstain(self, completions: list[str], answers: list[str]) -> list[bool | None]:
        """(B,) correctness from the user function, None where it abstained."""
        values = list(self.fn(list(completions), list(answers)))
        if len(values) != len(completions):
            raise ValueError(
                f"reward function {self.path} returned {len(values)} values for {len(completions)} completions: "
                "return one per completion"
            )
        for value in values:
            if value is not None and (isinstance(value, str) or value not in (0, 1)):  # numpy / torch compare alike
                raise ValueError(
                    f"reward function {self.path} returned {value!r}: return True/False (or 0/1, or None to "
                    "abstain) per completion"
                )
        return [None if v is None else bool(v) for v in values]

    def close(self) -> None:
        """Nothing to release (same interface as the math verifier)."""
