"""RL-ZVP (Le et al. 2025, arXiv:2509.21880 Eq. 5), ``zero_variance.all_wrong / all_correct: rl_zvp``:
zero-variance groups get token advantages from the policy's entropy, +alpha * H on all-correct groups and
-alpha * H on all-wrong ones, from each training forward's detached entropy."""

from __future__ import annotations

import torch
from torch import Tensor

from neggrad.core.zero_variance import rl_zvp_advantages
from neggrad.strategies.base import Forward, Groups, Strategy, Update
from neggrad.strategies.nthr import refuse_sequence_level


class RLZVP(Strategy):
    name = "rl_zvp"

    @classmethod
    def active(cls, config) -> bool:
        return "rl_zvp" in (config.zero_variance.all_wrong, config.zero_variance.all_correct)

    @classmethod
    def check(cls, config) -> None:
        refuse_sequence_level(config, "zero_variance ... rl_zvp")

    def advantages(self, groups: Groups) -> None:
        """Per row: +1 in all-correct groups, -1 in all-wrong ones (where configured), 0 elsewhere."""
        zv, kinds = self.config.zero_variance, groups.kinds
        zvp = torch.zeros(groups.correct.shape, dtype=torch.int8)  # (P', G)
        zvp[kinds["all_correct"] & torch.tensor(zv.all_correct == "rl_zvp")] = 1
        zvp[kinds["all_wrong"] & torch.tensor(zv.all_wrong == "rl_zvp")] = -1
        groups.flags["rl_zvp"] = (zvp * groups.scorable).reshape(-1)  # (B,)

    def begin_update(self, upd: Update) -> None:
        self.zvp = upd.batch.flags["rl_zvp"][upd.batch.rows]  # (B,) the trained rows

    def token_advantages(self, upd: Update, fwd: Forward, adv: Tensor) -> Tensor:
        zvp = self.zvp[fwd.idx].to(adv.device)
        if not bool(zvp.any()):
            return adv
        out = adv.clone()
        entropy = fwd.entropy.detach()
        for sign in (1, -1):
            rows = zvp == sign
            if bool(rows.any()):
                out[rows] = rl_zvp_advantages(
                    entropy[rows], fwd.mask[rows], all_correct=sign == 1, alpha=self.config.rl_zvp.alpha
                )
        return out
