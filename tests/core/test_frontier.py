"""Hand-computed vectors (docs/algorithms.md §16) for THR, LLDS, RL-ZVP, LENS, GSPO / CISPO, random rewards."""

import math

import pytest
import torch

from neggrad.core.controls import random_rewards, uniform_hash
from neggrad.core.llds import llds_token_loss
from neggrad.core.losses import aggregate_loss
from neggrad.core.nthr import nthr_group
from neggrad.core.surrogates import cispo_loss, gspo_surrogate
from neggrad.core.thr import thr_token_advantages
from neggrad.core.zero_variance import lens_advantages, lens_rewards, rl_zvp_advantages


# ----------------------------------------------------------------- vector 1: THR
def thr_group():
    q = [
        [[0.7, 0.2, 0.1], [0.3, 0.6, 0.1]],
        [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]],
        [[0.5, 0.4, 0.1], [0.4, 0.5, 0.1]],
        [[0.2, 0.1, 0.7], [0.1, 0.1, 0.8]],
    ]
    ids = torch.tensor([[0, 1], [0, 2], [0, 1], [2, 2]])
    h = torch.tensor([[[1, 0], [0.5, 0.5]], [[1, 0.2], [0, 1]], [[0.9, 0.1], [0.4, 0.6]], [[-0.5, 0.5], [0, -0.2]]])
    return torch.tensor(q).log(), h, ids, torch.ones(4, 2, dtype=torch.bool), torch.tensor([True, True, False, False])


def test_thr_vector_1():
    logits, h, ids, mask, correct = thr_group()
    r = nthr_group(logits, h, ids, mask, correct)
    want = [[0.25, -0.118], [0.3104, 0.198], [0.3636, -0.111], [0.157, -0.0198]]
    assert r.scores.tolist() == [pytest.approx(w, abs=1e-6) for w in want]
    assert r.anchors.tolist() == pytest.approx([0.066, 0.2542], abs=1e-6)
    adv = torch.tensor([0.866024, 0.866024, -0.866024, -0.866024])[:, None].expand(4, 2)
    up, dominant = thr_token_advantages(r.scores, r.anchors, adv, mask, p=0.5)
    assert dominant.tolist() == [[True, True], [True, True], [True, True], [True, False]]
    assert up.tolist() == [
        pytest.approx(w, abs=1e-6)
        for w in [[1.299036, 0.433012], [1.299036, 1.299036], [-0.433012, -1.299036], [-0.433012, -0.866024]]
    ]
    down, _ = thr_token_advantages(r.scores, r.anchors, adv, mask, p=-0.5)
    assert down.tolist() == [
        pytest.approx(w, abs=1e-6)
        for w in [[0.433012, 1.299036], [0.433012, 0.433012], [-1.299036, -0.433012], [-1.299036, -0.866024]]
    ]
    only, _ = thr_token_advantages(r.scores, r.anchors, adv, mask, p=0.5, mode="dominant_only")
    assert only[3, 1] == 0 and only[3, 0] == pytest.approx(-0.866024)
    same, _ = thr_token_advantages(r.scores, r.anchors, adv, mask, p=0.0)
    assert torch.equal(same, adv)  # p = 0 is GRPO
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        thr_token_advantages(r.scores, r.anchors, adv, mask, p=1.5)


# ----------------------------------------------------------------- vector 2: LLDS
def llds_inputs():
    delta = torch.tensor([[0.10, -0.30, 0.05, 0.02, -0.01], [0.20, 0.10, -0.05, -0.10, 0.0], [0.3] * 5])
    old = torch.tensor([[-1, -0.5, -2, -0.3, -1.2], [-0.7, -1.1, -0.4, -0.9, 0.0], [-0.6, -0.8, -1.5, -0.2, -0.9]])
    mask = torch.tensor([[1] * 5, [1, 1, 1, 1, 0], [1] * 5])
    steps = torch.tensor([[1, 1, 2, 2, 2], [1, 1, 1, 2, 0], [1, 1, 2, 2, 2]])
    logp = (old - delta).requires_grad_(True)
    return logp, old, mask, torch.tensor([0.8, 0.0, -0.8]), steps


@pytest.mark.parametrize(
    ("gate", "loss", "penalised"),
    [
        ("step", 0.005286, [[0, 0, 1, 1, 0], [1, 1, 0, 0, 0], [0] * 5]),
        ("response", 0.004286, [[0] * 5, [1, 1, 0, 0, 0], [0] * 5]),
        ("token", 0.006714, [[1, 0, 1, 1, 0], [1, 1, 0, 0, 0], [0] * 5]),
    ],
)
def test_llds_vector_2(gate, loss, penalised):
    logp, old, mask, adv, steps = llds_inputs()
    token, pen = llds_token_loss(logp, old, mask, adv, coef=0.2, gate=gate, step_ids=steps)
    agg = aggregate_loss(
        token, mask.float(), loss_type="dapo", num_sequences=3, num_tokens=14, max_completion_length=5
    )
    assert float(agg.detach()) == pytest.approx(loss, abs=1e-6)
    assert pen.int().tolist() == penalised
    agg.backward()
    grad = logp.grad
    assert torch.allclose(grad[pen], torch.full_like(grad[pen], -0.014286), atol=1e-6)
    assert torch.all(grad[~pen] == 0)


def test_llds_is_zero_on_policy():
    _, old, mask, adv, steps = llds_inputs()
    token, pen = llds_token_loss(old.clone(), old, mask, adv, gate="step", step_ids=steps)
    assert float(token.abs().sum()) == 0.0 and not pen.any()


# ----------------------------------------------------------------- vector 3: RL-ZVP
def test_rl_zvp_vector_3():
    H = torch.tensor([[0.5, 2.0, 0.1], [1.2, 0.0, 9.9]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    ok = rl_zvp_advantages(H, mask, all_correct=True, alpha=0.1)
    assert ok.tolist() == [pytest.approx([0.05, 0.2, 0.01]), pytest.approx([0.12, 0.0, 0.0])]
    bad = rl_zvp_advantages(H, mask, all_correct=False, alpha=0.1)
    assert bad.tolist() == [pytest.approx([-0.15, 0.0, -0.19]), pytest.approx([0.0, -0.12, 0.0])]
    p = torch.softmax(torch.tensor([2.0, 1.0, 0.0]), dim=0)
    assert float(-(p * p.log()).sum()) == pytest.approx(0.832396, abs=1e-6)


# ----------------------------------------------------------------- vector 4: LENS
def test_lens_vector_4():
    mean_logp = torch.tensor([-20 / 40, -60 / 60, -10 / 20, -45 / 50])
    mixed = torch.tensor([True, False, False, False])
    assert lens_rewards(mixed, mean_logp).tolist() == pytest.approx([1, -0.044684, -0.083333, -0.050329], abs=1e-6)
    assert lens_advantages(mixed, mean_logp).tolist() == pytest.approx(
        [1.499221, -0.471882, -0.544806, -0.482534], abs=1e-5
    )
    wrong = torch.zeros(4, dtype=torch.bool)
    assert lens_rewards(wrong, mean_logp).tolist() == pytest.approx([-0.25, -0.108817, -0.25, -0.126030], abs=1e-6)
    assert lens_advantages(wrong, mean_logp, alpha=0.25).tolist() == pytest.approx(
        [-0.016572, 0.018724, -0.016572, 0.014420], abs=1e-6
    )
    assert lens_advantages(torch.ones(4, dtype=torch.bool), mean_logp).tolist() == [0.0] * 4

    def w(z):
        return (1 / z) * math.log(1 / (1 - z)) - 1

    assert w(0.5) == pytest.approx(0.386294, abs=1e-6) and w(0.9) == pytest.approx(1.558428, abs=1e-6)


# ----------------------------------------------------------------- vector 6: GSPO, CISPO
def test_gspo_vector_6():
    old = torch.zeros(2, 3)
    log_ratio = torch.tensor([[2e-4, 1e-4, 3e-4], [-5e-4, -3e-4, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    logp = log_ratio.clone().requires_grad_(True)
    adv = torch.tensor([1.0, -1.0])[:, None].expand(2, 3)
    tok, info = gspo_surrogate(logp, old, adv, mask, epsilon=3e-4, epsilon_high=4e-4)
    assert info["seq_ratio"].tolist() == pytest.approx([1.0002, 0.9996], abs=1e-7)
    assert info["seq_clip"].tolist() == [False, True]
    loss = aggregate_loss(tok, mask.float(), loss_type="grpo", num_sequences=2, num_tokens=5, max_completion_length=3)
    assert float(loss.detach()) == pytest.approx(-0.00025, abs=1e-6)
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([-0.1667] * 3, abs=1e-4)
    assert logp.grad[1].abs().sum() == 0  # clipped: no gradient

    logp2 = log_ratio.clone().requires_grad_(True)
    adv2 = torch.tensor([[1.0, 2.0, 0.5], [-1.0, -1.0, -1.0]])
    tok2, _ = gspo_surrogate(logp2, old, adv2, mask, epsilon=3e-4, epsilon_high=4e-4, token_level=True)
    aggregate_loss(
        tok2, mask.float(), loss_type="grpo", num_sequences=2, num_tokens=5, max_completion_length=3
    ).backward()
    assert logp2.grad[0].tolist() == pytest.approx([-0.1667, -0.3334, -0.08335], abs=1e-4)
    # GSPO-token equals GSPO for a constant advantage
    logp3 = log_ratio.clone().requires_grad_(True)
    tok3, _ = gspo_surrogate(logp3, old, adv, mask, epsilon=3e-4, epsilon_high=4e-4, token_level=True)
    assert torch.allclose(tok3, tok.detach())


def test_cispo_vector_6():
    logp = torch.tensor([[-2.0, -1.0, -0.5, -0.1]], requires_grad=True)
    rho = torch.tensor([[0.5, 1.0, 3.0, 7.0]])
    old = logp.detach() - rho.log()
    tok, capped = cispo_loss(logp, old, torch.ones(1, 4), epsilon_high=5.0)
    loss = aggregate_loss(
        tok, torch.ones(1, 4), loss_type="dapo", num_sequences=1, num_tokens=4, max_completion_length=4
    )
    assert float(loss.detach()) == pytest.approx(1.0, abs=1e-6)
    assert capped.tolist() == [[False, False, False, True]]
    loss.backward()
    assert logp.grad.tolist() == [pytest.approx([-0.125, -0.25, -0.75, -1.25], abs=1e-6)]


# ----------------------------------------------------------------- vector 7: random rewards
def test_random_reward_vector_7():
    u = [uniform_hash(0, 1, "p0", i) for i in range(8)]
    assert u == pytest.approx(
        [0.436259, 0.715689, 0.738892, 0.969066, 0.629606, 0.156040, 0.064440, 0.333376], abs=1e-6
    )
    assert random_rewards(0, 1, ["p0"], 8, 0.5).int().tolist() == [[1, 0, 0, 0, 0, 1, 1, 1]]
    assert random_rewards(0, 1, ["p0"], 8, 0.25).int().tolist() == [[0, 0, 0, 0, 0, 1, 1, 0]]


def test_action_ids_count_the_runs_of_own_tokens():
    from neggrad.core.llds import action_ids

    mask = torch.tensor([[1, 1, 0, 1, 1, 0], [0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    assert action_ids(mask).tolist() == [[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0], [0] * 6]
    # a single run is one action: the step gate over action ids is the response gate
    logp, old, m, adv, _ = llds_inputs()
    by_action, pen_a = llds_token_loss(logp, old, m, adv, gate="action", step_ids=action_ids(m))
    by_response, pen_r = llds_token_loss(logp, old, m, adv, gate="response")
    assert torch.equal(pen_a, pen_r) and torch.allclose(by_action, by_response)
