"""A user strategy by import path (docs/strategies.md): the documented example trains, its rule changes
the gradient exactly as computed by hand, bad entries are refused at load, and resume reloads it."""

import copy
import inspect
import re
from pathlib import Path

import pytest
import torch

from neggrad.config import ConfigError, build_config, config_changes, load_config
from neggrad.core.logprobs import token_logprobs
from neggrad.models.policy import completion_forward
from neggrad.models.testbed.model import build_model
from neggrad.models.testbed.tokenizer import build_tokenizer
from neggrad.strategies import Strategy
from neggrad.trainer.loop import Trainer
from neggrad.trainer.metrics import read_metrics
from neggrad.trainer.probe import group_batch
from neggrad.trainer.update import policy_update
from tests.test_nthr_update import CORRECT, SMALL, crafted
from tests.test_train import TINY

DOCS = Path(__file__).resolve().parents[1] / "docs" / "strategies.md"
PATH = "tests.test_user_strategy:HalveEarlyPenalty"


class HalveEarlyPenalty(Strategy):
    """Wrong answers keep half their penalty on their first k tokens."""

    name = "halve_early_penalty"

    def __init__(self, config, k: int = 4):
        super().__init__(config)
        self.k = k

    def token_advantages(self, upd, fwd, adv):
        # adv: (b, T) token advantages of the micro-batch's rows fwd.idx
        wrong = ~upd.correct[fwd.idx].to(adv.device)  # (b,)
        early = torch.arange(adv.shape[1], device=adv.device) < self.k  # (T,)
        halve = wrong[:, None] & early[None, :] & (adv < 0)  # (b, T)
        return torch.where(halve, adv * 0.5, adv)


class NotAStrategy:
    pass


def test_the_documented_example_is_this_class():
    block = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.S).group(1)
    assert inspect.getsource(HalveEarlyPenalty) in block
    assert len(block.splitlines()) <= 40


def _sgd_update(cfg, model, batch):
    """One policy update with SGD lr 1 and no clipping: the weight change is minus the gradient."""
    work = copy.deepcopy(model)
    optimizer = torch.optim.SGD(work.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    policy_update(cfg, work, optimizer, scheduler, batch)
    return {k: model.state_dict()[k] - v for k, v in work.state_dict().items()}  # = the gradient


def test_the_rule_changes_the_gradient_as_computed_by_hand():
    tok = build_tokenizer()
    base = [*SMALL, "max_grad_norm=1e9"]
    plain_cfg = build_config({}, base)
    cfg = build_config({"strategies": [{"path": PATH, "k": 3}]}, base)
    model = build_model(cfg.model.testbed, tok, seed=0)
    rollout = crafted(tok)
    batch = group_batch(cfg, rollout, CORRECT)
    got = _sgd_update(cfg, model, batch)
    plain = _sgd_update(plain_cfg, model, batch)

    # by hand: token advantages A_i, halved on the first 3 tokens of the wrong rows (A < 0 there); the
    # on-policy clipped surrogate's gradient is -A_t grad log p_t, averaged over the batch's tokens (dapo)
    mask = rollout.completion_mask.float()
    adv = batch.seq_adv[:, None].expand_as(mask).clone()
    assert (adv[~CORRECT] < 0).all()
    adv[~CORRECT, :3] *= 0.5
    hand = copy.deepcopy(model)
    logits, _ = completion_forward(hand, rollout)
    logp = token_logprobs(logits, rollout.completion_ids)
    (-(adv * logp * mask).sum() / mask.sum()).backward()
    for name, p in hand.named_parameters():
        assert torch.allclose(got[name], p.grad, atol=1e-6, rtol=1e-4), name
    assert any(not torch.allclose(got[k], plain[k], atol=1e-6) for k in got)  # the rule changed the update


def test_a_tiny_run_trains_with_it_and_resume_reloads_it(tmp_path):
    cfg = build_config(
        {"strategies": [{"path": PATH, "k": 2}]}, [*TINY, "max_steps=2", "eval_steps=0", "save_steps=2"]
    )
    trainer = Trainer(cfg, tmp_path)
    trainer.setup()
    trainer.train()
    lines = read_metrics(tmp_path / "metrics.jsonl")
    assert [line["step"] for line in lines] == [1, 2]
    saved = load_config(tmp_path / "config.yaml")
    assert saved.strategies == [{"path": PATH, "k": 2}] and config_changes(cfg, saved) == {}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("tests.no_such_module:Rule", "cannot import 'tests.no_such_module'"),
        ("tests.test_user_strategy:Missing", "has no 'Missing'"),
        ("tests.test_user_strategy", "is not an import path"),
        ("tests.test_user_strategy:NotAStrategy", "is not a subclass of neggrad.strategies.Strategy"),
        ({"path": PATH, "q": 1}, "does not take these arguments"),
    ],
)
def test_bad_entries_are_refused_at_load(entry, message):
    with pytest.raises(ConfigError, match=message):
        build_config({"strategies": [entry]}, TINY)


def test_declared_conflicts_are_refused_at_load():
    class Exclusive(HalveEarlyPenalty):
        excludes = {"nthr": "halve_early_penalty and nthr both rescale wrong answers' tokens: enable one"}

    globals()["Exclusive"] = Exclusive
    try:
        with pytest.raises(ConfigError, match="enable one"):
            build_config({"strategies": ["tests.test_user_strategy:Exclusive"]}, ["method=nthr"])
    finally:
        del globals()["Exclusive"]
