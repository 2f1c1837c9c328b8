"""Abstaining verifiers (docs/algorithms.md §1.3): an answer the verifier cannot score (None, a timeout) is left out of
its group's statistics and gets advantage 0; a group with no scorable answer is dropped."""

import torch

from neggrad.config import build_config
from neggrad.core.advantages import group_advantages
from neggrad.trainer.batch import collect_batch
from neggrad.trainer.loop import Trainer
from neggrad.trainer.metrics import read_metrics
from tests.test_train import TINY


def abstain_some(completions: list[str], answers: list[str]) -> list[bool | None]:
    return [None if len(c) % 3 == 0 else len(c) % 2 == 0 for c in completions]


def abstain_all(completions: list[str], answers: list[str]) -> list[bool | None]:
    return [None] * len(completions)


def _trainer(tmp_path, verifier: str, *extra):
    quiet = ["eval_steps=0", "save_steps=0", "lld.probe_size=0"]
    cfg = build_config({}, [*TINY, f"reward.kind=tests.test_abstain:{verifier}", *quiet, *extra])
    trainer = Trainer(cfg, tmp_path)
    trainer.setup()
    return cfg, trainer


def test_abstentions_get_advantage_zero_and_leave_the_group_statistics(tmp_path):
    cfg, trainer = _trainer(tmp_path, "abstain_some")
    stats: dict = {}
    batch, _ = collect_batch(cfg, trainer.engine, trainer.task, 0, step=1, stats_out=stats)
    G = cfg.num_generations
    outcomes = abstain_some(batch.rollout.texts, batch.answers)
    scorable = torch.tensor([o is not None for o in outcomes])
    assert 0 < int((~scorable).sum()) == stats["reward/abstained"]  # every group was kept (no filter)
    assert torch.all(batch.seq_adv[~scorable] == 0)  # in the batch (groups stay whole), with no policy gradient
    rewards = torch.tensor([float(bool(o)) for o in outcomes]).view(-1, G)
    expected = torch.zeros_like(rewards)
    for g in range(rewards.shape[0]):  # slow reference: GRPO on each group's scorable answers alone
        keep = scorable.view(-1, G)[g]
        if int(keep.sum()) >= 2:
            expected[g, keep] = group_advantages(rewards[g, keep][None], method="grpo")[0]
    torch.testing.assert_close(batch.seq_adv.view(-1, G), expected)


def test_a_group_without_a_scorable_answer_is_dropped(tmp_path):
    cfg, trainer = _trainer(tmp_path, "abstain_all", "max_steps=1")
    trainer.train()
    (line,) = read_metrics(tmp_path / "metrics.jsonl")
    assert line["groups/unscorable_frac"] == 1.0 and line["groups/all_wrong_frac"] == 0.0
    assert line["batch/completions"] == 0 and line["reward/abstained"] == 16


def test_nthr_keeps_whole_groups_with_abstentions(tmp_path):
    cfg, trainer = _trainer(tmp_path, "abstain_some", "method=nthr", "max_steps=1")
    assert trainer.train()["status"] == "completed"
