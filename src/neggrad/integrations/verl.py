"""neggrad's advantage estimators and policy losses for verl's registries (``verl.trainer.ppo.core_algos``).

    from neggrad.integrations import verl as neggrad_verl
    neggrad_verl.register()          # in every process that imports verl (see docs/integrations/verl.md)

then, in the verl config, ``algorithm.adv_estimator=neggrad_ngrpo`` and
``actor_rollout_ref.actor.policy_loss.loss_mode=neggrad_clipped``. Every formula is a ``neggrad.core`` function.

The functions keep verl 0.9's registry signatures, read from verl's source (not imported here, so this
module loads without verl):

- advantage estimator: ``fn(token_level_rewards, response_mask, index, epsilon=1e-6, config=None, **kwargs)
  -> (advantages, returns)``, both (bs, response_length); ``index`` holds each response's prompt uid.
- policy loss: ``fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
  config=None, rollout_is_weights=None) -> (loss, metrics)``; ``config`` is the actor config
  (``clip_ratio``, ``clip_ratio_low``, ``clip_ratio_high``, ``clip_ratio_c``, ``global_batch_info``).

Not available through these registries: NTHR (it needs the old policy's hidden states and logits inside the
actor worker, which a policy loss never sees) and judge feedback (it needs the decoded group, which an
advantage estimator never sees). Use neggrad's own trainer or the TRL integration for those.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from neggrad.core.advantages import ESTIMATORS, group_advantages
from neggrad.core.losses import aggregate_loss, clipped_surrogate, logp_policy_loss

AGG_MODES = {
    "token-mean": "dapo",
    "seq-mean-token-mean": "grpo",
    "seq-mean-token-sum": "seq_sum",
    "seq-mean-token-sum-norm": "dr_grpo",
}
"""verl's ``loss_agg_mode`` -> neggrad's ``loss_type`` (docs/algorithms.md §4)."""

SETTINGS: dict[str, Any] = {
    "correct_threshold": 0.5,
    "num_virtual": 1,
    "virtual_reward": 1.0,
    "positive_weight": 0.1,
}
"""Hyperparameters verl's configs have no key for; ``register(**settings)`` changes them.

correct_threshold: a response is correct iff its summed reward is above it (psr, nsr, w_reinforce, raft).
num_virtual, virtual_reward: NGRPO's virtual samples and their reward r_max. positive_weight: W-REINFORCE's
lambda."""


def _groups(index: np.ndarray | list) -> tuple[Tensor, int]:
    """Order that puts each prompt's responses together, (P * G,), and G; groups must all have G >= 2 responses."""
    _, inverse, counts = np.unique(
        np.asarray(index, dtype=object).astype(str), return_inverse=True, return_counts=True
    )
    if len(set(counts.tolist())) != 1 or counts[0] < 2:
        raise ValueError(
            f"neggrad estimators need every prompt to have the same number (>= 2) of responses, got group sizes "
            f"{sorted(set(counts.tolist()))}: set actor_rollout_ref.rollout.n >= 2 and keep groups whole"
        )
    order = torch.from_numpy(np.argsort(inverse, kind="stable"))  # (B,) rows grouped by prompt
    return order, int(counts[0])


def advantage_estimator(method: str) -> Callable[..., tuple[Tensor, Tensor]]:
    """verl's advantage-estimator signature around ``group_advantages(method=...)``.

    The sequence reward is ``token_level_rewards.sum(-1)`` (verl puts the outcome score on the last token);
    correctness is that reward above ``SETTINGS["correct_threshold"]``. ``neggrad_grpo`` honours verl's
    ``algorithm.norm_adv_by_std_in_grpo`` (False: Dr. GRPO's unscaled advantages). Unlike verl's grpo, a
    prompt with a single response is refused rather than given advantage 0.
    """
    if method not in ESTIMATORS:
        raise ValueError(f"unknown method {method!r}: choose one of {sorted(ESTIMATORS)}")

    def estimator(
        token_level_rewards: Tensor,
        response_mask: Tensor,
        index: np.ndarray,
        epsilon: float = 1e-6,
        config: Any = None,
        **kwargs: Any,
    ) -> tuple[Tensor, Tensor]:
        """(bs, response_length) advantages and returns (equal, as in verl's outcome estimators)."""
        scores = token_level_rewards.sum(dim=-1).float()  # (B,)
        order, G = _groups(index)
        rewards = scores.cpu()[order].view(-1, G)  # (P, G)
        scale = "group"
        if method == "grpo" and config is not None and not config.get("norm_adv_by_std_in_grpo", True):
            scale = "none"
        adv = group_advantages(
            rewards,
            method=method,
            correct=rewards > SETTINGS["correct_threshold"],
            scale_rewards=scale,
            eps=epsilon,
            num_virtual=SETTINGS["num_virtual"],
            virtual_reward=SETTINGS["virtual_reward"],
            positive_weight=SETTINGS["positive_weight"],
        )  # (P, G)
        seq_adv = torch.empty_like(scores.cpu())
        seq_adv[order] = adv.reshape(-1)  # back to verl's row order
        token_adv = seq_adv.to(response_mask.device)[:, None] * response_mask  # (B, T)
        return token_adv, token_adv

    estimator.__name__ = f"neggrad_{method}"
    estimator.__doc__ = f"neggrad's {method!r} advantages (neggrad.core.advantages) with verl's signature."
    return estimator


ADV_ESTIMATORS = {f"neggrad_{method}": advantage_estimator(method) for method in ESTIMATORS}
"""verl ``algorithm.adv_estimator`` name -> function. psr / nsr give dropped rows advantage 0; verl keeps them
in the loss denominators (neggrad's own trainer removes them)."""


def _aggregate(token_loss: Tensor, mask: Tensor, loss_agg_mode: str, config: Any) -> Tensor:
    """``aggregate_loss`` with verl's global batch counts, times dp_size (verl's ranks average gradients)."""
    if loss_agg_mode not in AGG_MODES:
        raise ValueError(f"loss_agg_mode {loss_agg_mode!r} has no neggrad counterpart: use one of {list(AGG_MODES)}")
    info = dict(getattr(config, "global_batch_info", None) or {}) if config is not None else {}
    lengths = mask.sum(dim=-1)  # (b,)
    num_tokens = info.get("batch_num_tokens") or int(lengths.sum())
    num_sequences = info.get("global_batch_size") or int((lengths > 0).sum())
    horizon = info.get("loss_scale_factor") or mask.shape[-1]
    if int(num_tokens) < 1:
        return (token_loss * 0.0).sum()
    loss = aggregate_loss(
        token_loss,
        mask,
        loss_type=AGG_MODES[loss_agg_mode],
        num_sequences=int(num_sequences),
        num_tokens=int(num_tokens),
        max_completion_length=int(horizon),
    )
    return loss * info.get("dp_size", 1)


def _clip_range(config: Any) -> tuple[float, float]:
    if config is None:
        raise ValueError(
            "neggrad policy losses need verl's actor config (clip_ratio, clip_ratio_low, clip_ratio_high)"
        )
    low = config.get("clip_ratio_low") or config.get("clip_ratio", 0.2)
    high = config.get("clip_ratio_high") or config.get("clip_ratio", 0.2)
    return float(low), float(high)


def _policy_loss(
    old_log_prob: Tensor,
    log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    loss_agg_mode: str,
    config: Any,
    rollout_is_weights: Tensor | None,
    *,
    kind: str,
) -> tuple[Tensor, dict[str, float]]:
    mask = response_mask.float()  # (b, T)
    if kind == "logp":
        token_loss, events = logp_policy_loss(log_prob, advantages), {}
    else:
        epsilon, epsilon_high = _clip_range(config)
        dual = float(config.get("clip_ratio_c", 3.0)) if kind == "dual_clip" else None
        token_loss, events = clipped_surrogate(
            log_prob, old_log_prob, advantages, epsilon=epsilon, epsilon_high=epsilon_high, dual_clip=dual
        )
    if rollout_is_weights is not None:  # verl's rollout correction weights, applied as verl's own losses do
        token_loss = token_loss * rollout_is_weights
    loss = _aggregate(token_loss, mask, loss_agg_mode, config)
    count = mask.sum().clamp(min=1.0)
    metrics = {"actor/ppo_kl": float(((old_log_prob - log_prob.detach()) * mask).sum() / count)}
    if events:
        metrics["actor/pg_clipfrac"] = float(((events["low"] | events["high"]).float() * mask).sum() / count)
        metrics["actor/pg_clipfrac_lower"] = float((events["dual"].float() * mask).sum() / count)
    return loss, metrics


def clipped_loss(
    old_log_prob: Tensor,
    log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """``neggrad_clipped``: ``clipped_surrogate`` with verl's clip_ratio_low / clip_ratio_high, no dual clip.

    NGRPO's asymmetric clip is clip_ratio_low 0.16, clip_ratio_high 0.24. verl's ``vanilla`` always applies
    the dual clip (clip_ratio_c, default 3); this one does not, as neggrad's grpo / ngrpo presets.
    """
    return _policy_loss(
        old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights, kind="clipped"
    )


def dual_clip_loss(
    old_log_prob: Tensor,
    log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """``neggrad_dual_clip``: ``clipped_surrogate`` with ``dual_clip = clip_ratio_c`` (RAFT++, Reinforce-Rej)."""
    return _policy_loss(
        old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights, kind="dual_clip"
    )


def logp_loss(
    old_log_prob: Tensor,
    log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """``neggrad_logp``: ``logp_policy_loss``, -A * log-prob with no ratio (RAFT)."""
    return _policy_loss(
        old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights, kind="logp"
    )


POLICY_LOSSES = {"neggrad_clipped": clipped_loss, "neggrad_dual_clip": dual_clip_loss, "neggrad_logp": logp_loss}
"""verl ``actor_rollout_ref.actor.policy_loss.loss_mode`` name -> function."""


def register(**settings: Any) -> list[str]:
    """Put ``ADV_ESTIMATORS`` and ``POLICY_LOSSES`` into verl's registries; return the registered names.

    Call it in every process that computes advantages or losses (the driver and the actor workers): e.g.
    put ``neggrad.integrations.verl_plugin`` in ``VERL_USE_EXTERNAL_MODULES``, which verl imports on start.

    Args:
        **settings: new values for ``SETTINGS`` (correct_threshold, num_virtual, virtual_reward, positive_weight).

    Raises:
        ImportError: verl is not installed.
        ValueError: an unknown setting.
    """
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}: choose from {sorted(SETTINGS)}")
    try:
        from verl.trainer.ppo import core_algos
    except ImportError as err:
        raise ImportError(
            f"neggrad.integrations.verl.register() needs verl ({err}). Install it where it runs, on a GPU "
            "machine: pip install verl (verl 0.9 pins ray, tensordict and transformers<5.11; see "
            "https://verl.readthedocs.io/en/latest/start/install.html). The functions of this module work without it."
        ) from err
    SETTINGS.update(settings)
    for name, fn in ADV_ESTIMATORS.items():
        if core_algos.ADV_ESTIMATOR_REGISTRY.get(name) is not fn:
            core_algos.register_adv_est(name)(fn)
    for name, fn in POLICY_LOSSES.items():
        core_algos.register_policy_loss(name)(fn)
    return [*ADV_ESTIMATORS, *POLICY_LOSSES]
