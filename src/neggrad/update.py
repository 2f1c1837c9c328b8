"""The policy update of one training step: old-policy pass, micro-batches, exact loss aggregation.

ALGORITHMS.md 1.3-1.6. Each micro-batch adds its token-loss *sum* divided by the whole optimizer
step's denominator (``aggregate_loss``), so gradient accumulation gives the same loss as one big batch.
With several processes (distributed.py) the denominators are summed over processes, every process runs
the same number of optimizer steps (a process without rows for one does a zero backward), and the
metrics are reduced over processes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from neggrad.config import Config
from neggrad.core.hints import shaped_offpolicy_loss
from neggrad.core.llds import action_ids, llds_token_loss
from neggrad.core.logprobs import token_logprobs
from neggrad.core.losses import (
    aggregate_loss,
    clipped_surrogate,
    kl_penalty,
    logp_policy_loss,
    step_denominators,
    token_entropy,
)
from neggrad.core.nthr import nthr_batch, nthr_group, scale_token_advantages
from neggrad.core.surrogates import cispo_loss, gspo_surrogate
from neggrad.core.thr import thr_token_advantages
from neggrad.core.zero_variance import lens_advantages, rl_zvp_advantages
from neggrad.diagnostics.lld import lld_metrics
from neggrad.distributed import SINGLE, Dist, full_parameters, gather_rows
from neggrad.policy import completion_forward, linear_head
from neggrad.rollout.hf import Rollout
from neggrad.sampling import TrainBatch


@dataclass
class _Sums:
    """Token-weighted running sums for the step's metrics."""

    tokens: float = 0.0
    ppo_kl: float = 0.0
    entropy: float = 0.0
    kl: float = 0.0
    clip_low: float = 0.0
    clip_high: float = 0.0
    clip_dual: float = 0.0
    clip_seq: float = 0.0
    cispo_capped: float = 0.0
    llds_penalised: float = 0.0

    def reduced(self, dist: Dist) -> _Sums:
        """The sums over every process."""
        names = list(self.__dataclass_fields__)
        return _Sums(*dist.sum([getattr(self, k) for k in names]))


def _policy_token_loss(config: Config, logp: Tensor, old: Tensor, adv: Tensor, mask: Tensor) -> tuple[Tensor, dict]:
    """(b, T) policy token losses of the configured surrogate and its (b, T) bool events for the metrics."""
    if config.policy_loss == "logp":
        return logp_policy_loss(logp, adv), {}
    if config.policy_loss == "cispo":
        loss, capped = cispo_loss(logp, old, adv, epsilon_high=config.epsilon_high)
        return loss, {"capped": capped}
    if config.importance_sampling_level != "token":  # GSPO / GSPO-token (FRONTIER.md 6)
        loss, info = gspo_surrogate(
            logp,
            old,
            adv,
            mask,
            epsilon=config.epsilon,
            epsilon_high=config.epsilon_high,
            token_level=config.importance_sampling_level == "sequence_token",
        )
        return loss, {"seq": info["seq_clip"][:, None].expand_as(logp)}
    return clipped_surrogate(
        logp, old, adv, epsilon=config.epsilon, epsilon_high=config.epsilon_high, dual_clip=config.dual_clip
    )


def _lens(
    config: Config, token_adv: Tensor, idx: Tensor, old_logp: Tensor, mask: Tensor, correct: Tensor, groups: Tensor
) -> None:
    """LENS advantages (arXiv:2510.08696 Sec. 5.1) for the flagged whole groups among rows ``idx``, written into
    ``token_adv``; ``old_logp`` holds the rows of ``idx`` (or of every row when ``idx`` covers the batch)."""
    G = config.num_generations
    for g0 in range(0, len(idx), G):
        rows = idx[g0 : g0 + G]
        if not bool(groups[int(rows[0]) // G]):
            continue
        m = mask[rows]
        mean_logp = (old_logp[g0 : g0 + G] * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (G,)
        adv = lens_advantages(correct[rows], mean_logp, alpha=config.lens.alpha)  # (G,)
        token_adv[rows] = adv[:, None].expand_as(m)


def _rl_zvp(config: Config, adv: Tensor, entropy: Tensor, mask: Tensor, zvp: Tensor) -> Tensor:
    """RL-ZVP token advantages (arXiv:2509.21880 Eq. 5) on the rows of zero-variance groups: +1 all-correct,
    -1 all-wrong (``zvp``), from this forward's detached entropy; other rows unchanged."""
    out = adv.clone()
    for sign in (1, -1):
        rows = zvp == sign
        if bool(rows.any()):
            out[rows] = rl_zvp_advantages(entropy[rows], mask[rows], all_correct=sign == 1, alpha=config.rl_zvp.alpha)
    return out


@dataclass
class UpdateResult:
    """What ``policy_update`` returns: the step's metrics and, with NTHR on, its token decisions."""

    metrics: dict
    token_scores: Tensor | None = None  # (B, T) NTHR scores of the trained rows (0 outside mixed groups)
    token_selected: Tensor | None = None  # (B, T) bool: tokens whose advantage NTHR scaled
    row_tau: Tensor | None = None  # (B,) NTHR threshold of each row's group (nan outside scored groups)
    row_eta: Tensor | None = None  # (B,) NTHR factor of each row's group (nan outside scored groups)
    row_delta: Tensor | None = None  # (B,) LLD: change of each measured row's sequence log-likelihood (nan elsewhere)


class _NTHR:
    """Applies NTHR group by group while a micro-batch's logits and hidden states are in memory."""

    def __init__(self, config: Config, token_adv: Tensor, mask: Tensor, correct: Tensor, skip: Tensor | None = None):
        self.cfg, self.token_adv, self.mask, self.correct = config, token_adv, mask, correct
        self.skip = skip  # (B,) rows of hinted groups: their hint tokens are not the policy's own answers
        self.scores = torch.zeros_like(mask)  # (B, T)
        self.selected = torch.zeros(mask.shape, dtype=torch.bool)  # (B, T)
        self.row_tau = torch.full(mask.shape[:1], float("nan"))  # (B,)
        self.row_eta = torch.full(mask.shape[:1], float("nan"))  # (B,)
        self.groups, self.wrong_tokens, self.taus, self.etas = 0, 0.0, [], []
        self.seconds = 0.0
        self.rng = torch.Generator().manual_seed(config.seed)  # the random-token control only
        self.thr_tokens = self.thr_pos = 0.0  # THR: tokens of scored groups, dominant tokens with THR > 0

    @property
    def batch_scope(self) -> bool:
        return self.cfg.nthr.enabled and self.cfg.nthr.scope == "batch"

    @torch.no_grad()
    def apply(self, idx: Tensor, logits: Tensor, hidden: Tensor, ids: Tensor) -> None:
        """Score the whole groups in rows ``idx`` (contiguous, group-aligned) and scale ``token_adv``.

        With ``nthr.scope: batch`` only the micro-batch's hidden states and log-normalisers are kept here;
        :meth:`finish` scores the whole batch once every micro-batch has been seen."""
        if self.batch_scope:
            self._collect(idx, logits, hidden, ids)
            return
        t0 = time.perf_counter()
        G, opt, thr = self.cfg.num_generations, self.cfg.nthr, self.cfg.thr
        for g0 in range(0, len(idx), G):
            rows = idx[g0 : g0 + G]
            local = slice(g0, g0 + G)
            if self.skip is not None and bool(self.skip[rows].any()):
                continue
            result = nthr_group(
                logits[local].detach(),
                hidden[local].detach(),
                ids[local],
                self.mask[rows],
                self.correct[rows],
                beta=thr.beta if thr.enabled else opt.beta,
                eta=opt.eta,
                vocab=opt.vocab,
                anchor_include_self=opt.anchor_include_self,
                temperature=self.cfg.temperature,
                chunk_tokens=opt.chunk_tokens,
                chunk_vocab=opt.chunk_vocab,
            )
            if result is None:
                continue
            if thr.enabled:  # THR: every token of the group, by the sign of its influence (FRONTIER.md 1)
                scores = result.scores.cpu()
                self.token_adv[rows], selected = thr_token_advantages(
                    scores,
                    result.anchors.cpu(),
                    self.token_adv[rows],
                    self.mask[rows],
                    p=thr.p,
                    beta=thr.beta,
                    mode=thr.mode,
                )
                self.thr_tokens += float(self.mask[rows].sum())
                self.thr_pos += float((selected & (scores * self.token_adv[rows] > 0)).sum())
            else:
                selected = result.selected.cpu()
                if opt.control == "random":
                    selected = self._random_like(selected, self.mask[rows].bool())
                self.token_adv[rows] = scale_token_advantages(self.token_adv[rows], selected, result.eta)
            self.scores[rows] = result.scores.cpu()
            self.selected[rows] = selected
            self.row_tau[rows], self.row_eta[rows] = result.tau, result.eta
            self.groups += 1
            self.wrong_tokens += float((self.mask[rows] * (~self.correct[rows]).float()[:, None]).sum())
            if math.isfinite(result.tau):
                self.taus.append(result.tau)
            self.etas.append(result.eta)
        self.seconds += time.perf_counter() - t0

    def _collect(self, idx: Tensor, logits: Tensor, hidden: Tensor, ids: Tensor) -> None:
        t0 = time.perf_counter()
        real = self.mask[idx].bool().to(logits.device)  # (b, T)
        lse = torch.logsumexp(logits.detach()[real].float() / self.cfg.temperature, dim=-1)  # (n,)
        if not hasattr(self, "_parts"):
            self._parts = []
        rows = idx.to(real.device)[:, None].expand_as(real)[real]
        self._parts.append((hidden.detach()[real].float(), ids[real], lse, rows))
        self.seconds += time.perf_counter() - t0

    @torch.no_grad()
    def finish(self, head_weight: Tensor, head_bias: Tensor | None) -> None:
        """``nthr.scope: batch``: score every collected token against the batch's correct answers, scale
        ``token_adv`` (arXiv:2505.18830 Eq. 7-8 over the batch; neggrad.core.nthr.nthr_batch)."""
        parts = getattr(self, "_parts", [])
        if not parts:
            return
        t0 = time.perf_counter()
        opt, G = self.cfg.nthr, self.cfg.num_generations
        hidden, ids, lse, rows = (torch.cat(x) for x in zip(*parts, strict=True))
        del self._parts
        n = self.mask.shape[0]
        groups = torch.arange(n) // G
        result = nthr_batch(
            hidden,
            ids,
            lse,
            head_weight.detach(),
            rows,
            groups.to(hidden.device),
            self.correct.to(hidden.device),
            head_bias=None if head_bias is None else head_bias.detach(),
            beta=opt.beta,
            eta=opt.eta,
            vocab=opt.vocab,
            temperature=self.cfg.temperature,
            chunk_tokens=opt.chunk_tokens,
            chunk_vocab=opt.chunk_vocab,
        )
        rows, scores, picked = rows.cpu(), result.scores.cpu(), result.selected.cpu()
        cols = self.mask.bool().nonzero()  # (N, 2) in row-major order, as collected per row within micro-batches
        order = torch.argsort(rows, stable=True)  # micro-batches are contiguous row blocks: already sorted
        positions = cols[: len(order)]
        self.scores[positions[:, 0], positions[:, 1]] = scores[order]
        selected = torch.zeros_like(self.selected)
        selected[positions[:, 0], positions[:, 1]] = picked[order]
        etas = result.eta.cpu()  # (P,)
        scored = ~torch.isnan(etas)
        if self.skip is not None:  # hinted groups: their hint tokens are not the policy's own answers
            scored &= ~self.skip.view(-1, G).any(dim=1)
        row_scored = scored.repeat_interleave(G)
        selected &= row_scored[:, None]
        if opt.control == "random":
            selected = self._random_like(selected, self.mask.bool())
        row_eta = etas.repeat_interleave(G)
        self.token_adv.copy_(torch.where(selected, self.token_adv * row_eta[:, None], self.token_adv))
        self.selected = selected
        self.row_tau[row_scored] = result.tau
        self.row_eta[row_scored] = row_eta[row_scored]
        self.groups = int(scored.sum())
        self.wrong_tokens = float((self.mask * (~self.correct).float()[:, None])[row_scored].sum())
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

    def metrics(self, dist: Dist = SINGLE) -> dict:
        """``nthr/*`` over every process's groups (sums summed, means weighted by their counts)."""
        groups, selected, wrong, tau_sum, taus, eta_sum, etas, thr_tokens, thr_pos = dist.sum(
            [self.groups, float(self.selected.sum()), self.wrong_tokens, sum(self.taus), len(self.taus)]
            + [sum(self.etas), len(self.etas), self.thr_tokens, self.thr_pos]
        )
        if self.cfg.thr.enabled:
            return {
                "thr/groups": int(groups),
                "thr/dominant_frac": selected / thr_tokens if thr_tokens else 0.0,
                "thr/pos_frac": thr_pos / selected if selected else 0.0,
                "thr/tau_mean": tau_sum / taus if taus else 0.0,
                "time/nthr": self.seconds,
            }
        return {
            "nthr/groups": int(groups),
            "nthr/selected_frac": selected / wrong if wrong else 0.0,
            "nthr/tau_mean": tau_sum / taus if taus else 0.0,
            "nthr/eta_mean": eta_sum / etas if etas else 0.0,
            "time/nthr": self.seconds,
        }


@torch.no_grad()
def _pass_logp(model, rollout: Rollout, rows: list[Tensor], temperature: float, nthr: _NTHR | None = None) -> Tensor:
    """No-grad per-token log-probs of every row, micro-batch by micro-batch: (B, T). With ``nthr``, the
    rows must be group-aligned and NTHR is applied from the same forward (no extra pass)."""
    out = torch.zeros(rollout.completion_ids.shape, dtype=torch.float32)
    device = next(model.parameters()).device
    for idx in rows:
        mb = rollout.select(idx).to(device)
        logits, hidden = completion_forward(model, mb, return_hidden=nthr is not None)
        out[idx] = token_logprobs(logits, mb.completion_ids, temperature=temperature).cpu()
        if nthr is not None:
            nthr.apply(idx, logits, hidden, mb.completion_ids.to(logits.device))
    return out


def _group_chunks(n: int, size: int, group: int) -> list[Tensor]:
    """Contiguous micro-batches of whole groups: ``size`` rounded down to a multiple of ``group`` (>= 1 group)."""
    per = max(group, size - size % group)
    return list(torch.arange(n).split(per))


def _optimizer_chunks(n: int, config: Config) -> list[list[Tensor]]:
    """Rows of each optimizer step, split into micro-batches: ``steps_per_generation`` chunks per pass."""
    if n == 0:
        return []
    order = torch.randperm(n) if config.steps_per_generation > 1 else torch.arange(n)
    per_step = math.ceil(n / config.steps_per_generation)
    steps = []
    for start in range(0, n, per_step):
        rows = order[start : start + per_step]
        steps.append(list(rows.split(config.per_device_train_batch_size)))
    return steps


def _lld(
    config: Config, model, rollout: Rollout, before: Tensor, mask: Tensor, correct: Tensor, p: Tensor, dist: Dist
) -> dict:
    """ALGORITHMS.md 2.2: a no-grad pass after the last optimizer step over the correct (and, with
    ``lld.wrong``, the wrong) completions; their change of log-likelihood against ``before``, measured
    over the completions of every process."""
    t0 = time.perf_counter()
    out: dict = {}
    row_delta = torch.full(mask.shape[:1], float("nan"))  # (B,) this process's rows
    was_training = model.training
    model.eval()
    for prefix, rows in (("lld/", correct), ("lld/wrong/", ~correct)):
        if prefix == "lld/wrong/" and not config.lld.wrong:
            continue
        idx = rows.nonzero().squeeze(1)
        chunks = list(idx.split(config.per_device_train_batch_size))
        after = _pass_logp(model, rollout, chunks, config.temperature)[idx] if len(idx) else before[idx]
        row_delta[idx] = ((after - before[idx]) * mask[idx]).sum(dim=1)
        rows = gather_rows(dist, {"before": before[idx], "after": after, "mask": mask[idx], "p": p[idx]})
        out.update(lld_metrics(rows["before"], rows["after"], rows["mask"], rows["p"], prefix=prefix))
    model.train(was_training)
    out["time/lld"] = time.perf_counter() - t0
    return out, row_delta


def _zero_backward(forward, device: torch.device, dist: Dist) -> None:
    """A backward with loss 0 through the training forward: a process without rows in an optimizer step
    still joins the gradient synchronisation of the others (DDP, FSDP and ZeRO need every process's)."""
    out = forward(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device), use_cache=False)
    dist.backward(out.logits.float().sum() * 0.0)


def policy_update(
    config: Config, model, optimizer, scheduler, batch: TrainBatch, *, ref_model=None, dist: Dist = SINGLE
) -> UpdateResult:
    """Run ``num_iterations`` passes of optimizer steps over ``batch``; return the step's metrics.

    ``model`` is the plain model; with several processes ``dist`` holds its prepared (DDP / FSDP) form,
    which the training forward goes through, and ``batch`` is this process's share (possibly empty).

    With one optimizer step per batch (``num_iterations = steps_per_generation = 1``) the training
    forward itself is the old policy: its detached log-probs are pi_old, NTHR runs on its logits and
    hidden states group by group before the loss, and LLD's "before" comes from it too, so neither
    costs an extra forward pass. Otherwise a no-grad old-policy pass computes all three (ALGORITHMS.md 1.6).
    """
    rollout = batch.rollout.select(batch.rows)
    device = next(model.parameters()).device
    G = config.num_generations
    mask = rollout.completion_mask.float()  # (B, T)
    if config.mask_truncated_completions:
        mask = mask * (~rollout.truncated).float()[:, None]
    seq_adv = batch.seq_adv[batch.rows]  # (B,)
    step_ids = batch.step_ids[batch.rows] if batch.step_ids is not None else None  # (B, T) LLDS step gate
    correct = batch.correct[batch.rows]  # (B,)
    success = batch.correct.view(-1, G).float().mean(dim=1).repeat_interleave(G)[batch.rows]  # (B,) group p
    token_adv = seq_adv[:, None].expand_as(mask).contiguous()  # (B, T)
    n = mask.shape[0]
    hinted = batch.hinted.repeat_interleave(G)[batch.rows] if batch.hinted is not None else None  # (B,)
    nthr = None
    if config.nthr.enabled or config.thr.enabled:
        if not bool(batch.rows.all()):
            raise ValueError("NTHR needs whole groups: this method drops rows from its groups")
        nthr = _NTHR(config, token_adv, mask, correct, skip=hinted)
    zvp = batch.zvp[batch.rows] if batch.zvp is not None else None  # (B,) RL-ZVP rows
    lens_groups = batch.lens if batch.lens is not None and bool(batch.lens.any()) else None  # (P,)
    grouped = nthr is not None or lens_groups is not None  # hooks that need whole groups per micro-batch
    # cross-group NTHR needs every micro-batch's scores before the first loss: a no-grad pass first
    need_old = config.num_iterations > 1 or config.steps_per_generation > 1 or (nthr is not None and nthr.batch_scope)

    t0 = time.perf_counter()
    old_logp = None
    with full_parameters(model if need_old else None):  # FSDP: whole parameters, entered by every process
        if need_old and n:
            chunks = _group_chunks(n, config.per_device_train_batch_size, G) if nthr else None
            chunks = chunks or list(torch.arange(n).split(config.per_device_train_batch_size))
            old_logp = _pass_logp(model, rollout, chunks, config.temperature, nthr)
            if nthr.batch_scope if nthr is not None else False:
                nthr.finish(*linear_head(model))
            if lens_groups is not None:
                _lens(config, token_adv, torch.arange(n), old_logp, mask, correct, lens_groups)
    all_rows = list(torch.arange(n).split(config.per_device_train_batch_size))
    ref_logp = _pass_logp(ref_model, rollout, all_rows, config.temperature) if config.beta > 0 and n else None
    t_old = time.perf_counter() - t0
    before = old_logp if need_old and n else torch.zeros_like(mask)  # (B, T): filled by the training forward

    forward = dist.train_forward(model)  # the prepared module under DDP / FSDP, else the model
    (model if dist.wrapped is None else dist.wrapped).train()
    sums = _Sums()
    losses = {"total": 0.0, "policy": 0.0, "kl": 0.0, "entropy": 0.0, "llds": 0.0}
    grad_norms, skipped, opt_steps = [], 0, 0
    for _ in range(config.num_iterations):
        plan = _optimizer_chunks(n, config)
        if grouped and not need_old and n:  # NTHR / LENS inside the training forward: whole groups per micro-batch
            plan = [_group_chunks(n, config.per_device_train_batch_size, G)]
        plan += [[] for _ in range(int(dist.max([len(plan)])[0]) - len(plan))]  # as many steps on every process
        for step_rows in plan:
            local = mask[torch.cat(step_rows)] if step_rows else mask[:0]
            num_seqs, num_tokens = (int(x) for x in dist.sum(list(step_denominators(local))))  # global (1.5)
            agg = {
                "loss_type": config.loss_type,
                "num_sequences": num_seqs,
                "num_tokens": num_tokens,
                "max_completion_length": config.max_completion_length,
            }
            step_loss = 0.0
            padding = dist.missing_micro_batches(len(step_rows))  # FSDP: as many forwards on every process
            if not step_rows and not padding:
                _zero_backward(forward, device, dist)
            for k in range(padding):
                with dist.no_sync(sync=not step_rows and k == padding - 1):
                    _zero_backward(forward, device, dist)
            for k, idx in enumerate(step_rows):
                mb = rollout.select(idx).to(device)
                inline_nthr = nthr is not None and not need_old
                with dist.no_sync(sync=k == len(step_rows) - 1):  # gradients are synchronised once per step
                    logits, hidden = completion_forward(forward, mb, return_hidden=inline_nthr)  # (b, T, V), (b, T, H)
                    logp = token_logprobs(logits, mb.completion_ids, temperature=config.temperature)  # (b, T)
                    if inline_nthr:
                        nthr.apply(idx, logits, hidden, mb.completion_ids.to(logits.device))
                    mb_mask, mb_adv = mask[idx].to(device), token_adv[idx].to(device)
                    if need_old:
                        old = old_logp[idx].to(device)
                    else:
                        old = logp.detach()
                        before[idx] = old.float().cpu()
                    with torch.set_grad_enabled(config.entropy_coef > 0):
                        entropy = token_entropy(logits / config.temperature)  # (b, T)
                    if lens_groups is not None and not need_old:  # LENS from this (on-policy) forward
                        _lens(config, token_adv, idx, old.detach().float().cpu(), mask, correct, lens_groups)
                        mb_adv = token_adv[idx].to(device)
                    if zvp is not None and bool(zvp[idx].any()):  # RL-ZVP: entropy of this forward, detached
                        mb_adv = _rl_zvp(config, mb_adv, entropy.detach(), mb_mask, zvp[idx].to(device))
                    policy, clip = _policy_token_loss(config, logp, old, mb_adv, mb_mask)
                    off = mb.offpolicy.to(device) if mb.offpolicy is not None else None  # (b, T) hint tokens
                    if off is not None and bool(off.any()):  # LUFFY's shaped loss, no ratio (FRONTIER.md 5)
                        policy = torch.where(off, shaped_offpolicy_loss(logp, mb_adv, gamma=config.hint.gamma), policy)
                        clip = {k: v & ~off for k, v in clip.items()}
                    token_loss = policy
                    parts = {"policy": aggregate_loss(policy, mb_mask, **agg)}
                    if config.llds.enabled:
                        own = mb_mask if off is None else mb_mask * (~off).float()  # never the hint tokens
                        gate = config.llds.gate
                        steps = None
                        if gate == "step" and step_ids is not None:
                            steps = step_ids[idx].to(device)
                        elif gate in ("step", "action"):  # runs of own tokens (a batch built without step ids)
                            steps = action_ids(own)
                        penalty, penalised = llds_token_loss(
                            logp, old, own, seq_adv[idx].to(device), coef=config.llds.coef, gate=gate, step_ids=steps
                        )
                        token_loss = token_loss + penalty
                        parts["llds"] = aggregate_loss(penalty, mb_mask, **agg)
                        sums.llds_penalised += float(penalised.sum())
                    if config.beta > 0:
                        kl = kl_penalty(logp, ref_logp[idx].to(device), estimator=config.kl_estimator)
                        token_loss = token_loss + config.beta * kl
                        parts["kl"] = aggregate_loss(config.beta * kl, mb_mask, **agg)
                        sums.kl += float((kl.detach() * mb_mask).sum())
                    if config.entropy_coef > 0:
                        token_loss = token_loss - config.entropy_coef * entropy
                        parts["entropy"] = aggregate_loss(-config.entropy_coef * entropy, mb_mask, **agg)
                    loss = aggregate_loss(token_loss, mb_mask, **agg)
                    dist.backward(loss)
                    step_loss += float(loss.detach())
                    for key, value in parts.items():
                        losses[key] += float(value.detach())
                    m = mb_mask.sum().item()
                    sums.tokens += m
                    sums.ppo_kl += float(((old - logp.detach()) * mb_mask).sum())
                    sums.entropy += float((entropy.detach() * mb_mask).sum())
                    for key, attr in (
                        ("low", "clip_low"),
                        ("high", "clip_high"),
                        ("dual", "clip_dual"),
                        ("seq", "clip_seq"),
                        ("capped", "cispo_capped"),
                    ):
                        if key in clip:
                            setattr(sums, attr, getattr(sums, attr) + float((clip[key].float() * mb_mask).sum()))
            step_loss = dist.sum([step_loss])[0]  # the step's loss: each process holds its share
            losses["total"] += step_loss
            opt_steps += 1
            grad_norm = dist.clip_grad_norm_(model, config.max_grad_norm)  # synchronised gradients: same everywhere
            grad_norms.append(grad_norm)
            if math.isfinite(step_loss) and math.isfinite(grad_norm):
                optimizer.step()
                scheduler.step()
            else:
                skipped += 1
            optimizer.zero_grad(set_to_none=True)
    t_update = time.perf_counter() - t0 - t_old
    sums = sums.reduced(dist)
    n_all, *parts = dist.sum([n, losses["policy"], losses["kl"], losses["entropy"], losses["llds"]])
    losses.update(zip(("policy", "kl", "entropy", "llds"), parts, strict=True))  # "total" is summed per step already
    tok = max(sums.tokens, 1.0)
    finite_norms = [g for g in grad_norms if math.isfinite(g)]
    metrics = {
        "batch/completions": int(n_all),
        "loss/total": losses["total"] / opt_steps,
        "loss/policy": losses["policy"] / opt_steps,
        "loss/kl": losses["kl"] / opt_steps,
        "loss/entropy": losses["entropy"] / opt_steps,
        "update/skipped": skipped,
        "policy/entropy": sums.entropy / tok,
        "kl/ref": sums.kl / tok,
        "policy/ppo_kl": sums.ppo_kl / tok,
        "clip/low_frac": sums.clip_low / tok,
        "clip/high_frac": sums.clip_high / tok,
        "clip/dual_frac": sums.clip_dual / tok,
        **({"clip/seq_frac": sums.clip_seq / tok} if config.importance_sampling_level != "token" else {}),
        **({"cispo/capped_frac": sums.cispo_capped / tok} if config.policy_loss == "cispo" else {}),
        **(
            {"llds/penalised_frac": sums.llds_penalised / tok, "loss/llds": losses["llds"] / opt_steps}
            if config.llds.enabled
            else {}
        ),
        "grad/norm": sum(finite_norms) / len(finite_norms) if finite_norms else float("nan"),
        "lr": scheduler.get_last_lr()[0],
        "time/old_logp": t_old,
        "time/update": t_update,
    }
    if nthr is not None:
        metrics.update(nthr.metrics(dist))
    if config.lld.enabled:
        measured = correct if hinted is None else correct & ~hinted  # hinted answers are not the policy's own
        with full_parameters(model):
            lld, row_delta = _lld(config, model, rollout, before, mask, measured, success, dist)
        metrics.update(lld)
    else:
        row_delta = None
    if nthr is None:
        return UpdateResult(metrics, row_delta=row_delta)
    return UpdateResult(
        metrics,
        token_scores=nthr.scores,
        token_selected=nthr.selected,
        row_tau=nthr.row_tau,
        row_eta=nthr.row_eta,
        row_delta=row_delta,
    )
