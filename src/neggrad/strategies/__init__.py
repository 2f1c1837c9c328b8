"""Strategies: what a method changes in a GRPO step, one class each (protocol: strategies/base.py).

The built-in ones are turned on by their config keys (``nthr.enabled``, ``zero_variance.all_wrong``, ...);
user strategies are listed by import path under ``strategies`` (docs/strategies.md). ``build`` returns the
active ones in the order their hooks run; ``check`` applies their requirements and declared conflicts at
config load.
"""

from __future__ import annotations

from neggrad.strategies.all_wrong import AllWrongAdvantage
from neggrad.strategies.base import Forward, Groups, Round, Strategy, Update
from neggrad.strategies.drop import Drop
from neggrad.strategies.hints import Hints
from neggrad.strategies.judge import Judge
from neggrad.strategies.lens import LENS
from neggrad.strategies.llds import LLDS
from neggrad.strategies.nthr import NTHR
from neggrad.strategies.random_reward import RandomReward
from neggrad.strategies.rl_zvp import RLZVP
from neggrad.strategies.thr import THR

__all__ = ["BUILTIN", "Forward", "Groups", "Round", "Strategy", "Update", "build", "check"]

BUILTIN: tuple[type[Strategy], ...] = (
    RandomReward,
    Hints,
    Judge,
    Drop,
    AllWrongAdvantage,
    NTHR,
    THR,
    LENS,
    RLZVP,
    LLDS,
)
"""In hook order: sampling (random reward, hints, judge, drop, all-wrong advantages), then the update."""


def _classes(config) -> list[tuple[type[Strategy], dict]]:
    """The active strategy classes with their keyword arguments: built-ins first, then the listed ones."""
    from neggrad.strategies.user import user_strategies  # noqa: PLC0415 (imports user code)

    return [(cls, {}) for cls in BUILTIN if cls.active(config)] + user_strategies(config)


def build(config) -> list[Strategy]:
    """Fresh instances of the active strategies (one stage of one step), in hook order."""
    return [cls(config, **kwargs) for cls, kwargs in _classes(config)]


def check(config) -> None:
    """Raise ValueError (one line) on the first declared conflict or unmet requirement of the active ones."""
    classes = [cls for cls, _ in _classes(config)]
    names = {cls.label() for cls in classes}
    for cls in classes:
        for other, why in cls.excludes.items():
            if other in names:
                raise ValueError(why)
    for cls in classes:
        cls.check(config)
