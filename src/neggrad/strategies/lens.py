"""LENS (Feng et al. 2025, arXiv:2510.08696 Sec. 5.1), ``zero_variance.all_wrong: lens``: confident wrong
answers are penalised most. All-wrong groups (and, with ``lens.mixed``, mixed groups) get advantages from
the old policy's mean token log-prob of each answer."""

from __future__ import annotations

import torch
from torch import Tensor

from neggrad.core.zero_variance import lens_advantages
from neggrad.strategies.base import Forward, Groups, Strategy, Update


class LENS(Strategy):
    name = "lens"

    @classmethod
    def active(cls, config) -> bool:
        return config.zero_variance.all_wrong == "lens"

    @classmethod
    def check(cls, config) -> None:
        if config.advantage_estimator != "grpo" or config.reward_scheme != "binary":
            raise ValueError(
                "zero_variance.all_wrong=lens needs the grpo estimator with binary rewards (it redefines the "
                f"baseline, as NGRPO does), got advantage_estimator={config.advantage_estimator!r}, "
                f"reward_scheme={config.reward_scheme!r}"
            )

    def begin_update(self, upd: Update) -> None:
        flagged = upd.batch.flags.get("lens")  # (P,)
        self.flagged = flagged if flagged is not None and bool(flagged.any()) else None
        self.whole_groups = self.flagged is not None and not upd.old_pass  # scored in the training forward

    def advantages(self, groups: Groups) -> None:
        kinds = groups.kinds
        groups.flags["lens"] = kinds["all_wrong"] | (kinds["mixed"] & torch.tensor(self.config.lens.mixed))  # (P',)

    def old_policy(self, upd: Update, fwd: Forward) -> None:
        if not upd.old_pass:  # the training forward is the old policy
            self._apply(upd, fwd.idx, fwd.old.detach().float().cpu())

    def old_policy_done(self, upd: Update, old_logp: Tensor) -> None:
        self._apply(upd, torch.arange(upd.mask.shape[0]), old_logp)

    def _apply(self, upd: Update, idx: Tensor, old_logp: Tensor) -> None:
        """Advantages of the flagged whole groups among rows ``idx`` into ``upd.token_adv``; ``old_logp``
        holds the rows of ``idx``."""
        flagged = self.flagged
        if flagged is None:
            return
        G, mask = self.config.num_generations, upd.mask
        for g0 in range(0, len(idx), G):
            rows = idx[g0 : g0 + G]
            if not bool(flagged[int(rows[0]) // G]):
                continue
            m = mask[rows]
            mean_logp = (old_logp[g0 : g0 + G] * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (G,)
            adv = lens_advantages(upd.correct[rows], mean_logp, alpha=self.config.lens.alpha)  # (G,)
            upd.token_adv[rows] = adv[:, None].expand_as(m)
