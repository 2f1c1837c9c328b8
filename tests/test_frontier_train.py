"""The wrong-answer options (docs/algorithms.md §3.3-§13) in a real run of a tiny model: each does what it claims.

A random tiny model gets every arithmetic answer wrong (all-wrong groups); the ``parity`` verifier of
tests/test_methods_e2e.py makes mixed groups instead.
"""

import pytest
import torch

from neggrad.config import ConfigError, build_config
from neggrad.trainer.loop import Trainer
from neggrad.trainer.metrics import read_metrics
from tests.test_train import TINY

PARITY = "reward.kind=tests.test_methods_e2e:parity"


def run(tmp_path, *extra, steps=1):
    cfg = build_config({}, [*TINY, f"max_steps={steps}", "eval_steps=0", "save_steps=0", "lld.probe_size=0", *extra])
    trainer = Trainer(cfg, tmp_path)
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    after = trainer.model.state_dict()
    return read_metrics(tmp_path / "metrics.jsonl"), before, after


def moved(before, after):
    return [k for k in before if not torch.equal(before[k], after[k])]


def same_weights(a, b, atol=1e-6):
    return all(torch.allclose(a[k], b[k], atol=atol) for k in a)


def test_gspo_equals_grpo_on_the_first_on_policy_step(tmp_path):
    # at ratio 1 the sequence ratio's gradient is (1/|y|) sum grad logp: GRPO's with loss_type grpo
    base = [PARITY, "loss_type=grpo", "epsilon=3e-4", "epsilon_high=4e-4"]
    m_tok, _, w_tok = run(tmp_path / "tok", *base)
    m_seq, _, w_seq = run(tmp_path / "seq", *base, "importance_sampling_level=sequence")
    assert "clip/seq_frac" in m_seq[0] and m_seq[0]["clip/seq_frac"] == 0.0
    assert same_weights(w_tok, w_seq)
    assert m_tok[0]["loss/total"] == pytest.approx(m_seq[0]["loss/total"], abs=1e-6)


def test_cispo_equals_reinforce_below_the_cap(tmp_path):
    base = [PARITY, "loss_type=dapo"]
    _, _, w_logp = run(tmp_path / "logp", *base, "policy_loss=logp")
    m, _, w_cispo = run(tmp_path / "cispo", *base, "policy_loss=cispo", "epsilon_high=5.0")
    assert m[0]["cispo/capped_frac"] == 0.0  # ratio 1 < 5 on the first step
    assert same_weights(w_logp, w_cispo)


def test_random_reward_control_replaces_correctness_for_training(tmp_path):
    from neggrad.core.controls import random_rewards

    lines, *_ = run(tmp_path, "random_reward.enabled=true", "random_reward.rate=0.5", steps=2)
    assert all(line["control/rate"] == 0.5 for line in lines)
    assert all(line["accuracy"] == 0.0 for line in lines)  # the true verifier: a random model is always wrong
    # the coin flips make groups mix although every answer is wrong
    assert any(line["groups/mixed_frac"] > 0 for line in lines)
    flips = random_rewards(0, 1, [str(i) for i in range(4)], 4, 0.5)
    assert line_agreement(lines[0]) == pytest.approx(1.0 - float(flips.float().mean()))


def line_agreement(line):
    return line["control/agreement"]


def test_all_wrong_strategies(tmp_path):
    # keep (GRPO): all-wrong groups give no gradient; nsr / ngrpo / rl_zvp / lens give one
    lines, before, after = run(tmp_path / "keep", "zero_variance.all_wrong=keep")
    assert lines[0]["groups/all_wrong_frac"] == 1.0 and not moved(before, after)
    for strategy in ("nsr", "ngrpo", "rl_zvp", "lens"):
        lines, before, after = run(tmp_path / strategy, f"zero_variance.all_wrong={strategy}")
        assert moved(before, after), strategy
        assert lines[0]["adv/mean"] <= 0.0 or strategy in ("rl_zvp", "lens"), strategy
    lines, before, after = run(tmp_path / "drop", "zero_variance.all_wrong=drop")
    assert lines[0]["groups/dropped"] == 4 and lines[0]["batch/completions"] == 0 and not moved(before, after)


def test_all_wrong_ngrpo_advantages_match_the_estimator():
    from neggrad.core.advantages import group_advantages
    from neggrad.strategies.all_wrong import zero_variance_advantages

    cfg = build_config({}, ["zero_variance.all_wrong=ngrpo"])
    correct = torch.tensor([[False] * 4, [True, False, False, False]])
    rewards = correct.float()
    base = group_advantages(rewards, method="grpo", correct=correct)
    out = zero_variance_advantages(cfg, rewards, correct, base)
    assert torch.equal(out[1], base[1])  # the mixed group keeps the base estimator
    ngrpo = group_advantages(rewards[:1], method="ngrpo", correct=correct[:1], virtual_reward=1.0)
    assert torch.allclose(out[0], ngrpo[0]) and bool((out[0] < 0).all())


def test_thr_with_p_zero_is_grpo_and_otherwise_reweights(tmp_path):
    _, _, w_grpo = run(tmp_path / "grpo", PARITY)
    m0, _, w_thr0 = run(tmp_path / "thr0", PARITY, "thr.enabled=true", "thr.p=0.0")
    assert m0[0]["thr/groups"] > 0 and same_weights(w_grpo, w_thr0)
    m, _, w = run(tmp_path / "thr", PARITY, "thr.enabled=true", "thr.p=0.5")
    assert 0.0 < m[0]["thr/dominant_frac"] <= 1.0 and not same_weights(w_grpo, w)


def test_llds_is_zero_on_policy_and_acts_on_later_iterations(tmp_path):
    on, *_ = run(tmp_path / "on", PARITY, "llds.enabled=true")
    assert on[0]["loss/llds"] == 0.0 and on[0]["llds/penalised_frac"] == 0.0
    off, *_ = run(tmp_path / "off", PARITY, "llds.enabled=true", "num_iterations=3", "llds.gate=token")
    assert off[0]["llds/penalised_frac"] > 0.0 and off[0]["loss/llds"] > 0.0


def test_llds_gates_in_training(tmp_path):
    base = [PARITY, "llds.enabled=true", "num_iterations=3"]
    _, _, w_resp = run(tmp_path / "response", *base, "llds.gate=response")
    _, _, w_act = run(tmp_path / "action", *base, "llds.gate=action")
    assert same_weights(w_resp, w_act)  # single-turn responses are one action each
    m, _, _ = run(tmp_path / "step", *base, "feedback.step_split=testbed")  # the default gate: step
    assert m[0]["llds/penalised_frac"] > 0.0 and m[0]["loss/llds"] > 0.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["thr.enabled=true", "nthr.enabled=true"], "thr generalises nthr"),
        (["method=dapo", "zero_variance.all_wrong=rl_zvp"], "conflicts with group_filter=zero_std"),
        (["policy_loss=cispo"], "set epsilon_high > 1"),
        (["thr.enabled=true", "importance_sampling_level=sequence"], "use importance_sampling_level=sequence_token"),
        (["zero_variance.all_wrong=lens", "method=ngrpo"], "needs the grpo estimator"),
        (["feedback.enabled=true", "zero_variance.all_wrong=nsr", "feedback.step_split=testbed"], "one strategy"),
    ],
)
def test_conflicting_options_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_config({}, overrides)


def test_judge_strategy_turns_feedback_on():
    assert build_config({}, ["zero_variance.all_wrong=judge", "feedback.step_split=testbed"]).feedback.enabled


OPTIONS = {
    **{f"all_wrong={s}": [f"zero_variance.all_wrong={s}"] for s in ("keep", "ngrpo", "nsr", "w_reinforce", "rl_zvp")},
    "all_wrong=lens": ["zero_variance.all_wrong=lens", PARITY],
    "all_wrong=drop": ["zero_variance.all_wrong=drop", "refill=true", PARITY],
    "all_wrong=judge": ["zero_variance.all_wrong=judge", "feedback.step_split=testbed"],
    "all_correct=rl_zvp": ["zero_variance.all_correct=rl_zvp", PARITY],
    "thr": ["thr.enabled=true", PARITY],
    "llds": ["llds.enabled=true", "num_iterations=2", PARITY],
    "gspo": ["importance_sampling_level=sequence", "epsilon=3e-4", "epsilon_high=4e-4", PARITY],
    "gspo_token+nthr": ["importance_sampling_level=sequence_token", "method=nthr", PARITY],
    "cispo": ["policy_loss=cispo", "epsilon_high=5.0", PARITY],
    "random_reward": ["random_reward.enabled=true"],
    "all_wrong=hint": ["zero_variance.all_wrong=hint", "reward.kind=tests.test_hints_train:starts_like_a_step"],
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_strategy_and_option_trains_20_steps(tmp_path, name):
    lines, before, after = run(tmp_path, *OPTIONS[name], steps=20)
    assert [line["step"] for line in lines] == list(range(1, 21))
    trained = [line for line in lines if line["batch/completions"]]
    assert all(torch.isfinite(torch.tensor(line["loss/total"])) for line in trained), name
    assert not any(line["update/skipped"] for line in lines), name


def test_compute_is_accounted_per_kind_of_group(tmp_path):
    # docs/algorithms.md §5.4: generation (+ hints, judge) and the update, shared out over the kinds of groups
    kinds = ("time/all_wrong", "time/all_correct", "time/mixed", "time/unscorable")
    mixed, *_ = run(tmp_path / "parity", PARITY, steps=2)
    wrong, *_ = run(tmp_path / "arith", steps=2)  # a random model: every arithmetic answer wrong
    for line in (*mixed, *wrong):
        spent = line["time/generate"] + line["time/update"] + line["time/old_logp"]
        assert sum(line[k] for k in kinds) == pytest.approx(spent, rel=1e-6)
    assert all(line["time/mixed"] > 0 for line in mixed)
    for line in wrong:
        spent = line["time/generate"] + line["time/update"] + line["time/old_logp"]
        assert line["time/all_wrong"] == pytest.approx(spent)
