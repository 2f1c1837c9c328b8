"""neggrad inside TRL's GRPOTrainer: a few steps run, and a fixed batch matches neggrad's own trainer.

Offline: a tiny testbed model and tokenizer built in code, a four-prompt dataset, CPU, no vLLM.
"""

import copy
import warnings

import pytest
import torch

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from trl import GRPOConfig  # noqa: E402

from neggrad.config import FeedbackConfig, NTHRConfig, TestbedModelConfig, build_config  # noqa: E402
from neggrad.feedback.judge import JudgeRequest, Verdict, failure, first_wrong  # noqa: E402
from neggrad.feedback.repair import FeedbackStats, repair_all_wrong  # noqa: E402
from neggrad.integrations.trl import NeggradConfig, NeggradGRPOTrainer, preset  # noqa: E402
from neggrad.models.testbed.model import build_model  # noqa: E402
from neggrad.models.testbed.tokenizer import build_tokenizer  # noqa: E402
from neggrad.rollout.base import Rollout  # noqa: E402
from neggrad.trainer.batch import TrainBatch, sequence_advantages  # noqa: E402
from neggrad.trainer.update import policy_update  # noqa: E402

G = 4  # num_generations
P = 2  # prompts per generation batch
MAX_LEN = 12  # max_completion_length
ROWS = [
    {"prompt": "Q: 3+4-1=", "answer": "6", "rule": "parity"},
    {"prompt": "Q: 9-2+5=", "answer": "12", "rule": "never"},  # all-wrong: the judge's group
    {"prompt": "Q: 2+2+2=", "answer": "6", "rule": "parity"},
    {"prompt": "Q: 8-3-1=", "answer": "4", "rule": "never"},
]
TOLERANCE = 1e-5
"""Advantages and loss of the TRL path vs neggrad's own trainer (float32, same model, same batch)."""


def correctness(completions: list[str], rule: list[str], **_) -> list[float]:
    """A verifier a random model passes about half the time: even-length completions are 'correct'."""
    return [float(r == "parity" and len(c) % 2 == 0) for c, r in zip(completions, rule, strict=True)]


class StepLengthJudge:
    """A deterministic judge: the first wrong step depends on the first step's length, so verdicts vary."""

    name = "step-length"

    def judge(self, requests: list[JudgeRequest]) -> list[Verdict]:
        return [
            first_wrong(1 + len(r.steps[0]) % len(r.steps), len(r.steps)) if r.steps else failure("no steps")
            for r in requests
        ]


def tiny_model(tokenizer):
    shape = TestbedModelConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1
    )
    return build_model(shape, tokenizer, seed=0)


def grpo_args(tmp_path, **overrides) -> GRPOConfig:
    settings = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        use_vllm=False,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        seed=0,
        max_steps=3,
        per_device_train_batch_size=P * G,
        gradient_accumulation_steps=1,
        num_generations=G,
        max_completion_length=MAX_LEN,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        shuffle_dataset=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    settings.update(overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GRPOConfig(**settings)


def ngrpo_nthr_feedback() -> tuple[NeggradConfig, dict]:
    ours, grpo_kwargs = preset("ngrpo")
    ours.nthr = NTHRConfig(enabled=True, beta=0.0)  # beta 0: every positive score is selected, so some are
    ours.feedback = FeedbackConfig(enabled=True, judge="oracle")  # step_split: the oracle's testbed rule
    return ours, grpo_kwargs


def make_trainer(tmp_path, model, tokenizer, neggrad_config, grpo_kwargs, **overrides):
    return NeggradGRPOTrainer(
        model=model,
        reward_funcs=correctness,
        args=grpo_args(tmp_path, **grpo_kwargs, **overrides),
        train_dataset=datasets.Dataset.from_list(ROWS),
        processing_class=tokenizer,
        neggrad_config=neggrad_config,
        judge=StepLengthJudge(),
    )


def test_preset_maps_method_keys():
    ours, grpo_kwargs = preset("ngrpo")
    assert ours.advantage_estimator == "ngrpo"
    assert grpo_kwargs == {
        "epsilon": 0.16,
        "epsilon_high": 0.24,
        "loss_type": "dapo",
        "scale_rewards": "group",
        "beta": 0.0,
        "entropy_coef": 0.0,
    }
    with pytest.raises(ValueError, match="zero_std"):
        preset("reinforce_rej")


def test_the_judges_step_rule_follows_the_judge_unless_set():
    assert NeggradConfig(feedback={"enabled": True}).feedback.step_split == "testbed"  # the oracle: testbed answers
    assert NeggradConfig(feedback={"judge": "http"}).feedback.step_split == "lines"
    assert NeggradConfig(feedback={"step_split": "regex:;"}).feedback.step_split == "regex:;"


def test_nthr_needs_a_group_estimator():
    with pytest.raises(ValueError, match="nthr works on top of"):
        NeggradConfig(advantage_estimator="psr", nthr={"enabled": True})


def test_a_few_steps_run_and_move_every_parameter(tmp_path):
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    model = tiny_model(tokenizer)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ours, grpo_kwargs = ngrpo_nthr_feedback()
    trainer = make_trainer(tmp_path, model, tokenizer, ours, grpo_kwargs)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert any(log.get("feedback/groups", 0) > 0 for log in trainer.state.log_history)
    assert any("nthr/selected_frac" in log for log in trainer.state.log_history)
    for name, p in trainer.model.named_parameters():
        assert not torch.equal(p.detach(), before[name]), f"{name} did not move"


def test_fixed_batch_matches_neggrads_own_trainer(tmp_path):
    """Same model, same generated batch: TRL path vs sampling.sequence_advantages + update.policy_update."""
    torch.manual_seed(1)
    tokenizer = build_tokenizer()
    model = tiny_model(tokenizer)
    reference_model = copy.deepcopy(model)
    ours, grpo_kwargs = ngrpo_nthr_feedback()
    trainer = make_trainer(tmp_path, model, tokenizer, ours, grpo_kwargs)
    seen = []
    calculate = trainer._calculate_rewards

    def spy(inputs, prompts, completions, completion_ids_list):
        rewards = calculate(inputs, prompts, completions, completion_ids_list)
        seen.append((list(completions), rewards.clone()))
        return rewards

    trainer._calculate_rewards = spy
    trainer.model.train()
    batch_inputs = [dict(row) for row in ROWS[:P] for _ in range(G)]  # the sampler repeats each prompt G times
    out = trainer._generate_and_score_completions(batch_inputs)
    trl_loss = float(trainer.compute_loss(trainer.model, out).detach())

    # neggrad's own trainer on the same completions
    completions, rewards_per_func = seen[0]
    rewards = rewards_per_func[:, 0].view(P, G)
    correct = rewards > 0.5
    assert bool((correct.any(dim=1) & ~correct.all(dim=1))[0]), "seed gave no mixed group: NTHR untested"
    repair = repair_all_wrong(
        StepLengthJudge(),
        correct,
        [r["prompt"] for r in ROWS[:P]],
        [r["answer"] for r in ROWS[:P]],
        completions,
        cfg=ours.feedback,
        reward_scheme="binary",
        stats=FeedbackStats(),
    )
    assert bool(repair.repaired[1]) and bool(repair.varies[1]), "the judge's group should get varying rewards"
    rewards = torch.where(repair.repaired[:, None], repair.rewards, rewards)  # (P, G)
    config = build_config(
        {},
        [
            "method=ngrpo",
            "nthr.enabled=true",
            "nthr.beta=0.0",
            f"num_generations={G}",
            f"per_device_train_batch_size={P * G}",
            "gradient_accumulation_steps=1",
            f"max_completion_length={MAX_LEN}",
            "temperature=1.0",
            "lld.enabled=false",
            "sft.enabled=false",
        ],
    )
    seq_adv = sequence_advantages(config, rewards, correct).view(-1)  # (B,)
    rollout = Rollout(
        out["prompt_ids"],
        out["prompt_mask"],
        out["completion_ids"],
        out["completion_mask"],
        torch.zeros(P * G, dtype=torch.bool),
        completions,
    )
    batch = TrainBatch(
        rollout=rollout,
        prompts=[r["prompt"] for r in ROWS[:P]],
        answers=[r["answer"] for r in ROWS[:P]],
        correct=correct.view(-1),
        rewards=rewards.view(-1),
        seq_adv=seq_adv,
        rows=torch.ones(P * G, dtype=torch.bool),
        stats={},
    )
    optimizer = torch.optim.AdamW(reference_model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    result = policy_update(config, reference_model, optimizer, scheduler, batch)

    # token advantages: A_i everywhere, eta * A_i on the tokens NTHR selected (update.py applies the same rule)
    eta = torch.nan_to_num(result.row_eta, nan=1.0)[:, None]  # (B, 1)
    expected = torch.where(result.token_selected, seq_adv[:, None] * eta, seq_adv[:, None])  # (B, T)
    mask = out["completion_mask"].bool()
    assert result.token_selected.any(), "NTHR selected nothing: the comparison would not test it"
    torch.testing.assert_close(out["advantages"][mask], expected[mask], atol=TOLERANCE, rtol=0)
    # NGRPO gives the repaired all-wrong group non-zero advantages, so judge feedback is in the comparison
    assert out["advantages"][G:][mask[G:]].abs().sum() > 0
    assert trl_loss == pytest.approx(result.metrics["loss/total"], abs=TOLERANCE, rel=0)
