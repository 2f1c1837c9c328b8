"""The policy update of one training step: old-policy pass, micro-batches, exact loss aggregation.

docs/algorithms.md §3-5. Each micro-batch adds its token-loss *sum* divided by the whole optimizer
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

from neggrad import strategies as strategy_registry
from neggrad.config import Config
from neggrad.core.logprobs import chunked_logprobs, token_logprobs
from neggrad.core.losses import (
    aggregate_loss,
    clipped_surrogate,
    kl_penalty,
    logp_policy_loss,
    step_denominators,
    token_entropy,
)
from neggrad.core.surrogates import cispo_loss, gspo_surrogate
from neggrad.models.policy import completion_forward, completion_hidden, linear_head
from neggrad.rollout.base import Rollout
from neggrad.strategies import Forward, Strategy, Update
from neggrad.trainer.batch import TrainBatch
from neggrad.trainer.distributed import SINGLE, Dist, full_parameters, gather_rows
from neggrad.trainer.lld import lld_metrics


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
    if config.importance_sampling_level != "token":  # GSPO / GSPO-token (docs/algorithms.md §3.3)
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


@dataclass
class UpdateResult:
    """What ``policy_update`` returns: the step's metrics and, with NTHR on, its token decisions."""

    metrics: dict
    token_scores: Tensor | None = None  # (B, T) NTHR scores of the trained rows (0 outside mixed groups)
    token_selected: Tensor | None = None  # (B, T) bool: tokens whose advantage NTHR scaled
    row_tau: Tensor | None = None  # (B,) NTHR threshold of each row's group (nan outside scored groups)
    row_eta: Tensor | None = None  # (B,) NTHR factor of each row's group (nan outside scored groups)
    row_delta: Tensor | None = None  # (B,) LLD: change of each measured row's sequence log-likelihood (nan elsewhere)


@torch.no_grad()
def _pass_logp(model, rollout: Rollout, rows: list[Tensor], config: Config) -> Tensor:
    """No-grad per-token log-probs of every row, micro-batch by micro-batch: (B, T)."""
    out = torch.zeros(rollout.completion_ids.shape, dtype=torch.float32)
    device = next(model.parameters()).device
    for idx in rows:
        mb = rollout.select(idx).to(device)
        out[idx] = _score(model, model, mb, config, hidden=False, entropy=False)[2].cpu()
    return out


def _score(forward, model, mb: Rollout, config: Config, *, hidden: bool, entropy: bool):
    """``_score_columns`` of the micro-batch; with ``group_by_length``, of its columns that are not padding in every
    row (``Rollout.trimmed``), the outputs padded back with zeros to the batch's width T (masked positions)."""
    if not config.group_by_length:
        return _score_columns(forward, model, mb, config, hidden=hidden, entropy=entropy)
    width = mb.completion_ids.shape[1]
    out = _score_columns(forward, model, mb.trimmed(), config, hidden=hidden, entropy=entropy)
    return tuple(_pad_columns(x, width) for x in out)


def _pad_columns(x: Tensor | None, width: int) -> Tensor | None:
    """(b, t) or (b, t, ...) -> (b, width, ...) with zeros after column t."""
    if x is None or x.shape[1] == width:
        return x
    pad = [0, 0] * (x.dim() - 2) + [0, width - x.shape[1]]
    return torch.nn.functional.pad(x, pad)


def _score_columns(forward, model, mb: Rollout, config: Config, *, hidden: bool, entropy: bool):
    """``(logits, hidden, logp, entropy, lse)`` of a micro-batch: (b, T, V) or None, (b, T, H) or None, (b, T), (b, T)
    or None, (b, T) or None. ``lse`` is the detached log-normaliser of the log-probs, which NTHR reuses instead of
    a second full-vocabulary pass. With ``logprob_chunk`` the logits are never formed (None, and no ``lse``):
    log-probs and entropies come from the LM-head inputs a chunk of positions at a time
    (neggrad.core.logprobs.chunked_logprobs)."""
    if config.logprob_chunk:
        h = completion_hidden(forward, mb, share_prompt=config.share_prompt_forward, packed=config.remove_padding)
        weight, bias = linear_head(model, "logprob_chunk")
        ids = mb.completion_ids.to(h.device)
        logp, ent = chunked_logprobs(h, weight, bias, ids, temperature=config.temperature, chunk=config.logprob_chunk)
        if config.entropy_coef == 0:
            ent = ent.detach()
        return None, h if hidden else None, logp, ent if entropy else None, None
    logits, h = completion_forward(
        forward, mb, return_hidden=hidden, share_prompt=config.share_prompt_forward, packed=config.remove_padding
    )
    logp, lse = token_logprobs(logits, mb.completion_ids, temperature=config.temperature, return_lse=True)  # (b, T)
    ent = None
    if entropy:
        with torch.set_grad_enabled(config.entropy_coef > 0 and torch.is_grad_enabled()):
            ent = token_entropy(logits / config.temperature)  # (b, T)
    return logits, h, logp, ent, lse


@torch.no_grad()
def _old_policy_pass(upd: Update, rollout: Rollout, strategies: list[Strategy]) -> Tensor:
    """The no-grad old-policy pass before the first loss: (B, T) log-probs; the strategies' ``old_policy``
    hooks see each micro-batch's forward (whole groups when one needs them), then ``old_policy_done``."""
    config, model, n = upd.config, upd.model, upd.mask.shape[0]
    size, hidden = config.per_device_train_batch_size, any(s.hidden_states for s in strategies)
    whole = any(s.whole_groups for s in strategies)
    chunks = _group_chunks(n, size, config.num_generations) if whole else _split(torch.arange(n), size, upd)
    out = torch.zeros(rollout.completion_ids.shape, dtype=torch.float32)
    device = next(model.parameters()).device
    for idx in chunks:
        mb = rollout.select(idx).to(device)
        logits, h, logp, _, lse = _score(model, model, mb, config, hidden=hidden, entropy=False)
        out[idx] = logp.cpu()
        fwd = Forward(idx, mb, logits, h, logp, logp, upd.mask[idx].to(device), lse=lse)
        for s in strategies:
            s.old_policy(upd, fwd)
    for s in strategies:
        s.old_policy_done(upd, out)
    return out


def _group_chunks(n: int, size: int, group: int) -> list[Tensor]:
    """Contiguous micro-batches of whole groups: ``size`` rounded down to a multiple of ``group`` (>= 1 group)."""
    per = max(group, size - size % group)
    return list(torch.arange(n).split(per))


def _optimizer_chunks(upd: Update) -> list[list[Tensor]]:
    """Rows of each optimizer step, split into micro-batches: ``steps_per_generation`` chunks per pass."""
    config, n = upd.config, upd.mask.shape[0]
    if n == 0:
        return []
    order = torch.randperm(n) if config.steps_per_generation > 1 else torch.arange(n)
    per_step = math.ceil(n / config.steps_per_generation)
    return [
        _split(order[start : start + per_step], config.per_device_train_batch_size, upd)
        for start in range(0, n, per_step)
    ]


def _split(rows: Tensor, size: int, upd: Update) -> list[Tensor]:
    """``rows`` in micro-batches of ``size``; with ``group_by_length`` shortest completions first, so that each
    micro-batch's rows have similar lengths and ``_score`` trims less of them to padding. The loss of an
    optimizer step does not depend on how its rows are split (docs/algorithms.md §4)."""
    if upd.config.group_by_length:
        lengths = upd.batch.rollout.completion_mask[upd.batch.rows].sum(dim=1)  # (B,) of the update's rows
        rows = rows[torch.sort(lengths[rows], stable=True).indices]
    return list(rows.split(size))


def _lld(
    config: Config, model, rollout: Rollout, before: Tensor, mask: Tensor, correct: Tensor, p: Tensor, dist: Dist
) -> dict:
    """docs/algorithms.md §6.1: a no-grad pass after the last optimizer step over the correct (and, with
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
        after = _pass_logp(model, rollout, chunks, config)[idx] if len(idx) else before[idx]
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


def _begin(config: Config, model, batch: TrainBatch, strategies: list[Strategy]) -> Update:
    """The update's token masks and advantages (A_i on every token of row i), the strategies started."""
    G = config.num_generations
    rollout = batch.rollout.select(batch.rows)
    mask = rollout.completion_mask.float()  # (B, T)
    if config.mask_truncated_completions:
        mask = mask * (~rollout.truncated).float()[:, None]
    seq_adv = batch.seq_adv[batch.rows]  # (B,)
    upd = Update(
        config=config,
        model=model,
        batch=batch,
        token_adv=seq_adv[:, None].expand_as(mask).contiguous(),  # (B, T)
        mask=mask,
        seq_adv=seq_adv,
        correct=batch.correct[batch.rows],
        hinted=batch.hinted.repeat_interleave(G)[batch.rows] if batch.hinted is not None else None,
        old_pass=config.num_iterations > 1
        or config.steps_per_generation > 1
        or any(s.old_policy_pass for s in strategies),
    )
    for s in strategies:
        s.begin_update(upd)
    return upd


class _Step:
    """The running sums of one update: token-weighted metric sums, loss parts, optimizer steps."""

    def __init__(self, upd: Update, strategies: list[Strategy], rollout: Rollout, dist: Dist, **passes: Tensor | None):
        self.upd, self.config, self.strategies, self.rollout, self.dist = upd, upd.config, strategies, rollout, dist
        self.old_logp, self.before, self.ref_logp = passes["old_logp"], passes["before"], passes["ref_logp"]
        self.sums = _Sums()
        self.losses = dict.fromkeys(("total", "policy", "kl", "entropy"), 0.0)
        self.losses.update(dict.fromkeys((name for s in strategies for name in s.losses), 0.0))
        self.grad_norms: list[float] = []
        self.skipped = self.opt_steps = 0

    def micro_batch(self, fwd: Forward, agg: dict) -> Tensor:
        """The micro-batch's loss: its token-loss sum over the whole optimizer step's denominator."""
        config, mask, upd, ref_logp = self.config, fwd.mask, self.upd, self.ref_logp
        adv = upd.token_adv[fwd.idx].to(mask.device)
        for s in self.strategies:
            adv = s.token_advantages(upd, fwd, adv)
        policy, clip = _policy_token_loss(config, fwd.logp, fwd.old, adv, mask)
        for s in self.strategies:
            policy, clip = s.policy_loss(upd, fwd, adv, policy, clip)
        terms = {"policy": policy}
        for s in self.strategies:
            terms.update(s.extra_loss(upd, fwd, adv))
        if config.beta > 0:  # standard regularisers: KL to the reference model, entropy bonus
            kl = kl_penalty(fwd.logp, ref_logp[fwd.idx].to(mask.device), estimator=config.kl_estimator)
            terms["kl"] = config.beta * kl
            self.sums.kl += float((kl.detach() * mask).sum())
        if config.entropy_coef > 0:
            terms["entropy"] = -config.entropy_coef * fwd.entropy
        token_loss = sum(list(terms.values())[1:], policy)
        for key, value in terms.items():
            self.losses[key] += float(aggregate_loss(value, mask, **agg).detach())
        self._count(fwd, clip)
        return aggregate_loss(token_loss, mask, **agg)

    def _count(self, fwd: Forward, clip: dict) -> None:
        sums, mask = self.sums, fwd.mask
        sums.tokens += mask.sum().item()
        sums.ppo_kl += float(((fwd.old - fwd.logp.detach()) * mask).sum())
        sums.entropy += float((fwd.entropy.detach() * mask).sum())
        events = {"low": "clip_low", "high": "clip_high", "dual": "clip_dual", "seq": "clip_seq"}
        for key, attr in {**events, "capped": "cispo_capped"}.items():
            if key in clip:
                setattr(sums, attr, getattr(sums, attr) + float((clip[key].float() * mask).sum()))

    def optimizer_step(self, step_rows: list[Tensor], forward, optimizer, scheduler) -> None:
        """One optimizer step over the micro-batches ``step_rows``: forwards, losses, backward, clip, step."""
        upd, dist, config, mask = self.upd, self.dist, self.config, self.upd.mask
        device = next(upd.model.parameters()).device
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
            with dist.no_sync(sync=k == len(step_rows) - 1):  # gradients are synchronised once per step
                loss = self.micro_batch(self.forward(forward, idx, device), agg)
                dist.backward(loss)
                step_loss += float(loss.detach())
        step_loss = dist.sum([step_loss])[0]  # the step's loss: each process holds its share
        self.losses["total"] += step_loss
        self.opt_steps += 1
        grad_norm = dist.clip_grad_norm_(upd.model, config.max_grad_norm)  # synchronised gradients: same everywhere
        self.grad_norms.append(grad_norm)
        if math.isfinite(step_loss) and math.isfinite(grad_norm):
            optimizer.step()
            scheduler.step()
        else:
            self.skipped += 1
        optimizer.zero_grad(set_to_none=True)

    def forward(self, forward, idx: Tensor, device: torch.device) -> Forward:
        """The training forward of rows ``idx``; on-policy it is the old policy too (``old_policy`` hooks)."""
        config, old_logp = self.config, self.old_logp
        mb = self.rollout.select(idx).to(device)
        hidden = any(s.hidden_states for s in self.strategies) and old_logp is None
        logits, h, logp, entropy, lse = _score(forward, self.upd.model, mb, config, hidden=hidden, entropy=True)
        if old_logp is not None:
            old = old_logp[idx].to(device)
        else:
            old = logp.detach()
            self.before[idx] = old.float().cpu()
        fwd = Forward(idx, mb, logits, h, logp, old, self.upd.mask[idx].to(device), entropy, lse)
        if old_logp is None:
            for s in self.strategies:
                s.old_policy(self.upd, fwd)
        return fwd

    def metrics(self, n: int, scheduler, dist: Dist) -> dict:
        config, steps = self.config, self.opt_steps
        sums = self.sums.reduced(dist)
        names = [k for k in self.losses if k != "total"]
        n_all, *parts = dist.sum([n, *(self.losses[k] for k in names)])
        losses = {"total": self.losses["total"], **dict(zip(names, parts, strict=True))}  # total: summed per step
        tok = self.tokens = max(sums.tokens, 1.0)
        finite_norms = [g for g in self.grad_norms if math.isfinite(g)]
        return {
            "batch/completions": int(n_all),
            **{f"loss/{k}": v / steps for k, v in losses.items()},
            "update/skipped": self.skipped,
            "policy/entropy": sums.entropy / tok,
            "kl/ref": sums.kl / tok,
            "policy/ppo_kl": sums.ppo_kl / tok,
            "clip/low_frac": sums.clip_low / tok,
            "clip/high_frac": sums.clip_high / tok,
            "clip/dual_frac": sums.clip_dual / tok,
            **({"clip/seq_frac": sums.clip_seq / tok} if config.importance_sampling_level != "token" else {}),
            **({"cispo/capped_frac": sums.cispo_capped / tok} if config.policy_loss == "cispo" else {}),
            "grad/norm": sum(finite_norms) / len(finite_norms) if finite_norms else float("nan"),
            "lr": scheduler.get_last_lr()[0],
        }


def policy_update(
    config: Config, model, optimizer, scheduler, batch: TrainBatch, *, ref_model=None, dist: Dist = SINGLE
) -> UpdateResult:
    """Run ``num_iterations`` passes of optimizer steps over ``batch``; return the step's metrics.

    ``model`` is the plain model; with several processes ``dist`` holds its prepared (DDP / FSDP) form,
    which the training forward goes through, and ``batch`` is this process's share (possibly empty).

    With one optimizer step per batch (``num_iterations = steps_per_generation = 1``) the training
    forward itself is the old policy: its detached log-probs are pi_old, the strategies' ``old_policy``
    hooks (NTHR, LENS) run on its logits before the loss, and LLD's "before" comes from it too, so none
    costs an extra forward pass. Otherwise a no-grad old-policy pass computes them.
    """
    strategies = strategy_registry.build(config)
    upd = _begin(config, model, batch, strategies)
    rollout, mask, n = batch.rollout.select(batch.rows), upd.mask, upd.mask.shape[0]
    t0 = time.perf_counter()
    with full_parameters(model if upd.old_pass else None):  # FSDP: whole parameters, entered by every process
        old_logp = _old_policy_pass(upd, rollout, strategies) if upd.old_pass and n else None
    all_rows = _split(torch.arange(n), config.per_device_train_batch_size, upd)
    ref_logp = _pass_logp(ref_model, rollout, all_rows, config) if config.beta > 0 and n else None
    t_old = time.perf_counter() - t0
    before = old_logp if old_logp is not None else torch.zeros_like(mask)  # (B, T): filled by the training forward

    forward = dist.train_forward(model)  # the prepared module under DDP / FSDP, else the model
    (model if dist.wrapped is None else dist.wrapped).train()
    step = _Step(upd, strategies, rollout, dist, old_logp=old_logp, before=before, ref_logp=ref_logp)
    for _ in range(config.num_iterations):
        for step_rows in _plan(upd, strategies, dist):
            step.optimizer_step(step_rows, forward, optimizer, scheduler)
    t_update = time.perf_counter() - t0 - t_old
    metrics = step.metrics(n, scheduler, dist)
    metrics.update({"time/old_logp": t_old, "time/update": t_update})
    upd.tokens = step.tokens
    for s in strategies:
        metrics.update(s.update_metrics(upd, dist))
    row_delta = None
    if config.lld.enabled:
        measured = upd.correct if upd.hinted is None else upd.correct & ~upd.hinted  # hinted: not the policy's own
        success = batch.correct.view(-1, config.num_generations).float().mean(dim=1)  # (P,) group p
        p = success.repeat_interleave(config.num_generations)[batch.rows]  # (B,)
        with full_parameters(model):
            lld, row_delta = _lld(config, model, rollout, before, mask, measured, p, dist)
        metrics.update(lld)
    return UpdateResult(metrics, row_delta=row_delta, **upd.outputs)


def _plan(upd: Update, strategies: list[Strategy], dist: Dist) -> list[list[Tensor]]:
    """One pass's optimizer steps, each a list of micro-batches (as many steps on every process)."""
    config, n = upd.config, upd.mask.shape[0]
    if any(s.whole_groups for s in strategies) and not upd.old_pass and n:  # hooks in the training forward
        plan = [_group_chunks(n, config.per_device_train_batch_size, config.num_generations)]
    else:
        plan = _optimizer_chunks(upd)
    return plan + [[] for _ in range(int(dist.max([len(plan)])[0]) - len(plan))]
