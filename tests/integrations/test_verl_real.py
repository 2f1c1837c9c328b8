"""neggrad's estimators and losses through the real verl 0.9: its registries, its dispatch, its DataProto.

Runs only where verl is importable (``make test-verl`` builds ``.venv-verl`` with verl and its pins); the
normal suite skips this file. Every expected value is a ``neggrad.core`` function, or verl's own built-in
(``grpo``, ``rloo``, ``vanilla``) where neggrad's entry should agree with it.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

verl = pytest.importorskip("verl")

from omegaconf import OmegaConf  # noqa: E402 (verl's own dependency; only importable after the skip)
from tensordict import TensorDict  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.config import AlgoConfig  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402
from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories  # noqa: E402
from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.workers.config import ActorConfig  # noqa: E402
from verl.workers.config.actor import PolicyLossConfig  # noqa: E402
from verl.workers.utils.losses import ppo_loss  # noqa: E402

from neggrad.core.advantages import ESTIMATORS, group_advantages  # noqa: E402
from neggrad.core.losses import aggregate_loss, clipped_surrogate, logp_policy_loss  # noqa: E402
from neggrad.integrations import verl as neggrad_verl  # noqa: E402

GROUPS = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0], [0.2, 0.9, 0.0, 1.0]]
"""(P, G) outcome scores: one correct of four, three of four, and shaped scores (correct iff > 0.5)."""
ROWS = [5, 2, 11, 8, 0, 3, 9, 6, 1, 10, 4, 7]
"""verl's row order: row r holds flat response ROWS[r] = p * G + g, so the groups are interleaved."""
RESPONSE_LENGTH = 6


@pytest.fixture(scope="module", autouse=True)
def registered():
    return neggrad_verl.register()


def rollout_batch() -> DataProto:
    """A DataProto as verl's trainer hands it to ``compute_advantage``: uid, response_mask, token_level_rewards."""
    flat = torch.tensor(GROUPS).reshape(-1)  # (P * G,)
    G = len(GROUPS[0])
    scores = flat[ROWS]  # (B,)
    lengths = torch.tensor([1 + r % RESPONSE_LENGTH for r in range(len(ROWS))])  # (B,) 1..6 tokens
    mask = (torch.arange(RESPONSE_LENGTH)[None, :] < lengths[:, None]).float()  # (B, T)
    rewards = torch.zeros(len(ROWS), RESPONSE_LENGTH)
    rewards[torch.arange(len(ROWS)), lengths - 1] = scores  # the outcome score on the last valid token
    uids = np.array([f"prompt-{row // G}" for row in ROWS], dtype=object)
    return DataProto.from_dict(
        tensors={"token_level_rewards": rewards, "response_mask": mask}, non_tensors={"uid": uids}
    )


def expected_advantages(method: str, **kwargs) -> torch.Tensor:
    """(B,) neggrad's group advantages, in verl's row order."""
    rewards = torch.tensor(GROUPS)
    adv = group_advantages(rewards, method=method, correct=rewards > 0.5, **kwargs)  # (P, G)
    return adv.reshape(-1)[ROWS]


def per_row(data: DataProto, key: str) -> torch.Tensor:
    """(B,) the value verl broadcast over each row's valid tokens; checks the padding got 0."""
    values, mask = data.batch[key], data.batch["response_mask"]
    assert torch.all(values[mask == 0] == 0)
    first = values[:, 0]
    torch.testing.assert_close(values, first[:, None] * mask)
    return first


def test_register_fills_verls_real_registries(registered):
    assert registered == [*neggrad_verl.ADV_ESTIMATORS, *neggrad_verl.POLICY_LOSSES]
    for name, fn in neggrad_verl.ADV_ESTIMATORS.items():
        assert core_algos.get_adv_estimator_fn(name) is fn
    for name, fn in neggrad_verl.POLICY_LOSSES.items():
        assert core_algos.get_policy_loss_fn(name) is fn
    assert core_algos.get_adv_estimator_fn("grpo") is core_algos.compute_grpo_outcome_advantage  # verl's own kept
    assert core_algos.get_policy_loss_fn("vanilla") is core_algos.compute_policy_loss_vanilla
    assert neggrad_verl.register() == registered  # again: verl's register_adv_est refuses a different function


def test_plugin_module_registers_when_verl_is_imported():
    """verl imports each module of VERL_USE_EXTERNAL_MODULES in ``import verl``, in a fresh process."""
    code = (
        "import verl\n"
        "from verl.trainer.ppo import core_algos\n"
        "print(sorted(n for n in core_algos.ADV_ESTIMATOR_REGISTRY if n.startswith('neggrad_')))\n"
        "print(sorted(n for n in core_algos.POLICY_LOSS_REGISTRY if n.startswith('neggrad_')))\n"
    )
    env = {**os.environ, "VERL_USE_EXTERNAL_MODULES": "neggrad.integrations.verl_plugin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()[-2:]
    assert lines == [str(sorted(neggrad_verl.ADV_ESTIMATORS)), str(sorted(neggrad_verl.POLICY_LOSSES))]


@pytest.mark.parametrize("method", sorted(ESTIMATORS))
def test_compute_advantage_dispatches_to_neggrad(method):
    data = compute_advantage(rollout_batch(), adv_estimator=f"neggrad_{method}", config=AlgoConfig())
    torch.testing.assert_close(per_row(data, "advantages"), expected_advantages(method), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(data.batch["returns"], data.batch["advantages"])


def test_v1_trainer_path_with_a_hydra_config():
    """The v1 trainer calls ``compute_advantage_for_multi_trajectories`` with ``config.algorithm``, a DictConfig."""
    algorithm = OmegaConf.create({"adv_estimator": "neggrad_ngrpo", "norm_adv_by_std_in_grpo": True, "gamma": 1.0})
    keys = [f"prompt-{row // 4}_0_0" for row in ROWS]
    data = compute_advantage_for_multi_trajectories(
        rollout_batch(), batch_keys=keys, adv_estimator=algorithm.adv_estimator, num_repeat=4, config=algorithm
    )
    ngrpo = per_row(data, "advantages")
    torch.testing.assert_close(ngrpo, expected_advantages("ngrpo"), atol=1e-6, rtol=1e-6)
    # NGRPO by hand on [1, 0, 0, 0]: the virtual reward 1 makes [1, 0, 0, 0, 1], mean 0.4, unbiased std sqrt(0.3)
    assert ngrpo[ROWS.index(0)] == pytest.approx(0.6 / 0.3**0.5, abs=1e-5)
    assert ngrpo[ROWS.index(1)] == pytest.approx(-0.4 / 0.3**0.5, abs=1e-5)


@pytest.mark.parametrize("norm", [True, False])
def test_neggrad_grpo_equals_verls_grpo(norm):
    config = AlgoConfig(norm_adv_by_std_in_grpo=norm)
    ours = compute_advantage(rollout_batch(), "neggrad_grpo", norm_adv_by_std_in_grpo=norm, config=config)
    theirs = compute_advantage(rollout_batch(), "grpo", norm_adv_by_std_in_grpo=norm, config=config)
    torch.testing.assert_close(ours.batch["advantages"], theirs.batch["advantages"])
    scale = "group" if norm else "none"
    torch.testing.assert_close(per_row(ours, "advantages"), expected_advantages("grpo", scale_rewards=scale))


def test_neggrad_rloo_equals_verls_rloo():
    ours = compute_advantage(rollout_batch(), "neggrad_rloo", config=AlgoConfig())
    theirs = compute_advantage(rollout_batch(), "rloo", config=AlgoConfig())
    torch.testing.assert_close(ours.batch["advantages"], theirs.batch["advantages"])


def test_a_split_group_is_refused_through_verls_dispatch():
    data = rollout_batch()
    data.non_tensor_batch["uid"][0] = "a-prompt-of-its-own"
    with pytest.raises(ValueError, match="same number"):
        compute_advantage(data, "neggrad_ngrpo", config=AlgoConfig())


# ---- policy losses, through verl's actor loss (workers/utils/losses.py: ppo_loss) ----

B, PROMPT, T = 4, 3, 5
LENGTHS = torch.tensor([5, 3, 2, 4])
GLOBAL = {"dp_size": 2, "batch_num_tokens": 30, "global_batch_size": 9}
"""This micro-batch is part of a 2-rank step of 9 sequences and 30 tokens, as verl's engine reports it."""


def actor_batch(weights: bool):
    """verl's padded actor micro-batch, and the model's flat log-probs for every token of every sequence."""
    gen = torch.Generator().manual_seed(0)
    mask = (torch.arange(T)[None, :] < LENGTHS[:, None]).long()  # (B, T)
    old = -torch.rand(B, T, generator=gen) - 0.5
    log_prob = old + 0.6 * torch.randn(B, T, generator=gen)  # ratios from ~0.2 to ~5: every clip is hit
    adv = torch.randn(B, T, generator=gen)
    fields = {
        "prompts": torch.randint(0, 50, (B, PROMPT), generator=gen),
        "responses": torch.randint(0, 50, (B, T), generator=gen),
        "attention_mask": torch.cat([torch.ones(B, PROMPT, dtype=torch.long), mask], dim=1),
        "response_mask": mask,
        "old_log_probs": old,
        "advantages": adv,
    }
    if weights:
        fields["rollout_is_weights"] = 0.5 + torch.rand(B, T, generator=gen)
    data = TensorDict(fields, batch_size=[B])
    tu.assign_non_tensor(data, **GLOBAL)
    # the model's output is one log-prob per input token; the one before each response token scores it
    flat = []
    for i, n in enumerate(LENGTHS.tolist()):
        flat += [torch.zeros(PROMPT - 1), log_prob[i, :n], torch.zeros(1)]
    flat = torch.cat(flat).requires_grad_()
    return data, flat, log_prob


def run_ppo_loss(loss_mode: str, agg: str, weights: bool = False):
    config = ActorConfig(
        strategy="fsdp",
        rollout_n=4,
        ppo_micro_batch_size_per_gpu=B,
        clip_ratio=0.2,
        clip_ratio_low=0.16,
        clip_ratio_high=0.24,
        clip_ratio_c=3.0,
        loss_agg_mode=agg,
        loss_scale_factor=8 if agg == "seq-mean-token-sum-norm" else None,
        policy_loss=PolicyLossConfig(loss_mode=loss_mode),
    )
    data, flat, log_prob = actor_batch(weights)
    loss, metrics = ppo_loss(config, {"log_probs": flat}, data)
    (grad,) = torch.autograd.grad(loss, flat)
    return loss, {k: v.aggregate() for k, v in metrics.items()}, grad, data, log_prob


AGGS = list(neggrad_verl.AGG_MODES)


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("loss_mode", sorted(neggrad_verl.POLICY_LOSSES))
def test_ppo_loss_dispatches_to_neggrad(loss_mode, agg):
    weights = loss_mode == "neggrad_clipped"  # verl's rollout-correction weights on one of the three
    loss, metrics, _, data, log_prob = run_ppo_loss(loss_mode, agg, weights=weights)
    old, adv, mask = data["old_log_probs"], data["advantages"], data["response_mask"].bool()
    if loss_mode == "neggrad_logp":
        token_loss = logp_policy_loss(log_prob, adv)
    else:
        dual = 3.0 if loss_mode == "neggrad_dual_clip" else None
        token_loss, _ = clipped_surrogate(log_prob, old, adv, epsilon=0.16, epsilon_high=0.24, dual_clip=dual)
    if weights:
        token_loss = token_loss * data["rollout_is_weights"]
    expected = aggregate_loss(
        token_loss,
        mask,
        loss_type=neggrad_verl.AGG_MODES[agg],
        num_sequences=GLOBAL["global_batch_size"],
        num_tokens=GLOBAL["batch_num_tokens"],
        max_completion_length=8 if agg == "seq-mean-token-sum-norm" else T,
    )
    torch.testing.assert_close(loss.detach(), expected * GLOBAL["dp_size"])
    assert metrics["actor/pg_loss"] == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.parametrize("agg", AGGS)
def test_neggrad_dual_clip_equals_verls_vanilla(agg):
    """verl's vanilla always applies the dual clip; neggrad_dual_clip must give its loss, gradient and metrics."""
    ours, our_metrics, our_grad, *_ = run_ppo_loss("neggrad_dual_clip", agg, weights=True)
    theirs, their_metrics, their_grad, *_ = run_ppo_loss("vanilla", agg, weights=True)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(our_grad, their_grad)
    assert our_grad.abs().sum() > 0
    for key in ("actor/pg_clipfrac", "actor/pg_clipfrac_lower", "actor/ppo_kl"):
        assert our_metrics[key] == pytest.approx(their_metrics[key], abs=1e-6), key
    assert our_metrics["actor/pg_clipfrac"] > 0 and our_metrics["actor/pg_clipfrac_lower"] > 0


def test_neggrad_clipped_differs_from_vanilla_only_by_the_dual_clip():
    ours, *_ = run_ppo_loss("neggrad_clipped", "token-mean")
    dual, *_ = run_ppo_loss("neggrad_dual_clip", "token-mean")
    vanilla, *_ = run_ppo_loss("vanilla", "token-mean")
    torch.testing.assert_close(dual, vanilla)
    assert ours.item() > dual.item()  # the batch has a ratio > 3 under a negative advantage, which the dual clip caps
