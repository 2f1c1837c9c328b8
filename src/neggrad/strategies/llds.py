"""LLDS (Deng et al. 2025, arXiv:2512.04220 Eq. 4-6, 9-10): a loss that pushes back up the likelihood an
update took from responses with A >= 0, gated by step, action, response or token. Zero on on-policy
updates; never on hint tokens (they are not the policy's own)."""

from __future__ import annotations

import logging

from torch import Tensor

from neggrad.core.llds import action_ids, llds_token_loss
from neggrad.feedback.steps import token_step_ids
from neggrad.strategies.base import Forward, Groups, Strategy, Update


class LLDS(Strategy):
    name = "llds"
    losses = ("llds",)

    @classmethod
    def active(cls, config) -> bool:
        return config.llds.enabled

    @classmethod
    def check(cls, config) -> None:
        if config.num_iterations == 1 and config.steps_per_generation == 1:
            logging.getLogger("neggrad.config").warning(
                "llds is exactly 0 when every update is on-policy: raise num_iterations or steps_per_generation"
            )

    def advantages(self, groups: Groups) -> None:
        """The step gate: each completion token's step (``feedback.step_split``), for the update."""
        if self.config.llds.gate == "step":
            r = groups.rollout
            groups.flags["step_ids"] = token_step_ids(
                groups.tokenizer, r.completion_ids, r.completion_mask, self.config.feedback.step_split
            )  # (B, T)

    def begin_update(self, upd: Update) -> None:
        self.penalised = 0.0
        step_ids = upd.batch.flags.get("step_ids")
        self.step_ids = step_ids[upd.batch.rows] if step_ids is not None else None  # (B, T) step of each token

    def extra_loss(self, upd: Update, fwd: Forward, adv: Tensor) -> dict[str, Tensor]:
        off = fwd.rollout.offpolicy
        own = fwd.mask if off is None else fwd.mask * (~off).float()  # never the hint tokens
        gate = self.config.llds.gate
        steps = None
        if gate == "step" and self.step_ids is not None:
            steps = self.step_ids[fwd.idx].to(fwd.mask.device)
        elif gate in ("step", "action"):  # runs of own tokens (a batch built without step ids)
            steps = action_ids(own)
        penalty, penalised = llds_token_loss(
            fwd.logp,
            fwd.old,
            own,
            upd.seq_adv[fwd.idx].to(fwd.mask.device),
            coef=self.config.llds.coef,
            gate=gate,
            step_ids=steps,
        )
        self.penalised += float(penalised.sum())
        return {"llds": penalty}

    def update_metrics(self, upd: Update, dist) -> dict:
        return {"llds/penalised_frac": dist.sum([self.penalised])[0] / upd.tokens}
