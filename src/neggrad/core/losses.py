"""Per-token policy losses, KL estimators, entropy, and their exact aggregation over an optimizer step.

Shapes: B = P * G completions, T completion tokens, V vocabulary. Token losses are (B, T); the
trainer adds ``beta * kl_penalty`` and subtracts ``entropy_coef * token_entropy`` per token, then
``aggregate_loss`` reduces one micro-batch by the whole step's denominators (docs/algorithms.md §3-4).
"""

import torch
from torch import Tensor

LOG_RATIO_CLAMP = 20.0
"""Log-ratios and the k3 exponent are clamped to [-20, 20] before exp [neggrad choice, as verl]."""


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1 or any(len(shape) != 2 for shape in shapes.values()):
        raise ValueError(
            f"expected (B, T) tensors of one shape, got {shapes}: pass per-token tensors "
            "(a (B,) sequence advantage becomes token_adv with seq_adv[:, None].expand_as(logp))."
        )


def clipped_surrogate(
    logp: Tensor,
    old_logp: Tensor,
    token_adv: Tensor,
    *,
    epsilon: float,
    epsilon_high: float | None = None,
    dual_clip: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate per token, with asymmetric bounds and an optional dual clip.

    With rho = exp(logp - old_logp), l = max(-A * rho, -A * clip(rho, 1 - epsilon, 1 + epsilon_high))
    (Schulman et al. 2017, arXiv:1707.06347, Eq. 7, negated into a loss). Asymmetric bounds are
    DAPO's clip-higher (Yu et al. 2025, arXiv:2503.14476, Sec. 3.1); only the upper bound binds when
    A > 0 and only the lower when A < 0, so NGRPO's sign-dependent clipping (Nan et al. 2025,
    arXiv:2509.18851v1, Sec. 4.2) is epsilon = eps_neg, epsilon_high = eps_pos. ``dual_clip = c``
    caps the loss of negative-advantage tokens at -A * c (Ye et al. 2020, arXiv:1912.09729;
    RAFT++ and Reinforce-Rej use c = 3). d l / d logp = -A * rho while unclipped, else 0.

    Deviation: the log-ratio is clamped to [-20, 20] before exp, so rho stays finite [neggrad
    choice, as verl].

    Args:
        logp: (B, T) log-probs of the sampled tokens under the current policy.
        old_logp: (B, T) the same under the sampling policy, no grad.
        token_adv: (B, T) advantage of each token.
        epsilon: lower clip range eps_low, rho >= 1 - epsilon.
        epsilon_high: upper clip range, rho <= 1 + epsilon_high; None uses ``epsilon``.
        dual_clip: c > 1 for the dual clip, or None for off.

    Returns:
        (B, T) token losses, and the (B, T) bool clip events of docs/algorithms.md §3.1: "low" (A < 0 and
        rho < 1 - epsilon), "high" (A > 0 and rho > 1 + epsilon_high), "dual" (the dual clip binds).
    """
    _check_same_shape(logp=logp, old_logp=old_logp, token_adv=token_adv)
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    if not 0.0 < epsilon < 1.0 or epsilon_high < 0.0:
        raise ValueError(
            f"need 0 < epsilon < 1 and epsilon_high >= 0, got epsilon={epsilon}, epsilon_high={epsilon_high}: "
            "use e.g. epsilon=0.2, epsilon_high=0.28 (DAPO)."
        )
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 or None, got {dual_clip}: RAFT++ and Reinforce-Rej use 3.0.")
    log_ratio = (logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    unclipped = -token_adv * ratio
    clipped = -token_adv * ratio.clamp(1.0 - epsilon, 1.0 + epsilon_high)
    token_loss = torch.maximum(unclipped, clipped)  # (B, T)
    negative = token_adv < 0
    events = {
        "low": negative & (ratio < 1.0 - epsilon),
        "high": (token_adv > 0) & (ratio > 1.0 + epsilon_high),
        "dual": torch.zeros_like(negative),
    }
    if dual_clip is not None:
        cap = -token_adv * dual_clip  # (B, T), positive where A < 0
        events["dual"] = negative & (token_loss > cap)
        token_loss = torch.where(events["dual"], cap, token_loss)
    return token_loss, events


def logp_policy_loss(logp: Tensor, token_adv: Tensor) -> Tensor:
    """Plain policy-gradient loss -A * logp per token: no ratio, no clip (RAFT).

    Xiong et al. 2025, arXiv:2504.11343 (``policy_loss: logp`` in their code). With RAFT's A = 1 on
    correct completions and 0 on wrong ones this is supervised fine-tuning on the correct samples.

    Args:
        logp: (B, T) log-probs of the sampled tokens under the current policy.
        token_adv: (B, T) advantage of each token.

    Returns:
        (B, T) token losses.
    """
    _check_same_shape(logp=logp, token_adv=token_adv)
    return -token_adv * logp


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = logp - ref_logp, unbiased for KL(pi || ref) but of high variance and sometimes negative."""
    return logp - ref_logp


def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = (logp - ref_logp)^2 / 2, biased, low variance, never negative."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = exp(x) - x - 1 with x = ref_logp - logp clamped to [-20, 20]: unbiased and never negative."""
    x = (ref_logp - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return torch.exp(x) - x - 1.0


KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_penalty(logp: Tensor, ref_logp: Tensor, *, estimator: str = "k3") -> Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from the sampled tokens' log-probs.

    Schulman 2020, "Approximating KL Divergence" (joschu.net/blog/kl-approx.html): k1, k2, k3;
    GRPO adds k3 to the loss (Shao et al. 2024, arXiv:2402.03300, Eq. 4). docs/algorithms.md §3.2: KL is a
    loss term, l_t += beta * kl_t, aggregated like the policy loss.

    Deviation: the k3 exponent is clamped to [-20, 20] but its value is not [neggrad choice, as TRL;
    verl clamps the value to +-10].

    Args:
        logp: (B, T) log-probs of the sampled tokens under the current policy.
        ref_logp: (B, T) the same under the reference policy, no grad.
        estimator: one of ``KL_ESTIMATORS``.

    Returns:
        (B, T) per-token KL estimates.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown kl_estimator {estimator!r}: choose one of {sorted(KL_ESTIMATORS)}.")
    _check_same_shape(logp=logp, ref_logp=ref_logp)
    return KL_ESTIMATORS[estimator](logp, ref_logp)


def token_entropy(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) at each position, over the full vocabulary.

    H = -sum_v p_v log p_v, from ``log_softmax`` so large logits do not overflow. Logits of -inf (a
    banned token) give p = 0 and add nothing, with finite gradients. Pass temperature-scaled logits
    (docs/algorithms.md §1.1). Half-precision logits are computed in float32, which holds a (B, T, V) copy.

    Args:
        logits: (B, T, V).

    Returns:
        (B, T) entropies in nats, float32 or wider.
    """
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)  # (B, T, V)
    finite_logp = logp.clamp(min=torch.finfo(logp.dtype).min)  # -inf -> finite, so 0 * logp is 0, not NaN
    return -(logp.exp() * finite_logp).sum(dim=-1)  # (B, T)


LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "seq_sum")


def step_denominators(mask: Tensor) -> tuple[int, int]:
    """The optimizer step's loss denominators: S, completions with a valid token, and the token count.

    Compute them once over every micro-batch of the step before the first backward
    (docs/algorithms.md §4); under data parallelism, sum each over processes.

    Args:
        mask: (B, T) bool or 0/1 completion mask of the whole step, trained rows only.

    Returns:
        (num_sequences, num_tokens).
    """
    lengths = (mask != 0).sum(dim=1)  # (B,)
    return int((lengths > 0).sum()), int(lengths.sum())


def aggregate_loss(
    token_loss: Tensor,
    mask: Tensor,
    *,
    loss_type: str,
    num_sequences: int,
    num_tokens: int,
    max_completion_length: int,
) -> Tensor:
    """One micro-batch's share of the step's loss: its masked sum over the whole step's denominator.

    docs/algorithms.md §4, with n_i the valid tokens of completion i, S = ``num_sequences`` and
    L = ``max_completion_length``:
        grpo     (1/S) sum_i (1/n_i) sum_t l_it   (Shao et al. 2024, arXiv:2402.03300, Eq. 3)
        dapo     sum_i sum_t l_it / sum_i n_i     (Yu et al. 2025, arXiv:2503.14476, Sec. 3.3)
        dr_grpo  sum_i sum_t l_it / (S * L)       (Liu et al. 2025, arXiv:2503.20783)
        seq_sum  (1/S) sum_i sum_t l_it
    Summed over the micro-batches of a step these shares give the loss of the whole batch exactly;
    averaging micro-batch means would not for ``dapo`` [neggrad choice]. ``dr_grpo`` divides by the
    configured L, never the batch's longest completion [neggrad choice, as TRL]. Rows with n_i = 0
    contribute 0.

    Args:
        token_loss: (b, T) per-token losses of this micro-batch.
        mask: (b, T) bool or 0/1 completion mask of this micro-batch.
        loss_type: one of ``LOSS_TYPES``.
        num_sequences, num_tokens: of the whole step, from ``step_denominators``.
        max_completion_length: L, used by ``dr_grpo``.

    Returns:
        Scalar loss share.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}: choose one of {list(LOSS_TYPES)}.")
    if token_loss.shape != mask.shape or token_loss.ndim != 2:
        raise ValueError(
            f"token_loss {tuple(token_loss.shape)} and mask {tuple(mask.shape)} must be the same (B, T) shape."
        )
    if num_sequences < 1 or num_tokens < 1:
        raise ValueError(
            f"the step has num_sequences={num_sequences}, num_tokens={num_tokens}: "
            "a step without valid tokens has no loss, skip its update."
        )
    valid = mask != 0
    masked = torch.where(valid, token_loss, 0.0)  # (b, T): padding can hold NaN and must not leak
    if loss_type == "dapo":
        return masked.sum() / num_tokens
    if loss_type == "grpo":
        lengths = valid.sum(dim=1).clamp(min=1)  # (b,), rows with n_i = 0 have a zero sum
        return (masked.sum(dim=1) / lengths).sum() / num_sequences
    if loss_type == "dr_grpo":
        return masked.sum() / (num_sequences * max_completion_length)
    return masked.sum() / num_sequences  # seq_sum
