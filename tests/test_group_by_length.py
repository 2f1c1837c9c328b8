"""``group_by_length`` (issue 17): micro-batches of similar completion lengths, each run without its padding columns;
whole runs equal the plain update's to float rounding."""

import pytest
import torch

from neggrad.rollout.base import Rollout
from neggrad.trainer import update as update_module
from tests.test_frontier_train import PARITY, run


def _rollout() -> Rollout:
    # row 0: prompt of 2 tokens, completion of 1; row 1: prompt of 3, completion of 3; width 4 + 5
    prompt_ids = torch.tensor([[0, 0, 7, 8], [0, 5, 6, 7]])
    prompt_mask = (prompt_ids != 0).long()
    completion_mask = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 1, 0, 0]])
    completion_ids = torch.tensor([[2, 0, 0, 0, 0], [9, 9, 2, 0, 0]])
    offpolicy = torch.tensor([[True, False, False, False, False], [False] * 5])
    return Rollout(
        prompt_ids, prompt_mask, completion_ids, completion_mask, torch.tensor([False, False]), ["", ""], offpolicy
    )


def test_trimmed_drops_the_columns_that_are_padding_in_every_row():
    t = _rollout().trimmed()
    assert t.prompt_ids.tolist() == [[0, 7, 8], [5, 6, 7]]  # one left column was padding in both rows
    assert t.prompt_mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert t.completion_ids.tolist() == [[2, 0, 0], [9, 9, 2]]  # the longest completion has 3 tokens
    assert t.offpolicy.shape == (2, 3) and t.lengths.tolist() == [1, 3]
    again = t.trimmed()
    assert again.prompt_ids.shape == t.prompt_ids.shape and again.completion_ids.shape == t.completion_ids.shape


def _widths(monkeypatch) -> list[tuple[int, int]]:
    """Record (completion width, batch width) of every scored micro-batch."""
    seen: list[tuple[int, int]] = []
    inner = update_module._score_columns

    def spy(forward, model, mb, config, **kwargs):
        seen.append(mb.completion_ids.shape[1])
        return inner(forward, model, mb, config, **kwargs)

    monkeypatch.setattr(update_module, "_score_columns", spy)
    return seen


@pytest.mark.parametrize(
    "extra",
    [
        [PARITY, "loss_type=dapo"],  # on-policy: one training forward per micro-batch
        [PARITY, "num_iterations=2", "beta=0.04"],  # the old-policy and reference passes too
        [PARITY, "method=nthr"],  # whole-group micro-batches: trimmed, not regrouped
        [PARITY, "loss_type=dapo", "share_prompt_forward=true", "logprob_chunk=5"],  # with the other two options
    ],
    ids=["dapo", "2iter+kl", "nthr", "shared+chunk"],
)
def test_a_run_grouped_by_length_equals_the_plain_run(tmp_path, monkeypatch, extra):
    plain, _, w_plain = run(tmp_path / "plain", *extra, steps=2)
    widths = _widths(monkeypatch)
    grouped, _, w_grouped = run(tmp_path / "grouped", *extra, "group_by_length=true", steps=2)
    assert min(widths) < max(widths)  # some micro-batch ran narrower than another: padding was dropped
    for a, b in zip(plain, grouped, strict=True):
        assert a["accuracy"] == b["accuracy"]  # the same completions were sampled
        for key in ("loss/total", "grad/norm", "policy/ppo_kl", "kl/ref", "policy/entropy"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
        for key in [k for k in a if k.startswith(("nthr/", "lld/"))]:
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-5), key
    for key in w_plain:  # see test_logprob_chunk: AdamW turns gradient rounding into ~1e-5 moves
        torch.testing.assert_close(w_grouped[key], w_plain[key], rtol=1e-4, atol=5e-5)


def test_micro_batches_hold_rows_of_similar_length(tmp_path, monkeypatch):
    seen: list[torch.Tensor] = []
    inner = update_module._score_columns

    def spy(forward, model, mb, config, **kwargs):
        seen.append(mb.lengths.clone())
        return inner(forward, model, mb, config, **kwargs)

    monkeypatch.setattr(update_module, "_score_columns", spy)
    run(tmp_path / "grouped", PARITY, "group_by_length=true", "lld.enabled=false", steps=1)
    assert len(seen) == 2  # 16 completions in micro-batches of 8
    assert int(seen[0].max()) <= int(seen[1].min())  # shortest first
    assert seen[0].shape[0] == seen[1].shape[0] == 8
