"""THR (Deng et al. 2025, arXiv:2510.03669; form reconstructed): NTHR's token influence on the correct
answers, used on every token of a mixed group: A (1 + p sign(THR)) on dominant tokens (``thr.mode:
reweight``) or only the dominant tokens trained (``dominant_only``). Same scores as NTHR, group scope only."""

from __future__ import annotations

from torch import Tensor

from neggrad.config import NTHR_ESTIMATORS
from neggrad.core.thr import thr_token_advantages
from neggrad.strategies.base import Update
from neggrad.strategies.nthr import NTHR, refuse_sequence_level


class THR(NTHR):
    name = "thr"
    excludes = {"nthr": "thr generalises nthr (same scores, every token): enable one of thr.enabled, nthr.enabled"}

    @classmethod
    def active(cls, config) -> bool:
        return config.thr.enabled

    @classmethod
    def check(cls, config) -> None:
        if config.logprob_chunk:
            raise ValueError(
                f"{cls.name} scores tokens from the logits, which logprob_chunk never forms: use logprob_chunk: 0"
            )
        if config.nthr.scope == "batch":
            raise ValueError("thr.enabled scores tokens within their own group: nthr.scope 'batch' is NTHR's only")
        if config.advantage_estimator not in NTHR_ESTIMATORS or config.policy_loss != "clipped":
            raise ValueError(f"thr works on grpo, dr_grpo, dapo, rloo and ngrpo, not on method {config.method!r}")
        refuse_sequence_level(config, cls.name)

    def begin_update(self, upd: Update) -> None:
        super().begin_update(upd)
        self.thr_tokens = self.thr_pos = 0.0  # tokens of scored groups, dominant tokens with THR > 0

    def _beta(self) -> float:
        return self.config.thr.beta

    def _scale(self, upd: Update, rows: Tensor, result) -> Tensor:
        """Every token of the group, by the sign of its influence; return the (G, T) dominant tokens."""
        thr, mask = self.config.thr, upd.mask[rows]
        scores = result.scores.cpu()
        upd.token_adv[rows], selected = thr_token_advantages(
            scores, result.anchors.cpu(), upd.token_adv[rows], mask, p=thr.p, beta=thr.beta, mode=thr.mode
        )
        self.thr_tokens += float(mask.sum())
        self.thr_pos += float((selected & (scores * upd.token_adv[rows] > 0)).sum())
        return selected

    def _extra_sums(self) -> list[float]:
        return [self.thr_tokens, self.thr_pos]

    def _report(self, sums: list[float]) -> dict:
        groups, selected, _, tau_sum, taus, _, _, thr_tokens, thr_pos = sums
        return {
            "thr/groups": int(groups),
            "thr/dominant_frac": selected / thr_tokens if thr_tokens else 0.0,
            "thr/pos_frac": thr_pos / selected if selected else 0.0,
            "thr/tau_mean": tau_sum / taus if taus else 0.0,
            "time/nthr": self.seconds,
        }
