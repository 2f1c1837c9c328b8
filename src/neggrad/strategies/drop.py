"""``zero_variance.all_wrong / all_correct: drop``: zero-variance groups of that kind are filtered out
(with ``refill``, new prompts are generated until the batch is full: DAPO's dynamic sampling, Yu et al.
2025, arXiv:2503.14476)."""

from __future__ import annotations

from torch import Tensor

from neggrad.core.groups import group_kinds
from neggrad.strategies.base import Round, Strategy


class Drop(Strategy):
    name = "drop"

    @classmethod
    def active(cls, config) -> bool:
        return "drop" in (config.zero_variance.all_wrong, config.zero_variance.all_correct)

    def keep(self, rnd: Round, keep: Tensor) -> Tensor:
        kinds = group_kinds(rnd.correct, rnd.scorable)
        for kind in ("all_wrong", "all_correct"):
            if getattr(self.config.zero_variance, kind) == "drop":
                keep = keep & ~kinds[kind]
        return keep
