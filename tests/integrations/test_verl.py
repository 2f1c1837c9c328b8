"""neggrad's verl functions, called with verl 0.9's documented signatures, against neggrad's core.

verl is not in neggrad's own venv (verl 0.9 imports ray at ``import verl`` and pins transformers<5.11), so here
the functions are called exactly as verl's ``compute_advantage`` and ``workers/utils/losses.py`` call registry
entries, and ``register()`` is checked against a stand-in ``core_algos`` with verl's two decorators. The same
calls through the real verl are ``test_verl_real.py``, run by ``make test-verl`` in its own venv.
"""

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from neggrad.core.advantages import group_advantages
from neggrad.core.losses import aggregate_loss, clipped_surrogate
from neggrad.integrations import verl as neggrad_verl

HAS_VERL = importlib.util.find_spec("verl") is not None


CLIP = {"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0}


class ActorConfig(dict):
    """verl's ActorConfig reads both ways: ``config.get("clip_ratio")`` and ``config.global_batch_info``."""

    __getattr__ = dict.__getitem__


def verl_batch(scores: list[float], uids: list[str], length: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """token_level_rewards with each outcome score on the last valid token, as verl's reward managers write it."""
    lengths = torch.tensor([2 + i % (length - 2) for i in range(len(scores))])  # (B,) 2..length-1 tokens
    mask = (torch.arange(length)[None, :] < lengths[:, None]).float()  # (B, T)
    rewards = torch.zeros(len(scores), length)
    rewards[torch.arange(len(scores)), lengths - 1] = torch.tensor(scores)
    return rewards, mask


def test_ngrpo_with_verls_signature_on_interleaved_groups():
    # R1 = [1, 0, 0, 0, 0, 0, 0, 0] (as in tests/core): NGRPO gives 1.763830 to the correct one, -0.503951 to the rest.
    # verl's batch need not keep a group together: rows alternate between prompts "a" and "b" here.
    r1 = [1.0] + [0.0] * 7
    r4 = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    scores = [x for pair in zip(r1, r4, strict=True) for x in pair]
    uids = np.array(["a", "b"] * 8, dtype=object)
    rewards, mask = verl_batch(scores, list(uids))
    fn = neggrad_verl.ADV_ESTIMATORS["neggrad_ngrpo"]
    advantages, returns = fn(token_level_rewards=rewards, response_mask=mask, config={}, index=uids)
    assert advantages.shape == mask.shape and torch.equal(advantages, returns)
    seq = advantages.sum(dim=1) / mask.sum(dim=1)  # (B,) the per-token value, broadcast over valid tokens
    expected = group_advantages(torch.tensor([r1, r4]), method="ngrpo")  # (2, 8)
    torch.testing.assert_close(seq[0::2], expected[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(seq[1::2], expected[1], atol=1e-6, rtol=0)
    assert seq[0] == pytest.approx(1.763830, abs=1e-5) and seq[2] == pytest.approx(-0.503951, abs=1e-5)
    assert torch.all(advantages[mask == 0] == 0)


def test_grpo_follows_norm_adv_by_std_in_grpo():
    # Dr. GRPO on R1: 1 - 0.125 = 0.875 and -0.125 (as in tests/core), when verl's config says not to scale
    rewards, mask = verl_batch([1.0] + [0.0] * 7, ["p"] * 8)
    fn = neggrad_verl.ADV_ESTIMATORS["neggrad_grpo"]
    adv, _ = fn(rewards, mask, np.array(["p"] * 8, dtype=object), config={"norm_adv_by_std_in_grpo": False})
    seq = adv.sum(dim=1) / mask.sum(dim=1)
    torch.testing.assert_close(seq, torch.tensor([0.875] + [-0.125] * 7), atol=1e-6, rtol=0)


def test_w_reinforce_reads_correctness_from_the_score():
    # correctness [1, 0, 0, 1] -> +0.1 / -1 (W-REINFORCE, docs/algorithms.md §2)
    rewards, mask = verl_batch([1.0, 0.0, 0.0, 1.0], ["p"] * 4)
    fn = neggrad_verl.ADV_ESTIMATORS["neggrad_w_reinforce"]
    adv, _ = fn(token_level_rewards=rewards, response_mask=mask, config=None, index=np.array(["p"] * 4))
    torch.testing.assert_close(adv.sum(dim=1) / mask.sum(dim=1), torch.tensor([0.1, -1.0, -1.0, 0.1]))


def test_split_groups_are_refused():
    rewards, mask = verl_batch([1.0, 0.0, 0.0], ["a", "a", "b"])
    with pytest.raises(ValueError, match="same number"):
        neggrad_verl.ADV_ESTIMATORS["neggrad_grpo"](rewards, mask, np.array(["a", "a", "b"], dtype=object))


def loss_inputs():
    # as in tests/core (eps 0.2 / 0.28): rho 1.5, A 1 -> -1.28 (high clip); rho 0.7, A -1 -> 0.8 (low clip);
    # rho 4, A -1 -> 4.0, or 3.0 under dual clip 3; the second row's last token is padding.
    ratio = torch.tensor([[1.5, 0.7, 4.0], [1.0, 1.2, 9.0]])
    adv = torch.tensor([[1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    old = torch.full((2, 3), -1.0)
    return old, old + ratio.log(), adv, mask


@pytest.mark.parametrize(
    ("mode", "loss_type"), [("token-mean", "dapo"), ("seq-mean-token-mean", "grpo"), ("seq-mean-token-sum", "seq_sum")]
)
def test_clipped_loss_with_verls_signature(mode, loss_type):
    old, logp, adv, mask = loss_inputs()
    config = ActorConfig(
        clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0, global_batch_info={}
    )
    loss, metrics = neggrad_verl.POLICY_LOSSES["neggrad_clipped"](
        old_log_prob=old,
        log_prob=logp,
        advantages=adv,
        response_mask=mask,
        loss_agg_mode=mode,
        config=config,
        rollout_is_weights=None,
    )
    token_loss, _ = clipped_surrogate(logp, old, adv, epsilon=0.2, epsilon_high=0.28)
    expected = aggregate_loss(
        token_loss, mask, loss_type=loss_type, num_sequences=2, num_tokens=5, max_completion_length=3
    )
    torch.testing.assert_close(loss, expected)
    if mode == "token-mean":  # (-1.28 + 0.8 + 4.0 - 1.0 - 1.2) / 5 tokens = 1.32 / 5
        assert float(loss) == pytest.approx(1.32 / 5, abs=1e-6)
    assert metrics["actor/pg_clipfrac"] == pytest.approx(2 / 5)  # the high and the low clip


def test_dual_clip_and_global_batch_info():
    # dual clip 3 caps 4.0 at 3.0: (-1.28 + 0.8 + 3.0 - 1.0 - 1.2) = 0.32 over the global 10 tokens, times dp_size 2
    old, logp, adv, mask = loss_inputs()
    info = {"dp_size": 2, "batch_num_tokens": 10, "global_batch_size": 4, "loss_scale_factor": None}
    config = ActorConfig(
        clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0, global_batch_info=info
    )
    loss, metrics = neggrad_verl.dual_clip_loss(old, logp, adv, mask, "token-mean", config, None)
    assert float(loss) == pytest.approx(0.32 / 10 * 2, abs=1e-6)
    assert metrics["actor/pg_clipfrac_lower"] == pytest.approx(1 / 5)


def test_unknown_aggregation_is_refused():
    old, logp, adv, mask = loss_inputs()
    with pytest.raises(ValueError, match="token-sum"):
        neggrad_verl.clipped_loss(old, logp, adv, mask, "token-sum", ActorConfig(clip_ratio=0.2, global_batch_info={}))


@pytest.mark.skipif(HAS_VERL, reason="verl is installed: the missing-verl message cannot be shown")
def test_register_without_verl_says_how_to_install():
    with pytest.raises(ImportError, match="pip install verl"):
        neggrad_verl.register()


def test_register_fills_verls_registries(monkeypatch):
    """A stand-in for verl.trainer.ppo.core_algos with verl's decorators, register_adv_est / register_policy_loss."""
    core_algos = types.ModuleType("verl.trainer.ppo.core_algos")
    core_algos.ADV_ESTIMATOR_REGISTRY, core_algos.POLICY_LOSS_REGISTRY = {}, {}

    def register_adv_est(name):
        def decorator(fn):
            if name in core_algos.ADV_ESTIMATOR_REGISTRY and core_algos.ADV_ESTIMATOR_REGISTRY[name] != fn:
                raise ValueError(f"Adv estimator {name} has already been registered")
            core_algos.ADV_ESTIMATOR_REGISTRY[name] = fn
            return fn

        return decorator

    def register_policy_loss(name):
        def decorator(fn):
            core_algos.POLICY_LOSS_REGISTRY[name] = fn
            return fn

        return decorator

    core_algos.register_adv_est, core_algos.register_policy_loss = register_adv_est, register_policy_loss
    ppo = types.ModuleType("verl.trainer.ppo")
    ppo.core_algos = core_algos
    for name, module in {
        "verl": types.ModuleType("verl"),
        "verl.trainer": types.ModuleType("verl.trainer"),
        "verl.trainer.ppo": ppo,
        "verl.trainer.ppo.core_algos": core_algos,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(neggrad_verl, "SETTINGS", dict(neggrad_verl.SETTINGS))
    names = neggrad_verl.register(positive_weight=0.2)
    assert neggrad_verl.register() == names  # twice is fine
    assert core_algos.ADV_ESTIMATOR_REGISTRY["neggrad_ngrpo"] is neggrad_verl.ADV_ESTIMATORS["neggrad_ngrpo"]
    assert core_algos.POLICY_LOSS_REGISTRY["neggrad_clipped"] is neggrad_verl.clipped_loss
    assert set(names) == set(core_algos.ADV_ESTIMATOR_REGISTRY) | set(core_algos.POLICY_LOSS_REGISTRY)
    assert neggrad_verl.SETTINGS["positive_weight"] == 0.2
    with pytest.raises(ValueError, match="unknown settings"):
        neggrad_verl.register(lam=1.0)
