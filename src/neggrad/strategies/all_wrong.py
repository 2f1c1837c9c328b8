"""Sequence advantages of all-wrong groups, which GRPO leaves at 0 (``zero_variance.all_wrong``):

ngrpo: NGRPO's virtual max-reward sample in the group's mean and std (Nan et al. 2025, arXiv:2509.18851
Eq. 6), in those groups only; nsr and w_reinforce: A = -1 for every wrong answer (Zhu et al. 2025,
arXiv:2506.01347). Abstentions keep advantage 0."""

from __future__ import annotations

from torch import Tensor

from neggrad.core.advantages import group_advantages
from neggrad.core.groups import group_kinds
from neggrad.core.shaping import REWARD_MAX
from neggrad.strategies.base import Groups, Strategy


def zero_variance_advantages(
    config, rewards: Tensor, correct: Tensor, seq_adv: Tensor, scorable: Tensor | None = None
) -> Tensor:
    """(P, G) advantages with the ``zero_variance.all_wrong`` rule (ngrpo, nsr, w_reinforce) applied to
    all-wrong groups; ``seq_adv`` unchanged for any other rule."""
    rule = config.zero_variance.all_wrong
    wrong = group_kinds(correct, scorable)["all_wrong"]  # (P,)
    if rule not in ("ngrpo", "nsr", "w_reinforce") or not bool(wrong.any()):
        return seq_adv
    out = seq_adv.clone()
    if rule == "ngrpo":
        virtual = config.ngrpo.virtual_reward
        out[wrong] = group_advantages(
            rewards[wrong],
            method="ngrpo",
            correct=correct[wrong],
            num_virtual=config.ngrpo.num_virtual,
            virtual_reward=REWARD_MAX[config.reward_scheme] if virtual is None else virtual,
            scorable=None if scorable is None else scorable[wrong],
        ).to(out.dtype)
    else:
        out[wrong] = -1.0
    return out if scorable is None else out * scorable  # abstentions: advantage 0


class AllWrongAdvantage(Strategy):
    name = "all_wrong_advantage"

    @classmethod
    def active(cls, config) -> bool:
        return config.zero_variance.all_wrong in ("ngrpo", "nsr", "w_reinforce")

    def advantages(self, groups: Groups) -> None:
        groups.seq_adv = zero_variance_advantages(
            self.config, groups.rewards, groups.correct, groups.seq_adv, groups.scorable
        )
