"""Named presets: each method expands to plain config values that a user may override.

The matrix is docs/algorithms.md §14. A preset pins every method key, so the resolved ``config.yaml`` of a
run shows the values it trained with even if a default changes later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """A named method: where it comes from and the config values it sets."""

    name: str
    source: str
    summary: str
    values: dict[str, Any] = field(default_factory=dict)


_BASE: dict[str, Any] = {
    "reward_scheme": "binary",
    "group_filter": "none",
    "refill": False,
    "advantage_estimator": "grpo",
    "scale_rewards": "group",
    "clamp_negative_advantages": False,
    "epsilon": 0.2,
    "epsilon_high": 0.2,
    "dual_clip": None,
    "policy_loss": "clipped",
    "loss_type": "dapo",
    "beta": 0.0,
    "entropy_coef": 0.0,
    "overlong_buffer_len": 0,
}


def _preset(name: str, source: str, summary: str, **values: Any) -> Preset:
    return Preset(name, source, summary, {**_BASE, **values})


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _preset(
            "grpo",
            "Shao et al. 2024, arXiv:2402.03300",
            "group-normalised advantages, clipped surrogate",
            loss_type="grpo",
        ),
        _preset(
            "dr_grpo",
            "Liu et al. 2025, arXiv:2503.20783",
            "no std scaling, constant-length normaliser",
            scale_rewards="none",
            loss_type="dr_grpo",
        ),
        _preset(
            "dapo",
            "Yu et al. 2025, arXiv:2503.14476",
            "clip-higher, dynamic sampling with refill, token-mean loss, soft overlong penalty, +-1 reward",
            reward_scheme="pm1",
            group_filter="zero_std",
            refill=True,
            epsilon_high=0.28,
            overlong_buffer_len="L//5",
        ),
        _preset(
            "rloo", "Ahmadian et al. 2024, arXiv:2402.14740", "leave-one-out baseline", advantage_estimator="rloo"
        ),
        _preset(
            "ngrpo",
            "Nan et al. 2025, arXiv:2509.18851",
            "virtual max-reward sample in mean and std, asymmetric clip 0.16/0.24, all-correct groups refilled",
            advantage_estimator="ngrpo",
            group_filter="all_correct",
            refill=True,
            epsilon=0.16,
            epsilon_high=0.24,
        ),
        _preset(
            "nthr",
            "Deng et al. 2025, arXiv:2505.18830",
            "grpo + NTHR: wrong-answer tokens that resemble correct ones keep less penalty",
            loss_type="dapo",  # the paper's objective (Eq. 9) averages token losses over all tokens of the batch
            nthr={"enabled": True},
        ),
        _preset(
            "pos_only",
            "Deng et al. 2025, arXiv:2505.18830 Sec. 3",
            "GRPO with negative advantages set to 0",
            clamp_negative_advantages=True,
            loss_type="grpo",
        ),
        _preset(
            "psr",
            "Zhu et al. 2025, arXiv:2506.01347",
            "train on correct answers only, A = +1",
            advantage_estimator="psr",
        ),
        _preset(
            "nsr",
            "Zhu et al. 2025, arXiv:2506.01347",
            "train on wrong answers only, A = -1",
            advantage_estimator="nsr",
        ),
        _preset(
            "w_reinforce",
            "Zhu et al. 2025, arXiv:2506.01347",
            "A = +lambda correct, -1 wrong (lambda 0.1)",
            advantage_estimator="w_reinforce",
        ),
        _preset(
            "raft",
            "Xiong et al. 2025, arXiv:2504.11343",
            "rejection-sampling fine-tuning: -log p of correct",
            advantage_estimator="raft",
            policy_loss="logp",
            epsilon_high=None,
        ),
        _preset(
            "raft_pp",
            "Xiong et al. 2025, arXiv:2504.11343",
            "RAFT with ratio, clip and dual clip 3",
            advantage_estimator="raft",
            dual_clip=3.0,
        ),
        _preset(
            "reinforce_rej",
            "Xiong et al. 2025, arXiv:2504.11343",
            "A = +-1, zero-variance groups dropped without refill, dual clip 3",
            reward_scheme="pm1",
            group_filter="zero_std",
            advantage_estimator="reinforce_rej",
            dual_clip=3.0,
        ),
    )
}


def apply_preset(tree: dict[str, Any]) -> dict[str, Any]:
    """Fill the keys a raw config leaves unset with its method's preset values.

    Raises:
        ValueError: unknown method name (the message lists the valid ones).
    """
    name = tree.get("method", "grpo")
    if name not in PRESETS:
        raise ValueError(f"method: unknown method {name!r}; choose one of {', '.join(PRESETS)}")
    merged = dict(tree)
    for key, value in PRESETS[name].values.items():
        if isinstance(value, dict):  # a section: fill only the sub-keys the file leaves unset
            section = merged.get(key)
            merged[key] = (
                {**value, **section} if isinstance(section, dict) else (value if section is None else section)
            )
            continue
        if key in merged:
            continue
        if value == "L//5":  # DAPO: 4096 of 20480 tokens
            from neggrad.config import Config  # noqa: PLC0415 (config imports this module lazily)

            length = merged.get("max_completion_length", Config.model_fields["max_completion_length"].default)
            value = int(length) // 5 if isinstance(length, int) else 0
        merged[key] = value
    return merged
