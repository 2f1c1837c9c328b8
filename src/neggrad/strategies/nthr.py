"""NTHR (Deng et al. 2025, arXiv:2505.18830 Eq. 7-8): a wrong answer's tokens whose gradient resembles
the correct answers' (high token influence) keep only eta of their penalty.

Scored while a micro-batch's logits and hidden states of the old policy are in memory, group by group
(``nthr.scope: group``) or, with ``nthr.scope: batch``, against every correct answer of the batch once all
micro-batches of a no-grad old-policy pass were seen. ``nthr.control: random`` scales as many random
tokens per row instead (the control). Groups re-generated with hints are left out: their hint tokens are
not the policy's own answers.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from neggrad.config import NTHR_ESTIMATORS
from neggrad.core.nthr import group_lse, nthr_batch, nthr_group, scale_token_advantages
from neggrad.models.policy import linear_head
from neggrad.strategies.base import Forward, Strategy, Update


def refuse_sequence_level(config, name: str) -> None:
    """Token-level advantages are averaged away by GSPO's sequence-level ratio."""
    if config.importance_sampling_level == "sequence":
        raise ValueError(
            f"{name} gives per-token advantages, which importance_sampling_level=sequence (GSPO) averages "
            "away: use importance_sampling_level=sequence_token"
        )


class NTHR(Strategy):
    name = "nthr"
    whole_groups = True
    hidden_states = True

    @classmethod
    def active(cls, config) -> bool:
        return config.nthr.enabled

    @classmethod
    def check(cls, config) -> None:
        if (
            config.advantage_estimator not in NTHR_ESTIMATORS
            or config.clamp_negative_advantages
            or (config.policy_loss != "clipped")
        ):
            raise ValueError(
                f"nthr works on top of grpo, dr_grpo, dapo, rloo and ngrpo, not on method "
                f"{config.method!r} (advantage_estimator={config.advantage_estimator!r}, "
                f"clamp_negative_advantages={config.clamp_negative_advantages}, policy_loss={config.policy_loss!r}): "
                "use one of those bases"
            )
        if config.logprob_chunk:
            raise ValueError(
                f"{cls.name} scores tokens from the logits, which logprob_chunk never forms: use logprob_chunk: 0"
            )
        if config.nthr.scope == "batch" and not config.nthr.anchor_include_self:
            raise ValueError(
                "nthr.scope 'batch' anchors on every correct answer of the batch: nthr.anchor_include_self: false "
                "applies to nthr.scope: group only"
            )
        refuse_sequence_level(config, cls.name)

    @property
    def old_policy_pass(self) -> bool:  # cross-group scores need every micro-batch before the first loss
        return self.batch_scope

    @property
    def batch_scope(self) -> bool:
        return self.config.nthr.scope == "batch"

    def begin_update(self, upd: Update) -> None:
        if not bool(upd.batch.rows.all()):
            raise ValueError("NTHR needs whole groups: this method drops rows from its groups")
        mask = upd.mask
        self.scores = torch.zeros_like(mask)  # (B, T)
        self.selected = torch.zeros(mask.shape, dtype=torch.bool)  # (B, T)
        self.row_tau = torch.full(mask.shape[:1], float("nan"))  # (B,)
        self.row_eta = torch.full(mask.shape[:1], float("nan"))  # (B,)
        self.groups, self.wrong_tokens, self.taus, self.etas = 0, 0.0, [], []
        self.seconds = 0.0
        self.rng = torch.Generator().manual_seed(self.config.seed)  # the random-token control only
        self._parts: list = []  # nthr.scope batch: what each micro-batch leaves for old_policy_done

    @torch.no_grad()
    def old_policy(self, upd: Update, fwd: Forward) -> None:
        """Score the whole groups of the micro-batch (contiguous, group-aligned) and scale ``upd.token_adv``.

        With ``nthr.scope: batch`` only the micro-batch's hidden states and log-normalisers are kept here;
        :meth:`old_policy_done` scores the whole batch once every micro-batch has been seen."""
        ids = fwd.rollout.completion_ids.to(fwd.logits.device)
        if self.batch_scope:
            self._collect(upd, fwd, ids)
            return
        t0 = time.perf_counter()
        G, opt = self.config.num_generations, self.config.nthr
        idx, logits, hidden, mask, correct = fwd.idx, fwd.logits, fwd.hidden, upd.mask, upd.correct
        lse = fwd.lse  # (b, T): the forward's log-normalisers, not a second full-vocabulary pass per group
        for g0 in range(0, len(idx), G):
            rows = idx[g0 : g0 + G]
            local = slice(g0, g0 + G)
            if upd.hinted is not None and bool(upd.hinted[rows].any()):
                continue
            result = nthr_group(
                logits[local].detach(),
                hidden[local].detach(),
                ids[local],
                mask[rows],
                correct[rows],
                beta=self._beta(),
                anchor_include_self=opt.anchor_include_self,
                lse=None if lse is None else lse[local],
                **self._options(),
            )
            if result is None:
                continue
            selected = self._scale(upd, rows, result)
            self.scores[rows] = result.scores.cpu()
            self.selected[rows] = selected
            self.row_tau[rows], self.row_eta[rows] = result.tau, result.eta
            self.groups += 1
            self.wrong_tokens += float((mask[rows] * (~correct[rows]).float()[:, None]).sum())
            if math.isfinite(result.tau):
                self.taus.append(result.tau)
            self.etas.append(result.eta)
        self.seconds += time.perf_counter() - t0

    def _options(self) -> dict:
        """The scoring options shared by the group and the batch scope."""
        opt = self.config.nthr
        return {
            "eta": opt.eta,
            "vocab": opt.vocab,
            "temperature": self.config.temperature,
            "chunk_tokens": opt.chunk_tokens,
            "chunk_vocab": opt.chunk_vocab,
        }

    def _beta(self) -> float:
        return self.config.nthr.beta

    def _scale(self, upd: Update, rows: Tensor, result) -> Tensor:
        """Scale the penalty of the group's selected tokens (Eq. 8); return the (G, T) tokens scaled."""
        selected = result.selected.cpu()
        if self.config.nthr.control == "random":
            selected = self._random_like(selected, upd.mask[rows].bool())
        upd.token_adv[rows] = scale_token_advantages(upd.token_adv[rows], selected, result.eta)
        return selected

    def _collect(self, upd: Update, fwd: Forward, ids: Tensor) -> None:
        t0 = time.perf_counter()
        idx, logits = fwd.idx, fwd.logits.detach()
        real = upd.mask[idx].bool().to(logits.device)  # (b, T)
        lse = fwd.lse if fwd.lse is not None else group_lse(logits, self.config.temperature)  # (b, T)
        rows = idx.to(real.device)[:, None].expand_as(real)[real]
        self._parts.append((fwd.hidden.detach()[real].float(), ids[real], lse[real], rows))
        self.seconds += time.perf_counter() - t0

    @torch.no_grad()
    def old_policy_done(self, upd: Update, old_logp: Tensor) -> None:
        """``nthr.scope: batch``: score every collected token against the batch's correct answers, scale
        ``upd.token_adv`` (arXiv:2505.18830 Eq. 7-8 over the batch; neggrad.core.nthr.nthr_batch)."""
        if not self._parts:
            return
        t0 = time.perf_counter()
        opt, G = self.config.nthr, self.config.num_generations
        hidden, ids, lse, rows = (torch.cat(x) for x in zip(*self._parts, strict=True))
        self._parts = []
        mask, correct, token_adv = upd.mask, upd.correct, upd.token_adv
        groups = torch.arange(mask.shape[0]) // G
        head_weight, head_bias = linear_head(upd.model)
        result = nthr_batch(
            hidden,
            ids,
            lse,
            head_weight.detach(),
            rows,
            groups.to(hidden.device),
            correct.to(hidden.device),
            head_bias=None if head_bias is None else head_bias.detach(),
            beta=opt.beta,
            **self._options(),
        )
        rows, scores, picked = rows.cpu(), result.scores.cpu(), result.selected.cpu()
        cols = mask.bool().nonzero()  # (N, 2) in row-major order, as collected per row within micro-batches
        order = torch.argsort(rows, stable=True)  # micro-batches are contiguous row blocks: already sorted
        positions = cols[: len(order)]
        self.scores[positions[:, 0], positions[:, 1]] = scores[order]
        selected = torch.zeros_like(self.selected)
        selected[positions[:, 0], positions[:, 1]] = picked[order]
        etas = result.eta.cpu()  # (P,)
        scored = ~torch.isnan(etas)
        if upd.hinted is not None:  # hinted groups: their hint tokens are not the policy's own answers
            scored &= ~upd.hinted.view(-1, G).any(dim=1)
        row_scored = scored.repeat_interleave(G)
        selected &= row_scored[:, None]
        if opt.control == "random":
            selected = self._random_like(selected, mask.bool())
        row_eta = etas.repeat_interleave(G)
        token_adv.copy_(torch.where(selected, token_adv * row_eta[:, None], token_adv))
        self.selected = selected
        self.row_tau[row_scored] = result.tau
        self.row_eta[row_scored] = row_eta[row_scored]
        self.groups = int(scored.sum())
        self.wrong_tokens = float((mask * (~correct).float()[:, None])[row_scored].sum())
        if math.isfinite(result.tau) and self.groups:
            self.taus.append(result.tau)
        self.etas.extend(etas[scored].tolist())
        self.seconds += time.perf_counter() - t0

    def _random_like(self, selected: Tensor, mask: Tensor) -> Tensor:
        """Per row, as many random masked tokens as ``selected`` has there (the random-token control)."""
        out = torch.zeros_like(selected)
        for r in range(selected.shape[0]):
            k = int(selected[r].sum())
            if k:
                real = mask[r].nonzero().squeeze(1)
                out[r, real[torch.randperm(len(real), generator=self.rng)[:k]]] = True
        return out

    def _sums(self, dist) -> list[float]:
        return dist.sum(
            [self.groups, float(self.selected.sum()), self.wrong_tokens, sum(self.taus), len(self.taus)]
            + [sum(self.etas), len(self.etas), *self._extra_sums()]
        )

    def _extra_sums(self) -> list[float]:
        return [0.0, 0.0]

    def update_metrics(self, upd: Update, dist) -> dict:
        """``nthr/*`` over every process's groups (sums summed, means weighted by their counts)."""
        upd.outputs.update(
            token_scores=self.scores, token_selected=self.selected, row_tau=self.row_tau, row_eta=self.row_eta
        )
        return self._report(self._sums(dist))

    def _report(self, sums: list[float]) -> dict:
        groups, selected, wrong, tau_sum, taus, eta_sum, etas, *_ = sums
        return {
            "nthr/groups": int(groups),
            "nthr/selected_frac": selected / wrong if wrong else 0.0,
            "nthr/tau_mean": tau_sum / taus if taus else 0.0,
            "nthr/eta_mean": eta_sum / etas if etas else 0.0,
            "time/nthr": self.seconds,
        }
