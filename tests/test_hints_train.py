"""Hints for all-wrong groups (docs/algorithms.md §11): prefixes, prefix-continued generation, a real run."""

import re

import torch

from neggrad.config import build_config
from neggrad.models.testbed.model import build_model
from neggrad.models.testbed.tokenizer import build_tokenizer
from neggrad.rollout.base import concat
from neggrad.rollout.hf import HFRollout
from neggrad.strategies.hint_ladder import hint_prefix, reference_steps
from neggrad.tasks.testbed import solve
from neggrad.trainer.loop import Trainer
from neggrad.trainer.metrics import read_metrics
from tests.test_train import TINY


def starts_like_a_step(completions: list[str], answers: list[str]) -> list[bool]:
    """Correct iff the answer opens with an equation 'a+b=' (a random model almost never writes one)."""
    return [bool(re.match(r"\d+[+-]\d+=", c)) for c in completions]


def test_prefix_is_the_reference_up_to_step_k():
    problem = solve([3, 4, 2], ["+", "-"])
    solution, steps = reference_steps(problem, "testbed")
    assert steps == ["3+4=7", "7-2=5", "A: 5"]
    assert hint_prefix(solution, steps, 1) == "3+4=7"
    assert hint_prefix(solution, steps, 2) == "3+4=7, 7-2=5"


def test_generation_continues_the_hint_and_marks_it_off_policy():
    tok = build_tokenizer()
    cfg = build_config({}, [*TINY])
    model = build_model(cfg.model.testbed, tok, seed=0)
    engine = HFRollout(model, tok, max_completion_length=12)
    r = engine.generate_with_prefix("Q: 3+4-2=", "3+4=7", num_generations=3)
    assert all(t.startswith("3+4=7") for t in r.texts)
    assert r.offpolicy[:, :5].all() and not r.offpolicy[:, 5:].any()
    assert r.completion_ids.shape[1] <= 12
    # concatenated with an ordinary rollout: its rows get an all-False mask
    plain = engine.generate(["Q: 1+1="], num_generations=2)
    both = concat([plain, r], tok.pad_token_id)
    assert both.offpolicy.shape == both.completion_ids.shape and not both.offpolicy[:2].any()
    assert both.select(torch.tensor([2])).offpolicy[0, :5].all()


def test_hinted_groups_train_and_are_counted(tmp_path):
    cfg = build_config(
        {},
        [
            *TINY,
            "reward.kind=tests.test_hints_train:starts_like_a_step",
            "zero_variance.all_wrong=hint",
            "max_steps=2",
            "eval_steps=0",
            "save_steps=0",
            "lld.probe_size=0",
        ],
    )
    trainer = Trainer(cfg, tmp_path)
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    lines = read_metrics(tmp_path / "metrics.jsonl")
    first = lines[0]
    assert first["groups/all_wrong_frac"] == 1.0  # the random model never opens with an equation
    assert first["hint/groups"] == 4 and first["hint/solved"] == 4 and first["hint/solved_at_rung"] == [4, 0, 0, 0]
    assert first["hint/extra_generations"] == 4 * 3  # G - 1 = 3 per group, one rung
    assert first["batch/generated"] == first["budget/samples"] == 16 + 12  # a budget counts the re-generations
    assert 0 < first["batch/generated_tokens"] <= 28 * 12  # at most max_completion_length each
    assert first["batch/completions"] == 16 and torch.isfinite(torch.tensor(first["loss/total"]))
    assert first["lld/count"] == 0  # hinted answers are not the policy's own: LLD leaves them out
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
