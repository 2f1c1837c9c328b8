"""LLD metrics (docs/algorithms.md §6.1) on a hand-computed vector and on success-rate bins."""

import pytest
import torch

from neggrad.trainer.lld import likelihood_deltas, lld_metrics


def spec_98():
    before = torch.tensor([[-0.2, -0.5, -0.1, 0.0], [-1.0, -0.3, 0.0, 0.0], [-0.4, -0.4, -0.4, -0.4]])
    after = torch.tensor([[-0.1, -0.5, -0.1, 0.0], [-1.2, -0.3, 0.0, 0.0], [-0.35, -0.45, -0.4, -0.38]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    return before, after, mask


def test_spec_vector_98():
    before, after, mask = spec_98()
    seq, tok = likelihood_deltas(before, after, mask)
    assert seq.tolist() == pytest.approx([0.1, -0.2, 0.02], abs=1e-6)
    assert tok.tolist() == pytest.approx([0.033333, -0.1, 0.005], abs=1e-6)
    m = lld_metrics(before, after, mask, torch.tensor([0.5, 0.5, 0.5]))
    assert m["lld/delta_seq_mean"] == pytest.approx(-0.026667, abs=1e-6)
    assert m["lld/delta_tok_mean"] == pytest.approx(-0.020556, abs=1e-6)
    assert m["lld/displaced_frac"] == pytest.approx(1 / 3)
    assert m["lld/count"] == 3
    # all three sit in (1/4, 1/2]: that bin equals the total, the others are absent
    assert m["lld/displaced_frac_p_q2"] == pytest.approx(1 / 3)
    assert "lld/displaced_frac_p_q1" not in m and "lld/displaced_frac_p_all" not in m


def test_success_rate_bins():
    before, after, mask = spec_98()
    m = lld_metrics(before, after, mask, torch.tensor([0.25, 0.875, 1.0]), prefix="lld/wrong/")
    assert m["lld/wrong/delta_seq_mean_p_q1"] == pytest.approx(0.1, abs=1e-6)  # p = 1/4 is in (0, 1/4]
    assert m["lld/wrong/displaced_frac_p_q4"] == 1.0  # p = 7/8
    assert m["lld/wrong/delta_seq_mean_p_all"] == pytest.approx(0.02, abs=1e-6)
    assert "lld/wrong/delta_seq_mean_p_q2" not in m


def test_empty():
    z = torch.zeros(0, 3)
    assert lld_metrics(z, z, z, torch.zeros(0)) == {"lld/count": 0.0}
