"""Sequence advantages from a group's rewards or correctness: GRPO, RLOO, NGRPO and the unnormalised baselines.

Every estimator maps a (P, G) tensor, one row per prompt's group of G completions, to (P, G)
advantages, one scalar per completion that the trainer broadcasts over its tokens
(docs/algorithms.md §2). ``group_advantages`` is the entry point; ``ESTIMATORS`` names the functions it dispatches to.
"""

import inspect

import torch
from torch import Tensor

from neggrad.core.groups import check_correct, check_groups


def _centred(values: Tensor) -> Tensor:
    """(P, N) values minus their row mean, exactly 0 in rows whose values are all equal.

    A row of equal floats can have a mean that differs from them by rounding (three times 0.1 in
    float32); the mask keeps the promise of docs/algorithms.md §2 that equal rewards give exactly 0.
    """
    flat = (values == values[:, :1]).all(dim=1, keepdim=True)  # (P, 1)
    return (values - values.mean(dim=1, keepdim=True)).masked_fill(flat, 0.0)  # (P, N)


def grpo_advantages(
    rewards: Tensor, *, scale_rewards: str = "group", eps: float = 1e-6, clamp_negative_advantages: bool = False
) -> Tensor:
    """Group-relative advantage of each completion: its reward minus the group mean, over the group std.

    GRPO: A_i = (r_i - mean(r)) / (std(r) + eps) (Shao et al. 2024, arXiv:2402.03300, Sec. 4.1).
    ``scale_rewards="none"`` is Dr. GRPO's A_i = r_i - mean(r) (Liu et al. 2025, arXiv:2503.20783);
    ``"batch"`` keeps the per-group mean but divides by the std of every reward in the
    batch, as TRL does. ``clamp_negative_advantages`` is "Pos Only" (Deng et al. 2025,
    arXiv:2505.18830v1, Sec. 3): negative advantages become 0 and those rows stay in the batch.

    Deviations [neggrad choice]: the std is unbiased (n - 1), as in TRL and verl; eps = 1e-6 is added
    to the std, as in verl (TRL uses 1e-4). Equal rewards give exactly 0.

    Args:
        rewards: (P, G) float, one row per prompt's group.
        scale_rewards: "group", "batch" or "none".
        eps: added to the std, so a group of equal rewards gets zeros.
        clamp_negative_advantages: set negative advantages to 0 (Pos Only).

    Returns:
        (P, G) advantages.
    """
    adv = _centred(rewards)  # (P, G)
    if scale_rewards == "group":
        adv = adv / (rewards.std(dim=1, keepdim=True, correction=1) + eps)
    elif scale_rewards == "batch":
        adv = adv / (rewards.std(correction=1) + eps)  # one std over all P * G rewards
    elif scale_rewards != "none":
        raise ValueError(f'scale_rewards must be "group", "batch" or "none", got {scale_rewards!r}.')
    return adv.clamp(min=0.0) if clamp_negative_advantages else adv


def rloo_advantages(rewards: Tensor) -> Tensor:
    """Leave-one-out advantage: each reward minus the mean of the other G - 1 rewards of its group.

    RLOO (Ahmadian et al. 2024, arXiv:2402.14740; after Kool et al. 2019):
    A_i = r_i - sum_{j != i} r_j / (G - 1) = G / (G - 1) * (r_i - mean(r)). No std scaling.

    Args:
        rewards: (P, G) float.

    Returns:
        (P, G) advantages.
    """
    num_generations = rewards.shape[1]
    return num_generations / (num_generations - 1) * _centred(rewards)  # (P, G)


def ngrpo_advantages(
    rewards: Tensor, *, num_virtual: int = 1, virtual_reward: float = 1.0, eps: float = 1e-6
) -> Tensor:
    """NGRPO advantage calibration: virtual max-reward samples join each group's mean and std.

    Nan et al. 2025, arXiv:2509.18851v1, Sec. 4.1, Eq. 6: with R' = {r_1..r_G} and ``num_virtual``
    copies of ``virtual_reward`` (r_max), A_i = (r_i - mean(R')) / (std(R') + eps) for the G real
    completions only. An all-wrong binary group of 8 gets -1/3 each instead of 0; an all-correct one
    still gets 0.

    Deviation: the std is unbiased over the G + num_virtual values, as the authors' code and Fig. 3;
    the printed Eq. 6 is the population form [neggrad choice, docs/algorithms.md §2].

    Args:
        rewards: (P, G) float.
        num_virtual: how many virtual samples join each group, at least 1.
        virtual_reward: their reward r_max, the reward scheme's maximum (``REWARD_MAX``).
        eps: added to the std.

    Returns:
        (P, G) advantages of the real completions.
    """
    if num_virtual < 1:
        raise ValueError(f"num_virtual must be >= 1, got {num_virtual}: with no virtual sample use method 'grpo'.")
    virtual = rewards.new_full((rewards.shape[0], num_virtual), virtual_reward)  # (P, num_virtual)
    augmented = torch.cat([rewards, virtual], dim=1)  # (P, G + num_virtual)
    adv = _centred(augmented)[:, : rewards.shape[1]]  # (P, G): real completions only
    return adv / (augmented.std(dim=1, keepdim=True, correction=1) + eps)


def psr_advantages(correct: Tensor) -> Tensor:
    """Positive sample reinforcement: A = +1 on correct completions; wrong ones are dropped (A = 0 there).

    PSR (Zhu et al. 2025, arXiv:2506.01347, the L_PSR term of its objective decomposition; official
    code). No group statistics. The dropped rows also leave the loss denominators: see
    ``trained_rows``.

    Args:
        correct: (P, G) bool.

    Returns:
        (P, G) float advantages.
    """
    return correct.float()  # (P, G)


def nsr_advantages(correct: Tensor) -> Tensor:
    """Negative sample reinforcement: A = -1 on wrong completions; correct ones are dropped (A = 0 there).

    NSR (Zhu et al. 2025, arXiv:2506.01347, the L_NSR term; official code). No group statistics. The
    dropped rows also leave the loss denominators: see ``trained_rows``.

    Args:
        correct: (P, G) bool.

    Returns:
        (P, G) float advantages.
    """
    return -(~correct).float()  # (P, G)


def w_reinforce_advantages(correct: Tensor, *, positive_weight: float = 0.1) -> Tensor:
    """Weighted REINFORCE: A = +positive_weight on correct completions, -1 on wrong ones.

    W-REINFORCE (Zhu et al. 2025, arXiv:2506.01347; lambda = 0.1 in the paper and its code). Every
    row is trained; no group statistics.

    Args:
        correct: (P, G) bool.
        positive_weight: lambda, the weight of a correct completion.

    Returns:
        (P, G) float advantages.
    """
    return torch.where(correct, positive_weight, -1.0)  # (P, G)


def raft_advantages(correct: Tensor) -> Tensor:
    """RAFT: A = 1 on correct completions, 0 on wrong ones (rejection-sampling fine-tuning).

    RAFT / RAFT++ (Xiong et al. 2025, arXiv:2504.11343; official code). Wrong rows stay in the batch
    with A = 0, as in the official code [neggrad choice, docs/algorithms.md §2], so they count in the
    denominators.

    Args:
        correct: (P, G) bool.

    Returns:
        (P, G) float advantages.
    """
    return correct.float()  # (P, G)


def reinforce_rej_advantages(rewards: Tensor) -> Tensor:
    """Reinforce-Rej: the reward itself is the advantage, A = r, with no baseline.

    Xiong et al. 2025, arXiv:2504.11343. With the ``pm1`` reward scheme a correct completion gets +1
    and a wrong one -1 [neggrad choice: the paper's +-1; its code's 1/0 would zero the wrong ones].
    Zero-variance groups are filtered out before this, by ``group_filter: zero_std``.

    Args:
        rewards: (P, G) float.

    Returns:
        (P, G) advantages, a copy of ``rewards``.
    """
    return rewards.clone()


ESTIMATORS = {
    "grpo": grpo_advantages,
    "rloo": rloo_advantages,
    "ngrpo": ngrpo_advantages,
    "psr": psr_advantages,
    "nsr": nsr_advantages,
    "w_reinforce": w_reinforce_advantages,
    "raft": raft_advantages,
    "reinforce_rej": reinforce_rej_advantages,
}


def _check_method(method: str) -> None:
    if method not in ESTIMATORS:
        raise ValueError(f"unknown advantage method {method!r}: choose one of {sorted(ESTIMATORS)}.")


def group_advantages(
    rewards: Tensor,
    *,
    method: str = "grpo",
    correct: Tensor | None = None,
    scale_rewards: str = "group",
    eps: float = 1e-6,
    clamp_negative_advantages: bool = False,
    num_virtual: int = 1,
    virtual_reward: float = 1.0,
    positive_weight: float = 0.1,
    scorable: Tensor | None = None,
) -> Tensor:
    """Advantages of each completion from its group, by the estimator named ``method``.

    The estimators and their papers are the functions of ``ESTIMATORS``. Each receives the inputs
    its signature names: ``rewards`` for grpo, rloo, ngrpo and reinforce_rej; the binary
    ``correct`` for psr, nsr, w_reinforce and raft, which ignore shaped rewards (docs/algorithms.md §2).
    Hyperparameters an estimator does not read are ignored, except two that would silently change
    nothing: ``clamp_negative_advantages`` and ``scale_rewards != "group"`` are refused on any
    method but grpo [neggrad choice, docs/algorithms.md §14].

    Args:
        rewards: (P, G) float rewards, one row per prompt's group of G >= 2 completions.
        method: one of ``ESTIMATORS``.
        correct: (P, G) bool verifier outcomes; required by psr, nsr, w_reinforce and raft.
        scale_rewards, eps, clamp_negative_advantages: see ``grpo_advantages`` (eps also NGRPO's).
        num_virtual, virtual_reward: see ``ngrpo_advantages``.
        positive_weight: see ``w_reinforce_advantages``.
        scorable: (P, G) bool, False where the verifier abstained (docs/algorithms.md §1.3, as TRL's ``None``
            rewards): such answers are left out of their group's statistics (mean, std, RLOO's
            leave-one-out baseline: the estimator runs on the scorable answers alone) and get
            advantage 0; a group with fewer than 2 scorable answers gets 0 throughout.

    Returns:
        (P, G) advantages in the dtype of ``rewards``.
    """
    _check_method(method)
    check_groups(rewards, name="rewards")
    if not rewards.is_floating_point():
        raise ValueError(f"rewards must be a float tensor, got dtype {rewards.dtype}: convert with rewards.float().")
    if not torch.isfinite(rewards).all():
        raise ValueError(
            "rewards contain NaN or inf: fix the reward function or the shaping terms that produced them."
        )
    if method != "grpo" and clamp_negative_advantages:
        raise ValueError(
            f"clamp_negative_advantages (Pos Only) needs method 'grpo', got {method!r}: "
            "set clamp_negative_advantages=False or method='grpo'."
        )
    if method != "grpo" and scale_rewards != "group":
        raise ValueError(
            f"scale_rewards={scale_rewards!r} needs method 'grpo', got {method!r}: "
            "leave scale_rewards='group' for other estimators, which do their own scaling."
        )
    estimator = ESTIMATORS[method]
    params = inspect.signature(estimator).parameters
    if correct is not None:
        check_correct(correct, shape=rewards.shape)
    elif "correct" in params:
        raise ValueError(
            f"method {method!r} reads binary correctness, not rewards: pass correct=(P, G) bool verifier outcomes."
        )
    inputs = {
        "rewards": rewards,
        "correct": correct,
        "scale_rewards": scale_rewards,
        "eps": eps,
        "clamp_negative_advantages": clamp_negative_advantages,
        "num_virtual": num_virtual,
        "virtual_reward": virtual_reward,
        "positive_weight": positive_weight,
    }
    adv = estimator(**{name: inputs[name] for name in params})  # (P, G)
    if scorable is not None and not bool(scorable.all()):
        check_correct(scorable, shape=rewards.shape)
        adv = adv.clone()
        settings = {k: v for k, v in inputs.items() if k not in ("rewards", "correct")}
        for row in (~scorable.all(dim=1)).nonzero().squeeze(1).tolist():  # groups with abstentions: a loop
            keep = scorable[row]  # (G,)
            adv[row] = 0.0
            if int(keep.sum()) >= 2:  # the estimator on the scorable answers alone
                sub = None if correct is None else correct[row, keep][None]
                adv[row, keep] = group_advantages(rewards[row, keep][None], method=method, correct=sub, **settings)[0]
    return adv.to(rewards.dtype)


def trained_rows(correct: Tensor, *, method: str) -> Tensor:
    """Which completions enter the loss and its denominators (S and the token count of docs/algorithms.md §4).

    PSR trains on correct completions only and NSR on wrong ones only; their dropped rows leave the
    denominators (Zhu et al. 2025, arXiv:2506.01347, official code). Every other method trains on
    every row, including RAFT's wrong rows at A = 0 and Pos Only's clamped ones (docs/algorithms.md §2).

    Args:
        correct: (P, G) bool verifier outcomes.
        method: one of ``ESTIMATORS``.

    Returns:
        (P, G) bool, True for rows that are trained on.
    """
    _check_method(method)
    check_correct(correct)
    if method == "psr":
        return correct.clone()
    if method == "nsr":
        return ~correct
    return torch.ones_like(correct)
