"""NTHR and LLD inside a real update of a tiny model (docs/algorithms.md §6.1, §6.2, §7)."""

import sys

import pytest
import torch

from neggrad.config import build_config
from neggrad.models.testbed.model import build_model
from neggrad.models.testbed.tokenizer import build_tokenizer
from neggrad.trainer.probe import one_step, rollout_from_ids

SMALL = [
    "sft.enabled=false",
    "model.testbed.hidden_size=32",
    "model.testbed.intermediate_size=64",
    "model.testbed.num_hidden_layers=1",
    "model.testbed.num_attention_heads=2",
    "model.testbed.num_key_value_heads=1",
    "num_generations=4",
    "per_device_train_batch_size=4",
    "gradient_accumulation_steps=1",
    "learning_rate=1e-3",
    "loss_type=dapo",
]
PROMPT = "Q: 3+4-2="
# one correct answer; the wrong ones repeat its first step (and more) before going wrong
COMPLETIONS = ["3+4=7, 7-2=5. A: 5", "3+4=7, 7-2=6. A: 6", "3+4=7, 7-2=4. A: 4", "3+4=7, 7-3=4. A: 4"]
CORRECT = torch.tensor([True, False, False, False])


def crafted(tok, completions=COMPLETIONS):
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompts = [enc(PROMPT)] * len(completions)
    return rollout_from_ids(prompts, [enc(c) + [tok.eos_token_id] for c in completions], tok.pad_token_id)


@pytest.mark.parametrize("seed", [0, 1])
def test_nthr_protects_correct_answers_in_a_real_update(seed):
    tok = build_tokenizer()
    cfg = build_config({}, SMALL)
    model = build_model(cfg.model.testbed, tok, seed=seed)
    rollout = crafted(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grpo = one_step(cfg, model, rollout, CORRECT, "grpo")
    nthr = one_step(cfg, model, rollout, CORRECT, "nthr")
    # the model itself is never changed by the probe
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert grpo.token_selected is None
    assert nthr.metrics["nthr/groups"] == 1 and nthr.metrics["nthr/selected_frac"] > 0
    # the correct answer gains more likelihood when NTHR keeps the penalty off the tokens that resemble it
    assert nthr.metrics["lld/delta_seq_mean"] > grpo.metrics["lld/delta_seq_mean"] + 0.05
    # only wrong answers' tokens are selected; the correct row never is
    assert not nthr.token_selected[0].any()
    assert nthr.token_selected[1:].any()


def test_random_control_selects_as_many_tokens_per_wrong_answer():
    tok = build_tokenizer()
    cfg = build_config({}, SMALL)
    model = build_model(cfg.model.testbed, tok, seed=0)
    rollout = crafted(tok)
    nthr = one_step(cfg, model, rollout, CORRECT, "nthr")
    rand = one_step(cfg, model, rollout, CORRECT, "random")
    assert torch.equal(nthr.token_selected.sum(dim=1), rand.token_selected.sum(dim=1))
    assert not torch.equal(nthr.token_selected, rand.token_selected)
    mask = rollout.completion_mask.bool()
    assert not (rand.token_selected & ~mask).any()


def test_old_pass_and_inline_nthr_agree():
    """With num_iterations = 2 NTHR runs in the no-grad old-policy pass; with 1, inside the training
    forward. Both see pi_old, so the first step's scores and selections are the same."""
    tok = build_tokenizer()
    cfg = build_config({}, SMALL)
    model = build_model(cfg.model.testbed, tok, seed=0)
    rollout = crafted(tok)
    inline = one_step(cfg, model, rollout, CORRECT, "nthr")
    two = one_step(cfg.model_copy(update={"num_iterations": 2}), model, rollout, CORRECT, "nthr")
    assert torch.allclose(inline.token_scores, two.token_scores, atol=1e-5)
    assert torch.equal(inline.token_selected, two.token_selected)


def test_lld_matches_a_separate_before_and_after_pass():
    from neggrad.core.logprobs import token_logprobs
    from neggrad.models.policy import completion_logits

    tok = build_tokenizer()
    cfg = build_config({}, SMALL)
    model = build_model(cfg.model.testbed, tok, seed=0)
    rollout = crafted(tok)
    with torch.no_grad():
        before = token_logprobs(completion_logits(model, rollout), rollout.completion_ids)
    # replay the probe's update by hand on a copy to get the after-model
    import copy

    from neggrad.trainer.probe import group_batch, variant_config
    from neggrad.trainer.update import policy_update

    c = variant_config(cfg, "grpo")
    work = copy.deepcopy(model)
    opt = torch.optim.AdamW(
        work.parameters(), lr=c.learning_rate, betas=(c.adam_beta1, c.adam_beta2), weight_decay=c.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    metrics = policy_update(c, work, opt, sched, group_batch(c, rollout, CORRECT)).metrics
    with torch.no_grad():
        after = token_logprobs(completion_logits(work, rollout), rollout.completion_ids)
    m = rollout.completion_mask.float()
    delta = float(((after - before) * m).sum(dim=1)[0])
    assert metrics["lld/count"] == 1
    assert metrics["lld/delta_seq_mean"] == pytest.approx(delta, abs=1e-4)
    assert metrics["lld/displaced_frac"] == float(delta < 0)


def test_batch_scope_on_one_group_is_group_nthr():
    """nthr.scope: batch with a single group in the batch anchors on the same correct answers as the paper's
    per-group NTHR, so it must choose the same tokens (its scores come from the LM head, not the logits)."""
    tok = build_tokenizer()
    cfg = build_config({}, SMALL)
    model = build_model(cfg.model.testbed, tok, seed=0)
    rollout = crafted(tok)
    group = one_step(cfg, model, rollout, CORRECT, "nthr")
    batch = one_step(cfg, model, rollout, CORRECT, "nthr_batch")
    assert torch.allclose(group.token_scores, batch.token_scores, atol=1e-5)
    assert torch.equal(group.token_selected, batch.token_selected) and batch.token_selected.any()
    assert batch.metrics["nthr/groups"] == 1
    assert batch.metrics["lld/delta_seq_mean"] == pytest.approx(group.metrics["lld/delta_seq_mean"], abs=1e-4)


def test_batch_scope_scores_against_other_groups_correct_answers():
    """Two groups in one update: group 2's wrong answers are scored against group 1's correct answer too."""
    tok = build_tokenizer()
    cfg = build_config({}, SMALL + ["gradient_accumulation_steps=2"])
    model = build_model(cfg.model.testbed, tok, seed=0)
    second = ["3+4=7, 7-2=5. A: 5", "3+4=8, 8-2=6. A: 6", "3+4=7, 7-2=5. A: 5", "4+4=8. A: 8"]
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    rollout = rollout_from_ids(
        [enc(PROMPT)] * 8, [enc(c) + [tok.eos_token_id] for c in COMPLETIONS + second], tok.pad_token_id
    )
    correct = torch.tensor([True, False, False, False, True, False, True, False])
    group = one_step(cfg, model, rollout, correct, "nthr")
    batch = one_step(cfg, model, rollout, correct, "nthr_batch")
    assert group.metrics["nthr/groups"] == batch.metrics["nthr/groups"] == 2
    # more anchors: every token's score changes, and the tokens of each group's correct rows anchor both groups
    assert not torch.allclose(group.token_scores, batch.token_scores, atol=1e-4)
    assert not batch.token_selected[correct].any() and batch.token_selected[~correct].any()
    assert batch.row_delta is not None and torch.isnan(batch.row_delta[~correct]).all()
    assert torch.isfinite(batch.row_delta[correct]).all()


def test_batch_scope_refusals():
    from neggrad.config import ConfigError

    with pytest.raises(ConfigError, match="nthr.scope 'batch' is NTHR's only"):
        build_config({}, ["thr.enabled=true", "nthr.scope=batch"])
    with pytest.raises(ConfigError, match="anchor_include_self: false applies to nthr.scope: group only"):
        build_config({}, ["method=nthr", "nthr.scope=batch", "nthr.anchor_include_self=false"])


def test_batch_scope_refuses_a_head_it_cannot_recompute():
    from neggrad.models.policy import linear_head

    tok = build_tokenizer()
    model = build_model(build_config({}, SMALL).model.testbed, tok, seed=0)
    weight, bias = linear_head(model)
    assert weight is model.get_output_embeddings().weight and bias is None
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="with logit softcapping: use nthr.scope: group"):
        linear_head(model)


@pytest.mark.parametrize("variant,iterations", [("nthr", 1), ("nthr", 2), ("nthr_batch", 1)])
def test_nthr_takes_no_second_logsumexp_over_the_vocabulary(monkeypatch, variant, iterations):
    """Issue 17: at Qwen2.5's vocabulary (151,936) recomputing each token's log-normaliser was most of NTHR's
    cost (8 x 256 tokens: 4 of 5 CPU seconds per group, and a float32 copy of the group's logits; with
    nthr.scope batch a float32 copy of the whole micro-batch's). The forward's own is reused: no logsumexp runs
    in NTHR's code, inline (num_iterations 1), in the old-policy pass (2) or with the batch scope."""
    calls = []
    logsumexp = torch.logsumexp

    def counted(*args, **kwargs):
        calls.append(sys._getframe(1).f_globals["__name__"])
        return logsumexp(*args, **kwargs)

    tok = build_tokenizer()
    cfg = build_config({}, [*SMALL, f"num_iterations={iterations}"])
    model = build_model(cfg.model.testbed, tok, seed=0)
    rollout = crafted(tok)
    monkeypatch.setattr(torch, "logsumexp", counted)
    result = one_step(cfg, model, rollout, CORRECT, variant)
    assert result.metrics["nthr/groups"] == 1
    assert "neggrad.core.logprobs" in calls  # the counter sees the forward's own
    assert not [c for c in calls if "nthr" in c], calls
