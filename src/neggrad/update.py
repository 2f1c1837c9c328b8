"""The policy update of one training step: old-policy pass, micro-batches, exact loss aggregation.

ALGORITHMS.md 1.3-1.6. Each micro-batch adds its token-loss *sum* divided by the whole optimizer
step's denominator (``aggregate_loss``), so gradient accumulation gives the same loss as one big batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from neggrad.config import Config
from neggrad.core.logprobs import token_logprobs
from neggrad.core.losses import (
    aggregate_loss,
    clipped_surrogate,
    kl_penalty,
    logp_policy_loss,
    step_denominators,
    token_entropy,
)
from neggrad.policy import completion_logits
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


@torch.no_grad()
def _pass_logp(model, rollout: Rollout, rows: list[Tensor], temperature: float) -> Tensor:
    """No-grad per-token log-probs of every row, computed micro-batch by micro-batch: (B, T)."""
    out = torch.zeros(rollout.completion_ids.shape, dtype=torch.float32)
    for idx in rows:
        mb = rollout.select(idx)
        out[idx] = token_logprobs(completion_logits(model, mb), mb.completion_ids, temperature=temperature).cpu()
    return out


def _optimizer_chunks(n: int, config: Config) -> list[list[Tensor]]:
    """Rows of each optimizer step, split into micro-batches: ``steps_per_generation`` chunks per pass."""
    order = torch.randperm(n) if config.steps_per_generation > 1 else torch.arange(n)
    per_step = math.ceil(n / config.steps_per_generation)
    steps = []
    for start in range(0, n, per_step):
        rows = order[start : start + per_step]
        steps.append(list(rows.split(config.per_device_train_batch_size)))
    return steps


def policy_update(config: Config, model, optimizer, scheduler, batch: TrainBatch, *, ref_model=None) -> dict:
    """Run ``num_iterations`` passes of optimizer steps over ``batch``; return the step's metrics."""
    rollout = batch.rollout.select(batch.rows)
    device = next(model.parameters()).device
    mask = rollout.completion_mask.float()  # (B, T)
    if config.mask_truncated_completions:
        mask = mask * (~rollout.truncated).float()[:, None]
    seq_adv = batch.seq_adv[batch.rows]  # (B,)
    token_adv = seq_adv[:, None].expand_as(mask).contiguous()  # (B, T); token re-weighting plugs in here
    n = mask.shape[0]
    all_rows = list(torch.arange(n).split(config.per_device_train_batch_size))

    t0 = time.perf_counter()
    need_old = config.num_iterations > 1 or config.steps_per_generation > 1
    old_logp = _pass_logp(model, rollout, all_rows, config.temperature) if need_old else None
    ref_logp = _pass_logp(ref_model, rollout, all_rows, config.temperature) if config.beta > 0 else None
    t_old = time.perf_counter() - t0

    model.train()
    sums = _Sums()
    losses = {"total": 0.0, "policy": 0.0, "kl": 0.0, "entropy": 0.0}
    grad_norms, skipped, opt_steps = [], 0, 0
    for _ in range(config.num_iterations):
        for step_rows in _optimizer_chunks(n, config):
            num_seqs, num_tokens = step_denominators(mask[torch.cat(step_rows)])
            agg = {
                "loss_type": config.loss_type,
                "num_sequences": num_seqs,
                "num_tokens": num_tokens,
                "max_completion_length": config.max_completion_length,
            }
            step_loss = 0.0
            for idx in step_rows:
                mb = rollout.select(idx)
                mb_mask, mb_adv = mask[idx].to(device), token_adv[idx].to(device)
                logits = completion_logits(model, mb)  # (b, T, V)
                logp = token_logprobs(logits, mb.completion_ids, temperature=config.temperature)  # (b, T)
                old = old_logp[idx].to(device) if need_old else logp.detach()
                if config.policy_loss == "logp":
                    policy = logp_policy_loss(logp, mb_adv)
                    clip = {}
                else:
                    policy, clip = clipped_surrogate(
                        logp,
                        old,
                        mb_adv,
                        epsilon=config.epsilon,
                        epsilon_high=config.epsilon_high,
                        dual_clip=config.dual_clip,
                    )
                token_loss = policy
                parts = {"policy": aggregate_loss(policy, mb_mask, **agg)}
                if config.beta > 0:
                    kl = kl_penalty(logp, ref_logp[idx].to(device), estimator=config.kl_estimator)
                    token_loss = token_loss + config.beta * kl
                    parts["kl"] = aggregate_loss(config.beta * kl, mb_mask, **agg)
                    sums.kl += float((kl.detach() * mb_mask).sum())
                with torch.set_grad_enabled(config.entropy_coef > 0):
                    entropy = token_entropy(logits / config.temperature)  # (b, T)
                if config.entropy_coef > 0:
                    token_loss = token_loss - config.entropy_coef * entropy
                    parts["entropy"] = aggregate_loss(-config.entropy_coef * entropy, mb_mask, **agg)
                loss = aggregate_loss(token_loss, mb_mask, **agg)
                loss.backward()
                step_loss += float(loss.detach())
                for key, value in parts.items():
                    losses[key] += float(value.detach())
                m = mb_mask.sum().item()
                sums.tokens += m
                sums.ppo_kl += float(((old - logp.detach()) * mb_mask).sum())
                sums.entropy += float((entropy.detach() * mb_mask).sum())
                for key, attr in (("low", "clip_low"), ("high", "clip_high"), ("dual", "clip_dual")):
                    if key in clip:
                        setattr(sums, attr, getattr(sums, attr) + float((clip[key].float() * mb_mask).sum()))
            losses["total"] += step_loss
            opt_steps += 1
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm))
            grad_norms.append(grad_norm)
            if math.isfinite(step_loss) and math.isfinite(grad_norm):
                optimizer.step()
                scheduler.step()
            else:
                skipped += 1
            optimizer.zero_grad(set_to_none=True)
    tok = max(sums.tokens, 1.0)
    finite_norms = [g for g in grad_norms if math.isfinite(g)]
    return {
        "batch/completions": n,
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
        "grad/norm": sum(finite_norms) / len(finite_norms) if finite_norms else float("nan"),
        "lr": scheduler.get_last_lr()[0],
        "time/old_logp": t_old,
        "time/update": time.perf_counter() - t0 - t_old,
    }
