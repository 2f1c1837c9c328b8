"""NTHR scores, threshold and selection: a worked example (docs/algorithms.md §7) and a slow double-loop reference."""

import math

import pytest
import torch

from neggrad.core.advantages import group_advantages
from neggrad.core.logprobs import token_logprobs
from neggrad.core.nthr import eta_from_rule, group_lse, influence_scores, nthr_group, scale_token_advantages

# The worked example: pi_old next-token distributions q and hidden states h per prefix state.
Q = {
    "S0": [0.50, 0.10, 0.30, 0.10],
    "S1": [0.10, 0.70, 0.10, 0.10],
    "S2": [0.05, 0.40, 0.45, 0.10],
    "S3": [0.40, 0.20, 0.20, 0.20],
}
H = {"S0": [1.0, 0.0, 0.5], "S1": [0.5, 1.0, 0.0], "S2": [0.0, 0.5, 1.0], "S3": [0.5, -0.5, 0.5]}


def make_group(responses):
    """responses: list of (tokens, states, correct) -> logits = ln q, hidden, ids, mask, correct."""
    T = max(len(r[0]) for r in responses)
    G = len(responses)
    logits = torch.zeros(G, T, 4)
    hidden = torch.zeros(G, T, 3)
    ids = torch.zeros(G, T, dtype=torch.long)
    mask = torch.zeros(G, T, dtype=torch.bool)
    for g, (tokens, states, _) in enumerate(responses):
        for t, (tok, st) in enumerate(zip(tokens, states, strict=True)):
            logits[g, t] = torch.tensor(Q[st]).log()
            hidden[g, t] = torch.tensor(H[st])
            ids[g, t] = tok
            mask[g, t] = True
    correct = torch.tensor([r[2] for r in responses])
    return logits, hidden, ids, mask, correct


GROUP_A = [
    ([0, 1, 2], ["S0", "S1", "S2"], True),
    ([0, 1, 1], ["S0", "S1", "S2"], False),
    ([2, 0], ["S0", "S3"], False),
]
GROUP_B = GROUP_A + [([0, 2], ["S0", "S1"], True)]


def rows(result, mask):
    return [result.scores[g][mask[g]].tolist() for g in range(mask.shape[0])]


def sel(result, mask):
    return [result.selected[g][mask[g]].int().tolist() for g in range(mask.shape[0])]


def test_group_a1_response_vocab_default():
    logits, hidden, ids, mask, correct = make_group(GROUP_A)
    r = nthr_group(logits, hidden, ids, mask, correct)
    got = rows(r, mask)
    for g, want in enumerate([[0.3375, 0.0275, 0.42125], [0.3375, 0.0275, -0.46625], [-0.3625, 0.295]]):
        assert got[g] == pytest.approx(want, abs=1e-6)
    assert r.anchors.tolist() == pytest.approx([0.262083], abs=1e-6)
    assert r.tau == pytest.approx(0.262083, abs=1e-6)
    assert sel(r, mask) == [[0, 0, 0], [1, 0, 0], [0, 1]]
    assert r.eta == pytest.approx(1 / 3)
    # token advantages of A1: GRPO advantages of [1, 0, 0], selected tokens scaled by eta
    seq = group_advantages(torch.tensor([[1.0, 0.0, 0.0]]), method="grpo", correct=correct[None])[0]
    token_adv = scale_token_advantages(seq[:, None].expand(3, 3), r.selected, r.eta)
    assert token_adv[0].tolist() == pytest.approx([1.154699] * 3, abs=1e-5)
    assert token_adv[1].tolist() == pytest.approx([-0.192450, -0.577349, -0.577349], abs=1e-5)
    assert token_adv[2, :2].tolist() == pytest.approx([-0.577349, -0.192450], abs=1e-5)


def test_group_a2_full_vocab():
    logits, hidden, ids, mask, correct = make_group(GROUP_A)
    r = nthr_group(logits, hidden, ids, mask, correct, vocab="full")
    got = rows(r, mask)
    for g, want in enumerate([[0.36, 0.05, 0.44375], [0.36, 0.05, -0.44375], [-0.34, 0.31]]):
        assert got[g] == pytest.approx(want, abs=1e-6)
    assert r.tau == pytest.approx(0.284583, abs=1e-6)
    assert sel(r, mask) == [[0, 0, 0], [1, 0, 0], [0, 1]]


def test_group_a3_beta_zero_and_a4_no_self():
    logits, hidden, ids, mask, correct = make_group(GROUP_A)
    r3 = nthr_group(logits, hidden, ids, mask, correct, beta=0.0)
    assert r3.tau == 0.0
    assert sel(r3, mask) == [[0, 0, 0], [1, 1, 0], [0, 1]]
    r4 = nthr_group(logits, hidden, ids, mask, correct, anchor_include_self=False)
    assert r4.anchors.tolist() == pytest.approx([0.0], abs=1e-6)  # one correct response: M without it is 0
    assert r4.tau == pytest.approx(0.0, abs=1e-6)
    assert sel(r4, mask) == [[0, 0, 0], [1, 1, 0], [0, 1]]


def test_beta_minus_inf_selects_every_wrong_token():
    logits, hidden, ids, mask, correct = make_group(GROUP_A)
    r = nthr_group(logits, hidden, ids, mask, correct, beta=-math.inf)
    assert r.tau == -math.inf
    assert sel(r, mask) == [[0, 0, 0], [1, 1, 1], [1, 1]]


def test_group_b_two_correct_eta_zero():
    logits, hidden, ids, mask, correct = make_group(GROUP_B)
    r = nthr_group(logits, hidden, ids, mask, correct)
    got = rows(r, mask)
    want = [[0.65, -0.36, 0.73625], [0.65, -0.36, -0.85125], [-0.55, 0.605], [0.65, 1.415]]
    for g in range(4):
        assert got[g] == pytest.approx(want[g], abs=1e-6)
    assert r.anchors.tolist() == pytest.approx([0.342083, 1.0325], abs=1e-6)
    assert r.tau == pytest.approx(0.342083, abs=1e-6)
    assert sel(r, mask) == [[0, 0, 0], [1, 0, 0], [0, 1], [0, 0]]
    assert r.eta == 0.0
    seq = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), method="grpo", correct=correct[None])[0]
    token_adv = scale_token_advantages(seq[:, None].expand(4, 3), r.selected, r.eta)
    assert token_adv[0].tolist() == pytest.approx([0.866024] * 3, abs=1e-5)
    assert token_adv[1].tolist() == pytest.approx([0.0, -0.866024, -0.866024], abs=1e-5)
    assert token_adv[2, :2].tolist() == pytest.approx([-0.866024, 0.0], abs=1e-5)
    no_self = nthr_group(logits, hidden, ids, mask, correct, anchor_include_self=False)
    assert no_self.anchors.tolist() == pytest.approx([0.08, 0.12], abs=1e-6)
    assert no_self.tau == pytest.approx(0.08, abs=1e-6)
    assert sel(no_self, mask) == sel(r, mask)


def test_eta_rules():
    # App. 7.3's eta = 2|0.5 - p| for G = 8, N+ = 1..7
    assert [eta_from_rule("2|0.5-p|", k / 8) for k in range(1, 8)] == pytest.approx(
        [0.75, 0.5, 0.25, 0, 0.25, 0.5, 0.75]
    )
    assert eta_from_rule("1-p", 0.25) == 0.75
    assert eta_from_rule("p", 0.25) == 0.25
    assert eta_from_rule(0.1, 0.9) == 0.1
    with pytest.raises(ValueError, match="unknown eta rule"):
        eta_from_rule("half", 0.5)


def test_groups_without_both_kinds_are_untouched():
    logits, hidden, ids, mask, _ = make_group(GROUP_A)
    assert nthr_group(logits, hidden, ids, mask, torch.tensor([False, False, False])) is None
    assert nthr_group(logits, hidden, ids, mask, torch.tensor([True, True, True])) is None


# --------------------------------------------------------------------------- slow reference


def reference_scores(logits, hidden, ids, mask, correct, vocab):
    """Autograd-free double loop: s_t = sum over correct tokens u of dot(g_u, g_t) * dot(h_u, h_t)."""
    G, T, V = logits.shape
    probs = torch.softmax(logits.double(), dim=-1)
    cols = list(range(V)) if vocab == "full" else sorted(set(ids[mask.bool()].tolist()))

    def g(i, t):
        vec = [-float(probs[i, t, v]) for v in cols]
        if int(ids[i, t]) in cols:
            vec[cols.index(int(ids[i, t]))] += 1.0
        return vec

    out = torch.zeros(G, T, dtype=torch.float64)
    for i in range(G):
        for t in range(T):
            if not mask[i, t]:
                continue
            gt, total = g(i, t), 0.0
            for j in range(G):
                if not correct[j]:
                    continue
                for u in range(T):
                    if not mask[j, u]:
                        continue
                    gu = g(j, u)
                    gg = sum(a * b for a, b in zip(gu, gt, strict=True))
                    hh = sum(float(a) * float(b) for a, b in zip(hidden[j, u], hidden[i, t], strict=True))
                    total += gg * hh
            out[i, t] = total
    return out


@pytest.mark.parametrize("vocab", ["response", "full"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_equals_double_loop(vocab, seed):
    gen = torch.Generator().manual_seed(seed)
    G, T, V, Hd = 5, 6, 11, 4
    logits = torch.randn(G, T, V, generator=gen) * 2
    hidden = torch.randn(G, T, Hd, generator=gen)
    ids = torch.randint(0, V, (G, T), generator=gen)
    lengths = torch.randint(2, T + 1, (G,), generator=gen)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    correct = torch.tensor([True, False, True, False, False])
    want = reference_scores(logits, hidden, ids, mask, correct, vocab)
    # tiny blocks so that every chunking branch runs
    r = nthr_group(logits, hidden, ids, mask, correct, vocab=vocab, beta=0.5, chunk_tokens=3, chunk_vocab=2)
    assert torch.allclose(r.scores.double(), want * mask, atol=1e-5)
    # threshold and selection from the reference scores
    means = [float(want[i][mask[i]].mean()) for i in (0, 2)]
    tau = 0.5 * min(means)
    assert r.tau == pytest.approx(tau, abs=1e-5)
    assert torch.equal(r.selected, (want > tau) & mask & ~correct[:, None])
    # passing the logsumexp gives the same numbers
    lse = torch.logsumexp(logits, dim=-1)
    r2 = nthr_group(logits, hidden, ids, mask, correct, vocab=vocab, beta=0.5, lse=lse)
    assert torch.allclose(r2.scores, r.scores, atol=1e-6)
    # temperature: the same as passing pre-scaled logits; bf16 logits are read without a full fp32 copy
    r3 = nthr_group(logits * 2, hidden, ids, mask, correct, vocab=vocab, beta=0.5, temperature=2.0)
    assert torch.allclose(r3.scores, r.scores, atol=1e-5)
    sliced = torch.cat([torch.zeros(G, 1, V), logits], dim=1)[:, 1:]  # a non-contiguous slice, as in training
    r4 = nthr_group(sliced, hidden, ids, mask, correct, vocab=vocab, beta=0.5)
    assert torch.allclose(r4.scores, r.scores, atol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_the_forwards_log_normaliser_is_the_one_nthr_computes(temperature):
    """Issue 17: the trainer hands NTHR the logsumexp its log-probs already took (``token_logprobs(...,
    return_lse=True)``) instead of a second full-vocabulary pass per group; it is the same tensor, bit for bit,
    so the scores are too."""
    gen = torch.Generator().manual_seed(5)
    B, T, V = 8, 6, 50
    logits = (torch.randn(B, T + 1, V, generator=gen) * 3)[:, :T]  # a slice of the model's output, as in training
    hidden = torch.randn(B, T, 4, generator=gen)
    ids = torch.randint(0, V, (B, T), generator=gen)
    mask = torch.ones(B, T, dtype=torch.bool)
    correct = torch.tensor([True, False, False, True])
    logp, lse = token_logprobs(logits, ids, temperature=temperature, return_lse=True)
    assert torch.equal(logp, token_logprobs(logits, ids, temperature=temperature))
    assert torch.equal(lse, group_lse(logits, temperature))
    assert torch.equal(lse, torch.logsumexp(logits / temperature, dim=-1))
    for rows in (slice(0, 4), slice(4, 8)):
        given = nthr_group(logits[rows], hidden[rows], ids[rows], mask[rows], correct, lse=lse[rows],
                           temperature=temperature)  # fmt: skip
        own = nthr_group(logits[rows], hidden[rows], ids[rows], mask[rows], correct, temperature=temperature)
        assert torch.equal(given.scores, own.scores) and torch.equal(given.selected, own.selected)


def test_response_vocab_equals_full_when_the_group_uses_every_token():
    gen = torch.Generator().manual_seed(7)
    G, T, V = 4, 5, 6
    logits = torch.randn(G, T, V, generator=gen)
    hidden = torch.randn(G, T, 3, generator=gen)
    ids = torch.arange(G * T).view(G, T) % V  # every id 0..5 occurs
    mask = torch.ones(G, T, dtype=torch.bool)
    correct = torch.tensor([True, False, True, False])
    a = nthr_group(logits, hidden, ids, mask, correct, vocab="response")
    b = nthr_group(logits, hidden, ids, mask, correct, vocab="full")
    assert torch.allclose(a.scores, b.scores, atol=1e-6)
    assert torch.equal(a.selected, b.selected)


def test_no_self_equals_reference_without_own_tokens():
    gen = torch.Generator().manual_seed(3)
    G, T, V = 4, 4, 7
    logits = torch.randn(G, T, V, generator=gen)
    hidden = torch.randn(G, T, 3, generator=gen)
    ids = torch.randint(0, V, (G, T), generator=gen)
    mask = torch.ones(G, T, dtype=torch.bool)
    correct = torch.tensor([True, True, False, False])
    r = nthr_group(logits, hidden, ids, mask, correct, anchor_include_self=False)
    # anchor mean of response 0 with only response 1 in M, and vice versa
    only1 = reference_scores(logits, hidden, ids, mask, torch.tensor([False, True, False, False]), "response")
    only0 = reference_scores(logits, hidden, ids, mask, torch.tensor([True, False, False, False]), "response")
    assert r.anchors.tolist() == pytest.approx([float(only1[0].mean()), float(only0[1].mean())], abs=1e-5)


def test_influence_scores_restricted_vocab_drops_one_hot_of_outside_ids():
    # a token whose id is outside the restriction keeps only its -q part
    logits = torch.zeros(1, 2, 3)  # one row of two tokens, uniform q = 1/3
    hidden = torch.tensor([[[1.0], [1.0]]])
    ids = torch.tensor([[0, 2]])
    s = influence_scores(logits, hidden, ids, torch.tensor([0]), torch.tensor([1]), vocab=torch.tensor([0, 1]))
    # g_u = [1 - 1/3, -1/3], g_t = [-1/3, -1/3] (id 2 outside): <g_u, g_t> = -2/9 + 1/9 = -1/9; <h,h> = 1
    assert s.tolist() == pytest.approx([-1 / 9], abs=1e-6)


# ---------------------------------------------------------------------- cross-group NTHR (nthr.scope: batch)
def _batch_case(seed=0, groups=3, G=4, T=5, V=11, H=6, temperature=0.7):
    from torch.nn.functional import log_softmax

    g = torch.Generator().manual_seed(seed)
    R = groups * G
    weight = torch.randn(V, H, generator=g, dtype=torch.float64)
    hidden = torch.randn(R, T, H, generator=g, dtype=torch.float64)
    ids = torch.randint(0, V, (R, T), generator=g)
    ids[ids == V - 1] = 0  # the last id never occurs: the response vocabulary is a strict subset
    lengths = torch.randint(2, T + 1, (R,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    correct = torch.tensor([1, 0, 1, 0] + [0, 0, 0, 0] + [1, 1, 0, 1])[:R].bool()  # mixed, all wrong, mixed
    logits = hidden @ weight.T  # (R, T, V)
    lse = torch.logsumexp(logits / temperature, dim=-1)
    q = torch.exp(log_softmax(logits / temperature, dim=-1))
    return weight, hidden, ids, mask, correct, logits, lse, q, torch.arange(R) // G


def _slow_batch_scores(hidden, ids, mask, correct, q, cols):
    """s_t = sum over every correct token u of the batch of <g_u, g_t> <h_u, h_t>, one pair at a time."""
    R, T = ids.shape
    V = q.shape[-1]

    def g(r, t):
        onehot = torch.zeros(V, dtype=torch.float64)
        onehot[ids[r, t]] = 1.0
        return (onehot - q[r, t])[cols]

    scores = torch.zeros(R, T, dtype=torch.float64)
    for r in range(R):
        for t in range(T):
            if not mask[r, t]:
                continue
            total = 0.0
            for ru in range(R):
                if not correct[ru]:
                    continue
                for u in range(T):
                    if mask[ru, u]:
                        total += float(g(ru, u) @ g(r, t)) * float(hidden[ru, u] @ hidden[r, t])
            scores[r, t] = total
    return scores


@pytest.mark.parametrize("vocab", ["response", "full"])
@pytest.mark.parametrize("chunks", [(1024, 8192), (3, 2)])
def test_nthr_batch_matches_a_slow_double_loop(vocab, chunks):
    from neggrad.core.nthr import nthr_batch

    weight, hidden, ids, mask, correct, _, lse, q, groups = _batch_case()
    flat = mask.reshape(-1).nonzero().squeeze(1)
    rows = flat // ids.shape[1]
    cols = torch.unique(ids.reshape(-1)[flat]) if vocab == "response" else torch.arange(weight.shape[0])
    expected = _slow_batch_scores(hidden, ids, mask, correct, q, cols)
    out = nthr_batch(
        hidden.reshape(-1, hidden.shape[-1])[flat],
        ids.reshape(-1)[flat],
        lse.reshape(-1)[flat],
        weight,
        rows,
        groups,
        correct,
        beta=1.0,
        eta="2|0.5-p|",
        vocab=vocab,
        temperature=0.7,
        chunk_tokens=chunks[0],
        chunk_vocab=chunks[1],
    )
    torch.testing.assert_close(out.scores.double(), expected.reshape(-1)[flat], rtol=1e-4, atol=1e-4)
    # threshold: the lowest mean score of a correct response; selected: wrong tokens of mixed groups above it
    means = [expected[r][mask[r]].mean() for r in range(len(correct)) if correct[r]]
    tau = min(means)
    assert out.tau == pytest.approx(float(tau), rel=1e-4)
    mixed_row = torch.tensor([g in (0, 2) for g in groups.tolist()])
    want = (~correct[rows]) & mixed_row[rows] & (expected.reshape(-1)[flat] > tau)
    assert torch.equal(out.selected, want) and bool(want.any())
    assert out.eta[0] == pytest.approx(0.0) and out.eta[2] == pytest.approx(0.5) and torch.isnan(out.eta[1])


def test_nthr_batch_on_one_group_equals_group_nthr():
    from neggrad.core.nthr import nthr_batch, nthr_group

    weight, hidden, ids, mask, correct, logits, lse, _, groups = _batch_case(groups=1)
    flat = mask.reshape(-1).nonzero().squeeze(1)
    one = nthr_group(logits, hidden, ids, mask, correct, beta=1.0, eta="2|0.5-p|", vocab="response", temperature=0.7)
    out = nthr_batch(
        hidden.reshape(-1, hidden.shape[-1])[flat],
        ids.reshape(-1)[flat],
        lse.reshape(-1)[flat],
        weight,
        flat // ids.shape[1],
        groups,
        correct,
        temperature=0.7,
    )
    torch.testing.assert_close(out.scores.double(), one.scores.reshape(-1)[flat].double(), rtol=1e-5, atol=1e-5)
    assert torch.equal(out.selected, one.selected.reshape(-1)[flat]) and out.tau == pytest.approx(one.tau)
