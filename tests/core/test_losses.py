"""Tests for neggrad.core.losses: hand-computed vectors (docs/algorithms.md §3-4, §16), slow references, bad input."""

import math
import random

import pytest
import torch

from neggrad.core.advantages import group_advantages
from neggrad.core.losses import (
    LOSS_TYPES,
    aggregate_loss,
    clipped_surrogate,
    kl_penalty,
    logp_policy_loss,
    step_denominators,
    token_entropy,
)

F64 = torch.float64


def assert_close(actual: torch.Tensor, expected, atol: float = 1e-6) -> None:
    # torch.allclose, not torch.testing.assert_close: the latter's first call costs seconds of imports.
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.allclose(actual, expected, atol=atol, rtol=0), f"\n{actual}\n!= (atol {atol})\n{expected}"


# ---------------------------------------------------------------- vector 9.4, clipped surrogate, eps 0.2/0.28

# Bounds are [0.8, 1.28]. Worked by hand:
# rho 1.5, A 1: -A*rho = -1.5, -A*clip = -1.28; the max -1.28 is flat in rho -> grad 0, "high".
# rho 0.5, A 1: -0.5 vs -0.8; max -0.5 is the unclipped term -> grad -A*rho = -0.5 (no lower clip for A > 0).
# rho 0.7, A -1: 0.7 vs 0.8; max 0.8 is the clipped term -> grad 0, "low".
# rho 4.0, A -1: 4.0 vs 1.28; max 4.0 unclipped (no upper clip for A < 0), grad -A*rho = 4.0;
# a dual clip of 3 caps it at -A*3 = 3.0, flat -> grad 0, "dual".
TABLE_9_4 = [
    # rho, A, loss, d loss / d logp, event
    (1.0, 1.0, -1.0, -1.0, None),
    (1.2, 1.0, -1.2, -1.2, None),
    (1.5, 1.0, -1.28, 0.0, "high"),
    (0.5, 1.0, -0.5, -0.5, None),
    (1.0, -1.0, 1.0, 1.0, None),
    (0.9, -2.0, 1.8, 1.8, None),
    (0.7, -1.0, 0.8, 0.0, "low"),
    (1.5, -1.0, 1.5, 1.5, None),
    (4.0, -1.0, 4.0, 4.0, None),
    (2.5, -1.0, 2.5, 2.5, None),
    (1.1, 0.0, 0.0, 0.0, None),
]


def surrogate_with_grad(ratio: list[float], adv: list[float], **options) -> tuple[torch.Tensor, ...]:
    """Loss, d loss / d logp and clip events of one completion whose token t has ratio[t] (old_logp = 0)."""
    logp = torch.tensor([ratio], dtype=F64).log().requires_grad_()
    loss, events = clipped_surrogate(logp, torch.zeros_like(logp), torch.tensor([adv], dtype=F64), **options)
    loss.sum().backward()
    return loss.detach()[0], logp.grad[0], {name: flags[0] for name, flags in events.items()}


@pytest.mark.parametrize("dual_clip", [None, 3.0])
def test_vector_9_4_clipped_surrogate(dual_clip):
    ratio, adv, expected_loss, expected_grad, event = (list(column) for column in zip(*TABLE_9_4, strict=True))
    if dual_clip is not None:  # only rho 4 (row 8) passes the cap -A*3 = 3; rho 2.5 stays below it
        expected_loss[8], expected_grad[8], event[8] = 3.0, 0.0, "dual"
    loss, grad, events = surrogate_with_grad(ratio, adv, epsilon=0.2, epsilon_high=0.28, dual_clip=dual_clip)
    assert_close(loss, expected_loss)
    assert_close(grad, expected_grad)
    for name in ("low", "high", "dual"):
        assert events[name].tolist() == [e == name for e in event], name


def test_vector_9_4_ngrpo_bounds():
    # NGRPO's 0.16/0.24 bounds [0.84, 1.24] with advantages of vector 9.1 (R1 correct, R1 wrong, all-wrong).
    adv = group_advantages(torch.tensor([[1.0] + [0.0] * 7, [0.0] * 8], dtype=F64), method="ngrpo")
    token_adv = [adv[0, 0].item(), adv[0, 1].item(), adv[1, 0].item()]  # 1.763830, -0.503951, -0.333332
    loss, _, events = surrogate_with_grad([1.3, 0.8, 1.2], token_adv, epsilon=0.16, epsilon_high=0.24)
    # -1.763830 * 1.24 = -2.187149 (high); 0.503951 * 0.84 = 0.423319 (low); 0.333332 * 1.2 = 0.399999.
    assert_close(loss, [-2.187149, 0.423319, 0.399999])
    assert events["high"].tolist() == [True, False, False]
    assert events["low"].tolist() == [False, True, False]


def test_symmetric_default_and_log_ratio_clamp():
    # epsilon_high None -> epsilon: rho 1.25, A 1 is clipped at 1.2.
    loss, grad, events = surrogate_with_grad([1.25], [1.0], epsilon=0.2)
    assert_close(loss, [-1.2])
    assert events["high"].tolist() == [True]
    # logp - old_logp = 50 is clamped to 20: rho = e^20 stays finite for a negative advantage.
    logp = torch.tensor([[50.0]], dtype=F64, requires_grad=True)
    loss, _ = clipped_surrogate(logp, torch.zeros_like(logp), torch.tensor([[-1.0]], dtype=F64), epsilon=0.2)
    assert_close(loss, [[math.exp(20.0)]], atol=1e-3)


def test_logp_policy_loss():
    # RAFT: l = -A * logp, d l / d logp = -A.
    logp = torch.tensor([[-0.5, -2.0]], dtype=F64, requires_grad=True)
    loss = logp_policy_loss(logp, torch.tensor([[1.0, 0.0]], dtype=F64))
    loss.sum().backward()
    assert_close(loss, [[0.5, 0.0]])
    assert_close(logp.grad, [[-1.0, 0.0]])


# ---------------------------------------------------------------- vector 9.4, KL


@pytest.mark.parametrize(
    ("logp", "ref_logp", "k1", "k2", "k3", "k3_grad"),
    [
        (-1.0, -1.0, 0.0, 0.0, 0.0, 0.0),
        # x = -0.5: k3 = e^-0.5 + 0.5 - 1 = 0.606531 - 0.5 = 0.106531; d k3 / d logp = 1 - e^x = 0.393469.
        (-1.0, -1.5, 0.5, 0.125, 0.106531, 0.393469),
        # x = 1: k3 = e - 2 = 0.718282; d k3 / d logp = 1 - e = -1.718282.
        (-2.0, -1.0, -1.0, 0.5, 0.718282, -1.718282),
        (-0.1, -3.0, 2.9, 4.205, 1.955023, 0.944977),
        (-3.0, -0.1, -2.9, 4.205, 14.274145, -17.174145),  # verl would clamp this k3 to 10
    ],
)
def test_vector_9_4_kl(logp, ref_logp, k1, k2, k3, k3_grad):
    logp_t = torch.tensor([[logp]], dtype=F64, requires_grad=True)
    ref_t = torch.tensor([[ref_logp]], dtype=F64)
    assert_close(kl_penalty(logp_t, ref_t, estimator="k1"), [[k1]])
    assert_close(kl_penalty(logp_t, ref_t, estimator="k2"), [[k2]])
    value = kl_penalty(logp_t, ref_t)  # k3 is the default
    value.sum().backward()
    assert_close(value, [[k3]])
    assert_close(logp_t.grad, [[k3_grad]])


def test_k3_exponent_is_clamped_value_is_not():
    # x = 100 is clamped to 20: k3 = e^20 - 21, finite and far above verl's cap of 10.
    value = kl_penalty(torch.tensor([[-100.0]], dtype=F64), torch.tensor([[0.0]], dtype=F64))
    assert_close(value, [[math.exp(20.0) - 21.0]], atol=1e-3)


# ---------------------------------------------------------------- entropy


def test_token_entropy():
    # Uniform over 4 tokens: ln 4. A certain token: 0. Huge logits must not overflow.
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [5.0, -math.inf, -math.inf, -math.inf], [1e4, 1e4, -1e4, -1e4]]])
    assert_close(token_entropy(logits), [[math.log(4.0), 0.0, math.log(2.0)]])


def test_token_entropy_matches_definition_and_has_finite_grads():
    logits = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0), dtype=F64)
    probs = logits.softmax(dim=-1)
    assert_close(token_entropy(logits), -(probs * probs.log()).sum(dim=-1), atol=1e-12)
    assert token_entropy(logits.bfloat16()).dtype == torch.float32
    banned = logits.clone()
    banned[..., :3] = -math.inf  # a masked part of the vocabulary
    banned.requires_grad_()
    token_entropy(banned).sum().backward()
    assert torch.isfinite(banned.grad).all()


# ---------------------------------------------------------------- vector 9.5, aggregation

# Token losses A = [1, 2] and B = [3, 4, 5, 6], padded to T = 4 with NaN (padding must not leak), L = 5.
LOSS_9_5 = torch.tensor([[1.0, 2.0, math.nan, math.nan], [3.0, 4.0, 5.0, 6.0]], dtype=F64)
MASK_9_5 = torch.tensor([[True, True, False, False], [True, True, True, True]])


@pytest.mark.parametrize(
    ("loss_type", "expected"),
    [
        ("dapo", 3.5),  # (3 + 18) / 6 tokens
        ("grpo", 3.0),  # (3/2 + 18/4) / 2 sequences = (1.5 + 4.5) / 2
        ("dr_grpo", 2.1),  # 21 / (2 sequences * L 5)
        ("seq_sum", 10.5),  # 21 / 2 sequences
    ],
)
def test_vector_9_5(loss_type, expected):
    num_sequences, num_tokens = step_denominators(MASK_9_5)
    assert (num_sequences, num_tokens) == (2, 6)
    options = dict(loss_type=loss_type, num_sequences=2, num_tokens=6, max_completion_length=5)
    assert_close(aggregate_loss(LOSS_9_5, MASK_9_5, **options), expected)
    # Micro-batches [A] and [B], each its sum over the whole step's denominator, add up exactly.
    split = aggregate_loss(LOSS_9_5[:1], MASK_9_5[:1], **options) + aggregate_loss(
        LOSS_9_5[1:], MASK_9_5[1:], **options
    )
    assert_close(split, expected)


def test_vector_9_5_mean_of_micro_batch_means_is_wrong_for_dapo():
    # dapo: 3/6 + 18/6 = 3.5 exactly; the mean of the micro-batch means (3/2 + 18/4) / 2 = 3.0 is not.
    micro_batch_means = [
        aggregate_loss(
            LOSS_9_5[i : i + 1],
            MASK_9_5[i : i + 1],
            loss_type="dapo",
            num_sequences=1,
            num_tokens=int(MASK_9_5[i].sum()),
            max_completion_length=5,
        )
        for i in range(2)
    ]
    assert_close(sum(micro_batch_means) / 2, 3.0)


def test_empty_row_contributes_nothing():
    # A completion with no valid token leaves S, the token count and the loss alone, without NaN.
    loss = torch.cat([LOSS_9_5, torch.full((1, 4), math.nan, dtype=F64)])
    mask = torch.cat([MASK_9_5, torch.zeros(1, 4, dtype=torch.bool)])
    assert step_denominators(mask) == (2, 6)
    options = dict(loss_type="grpo", num_sequences=2, num_tokens=6, max_completion_length=5)
    assert_close(aggregate_loss(loss, mask, **options), 3.0)


def reference_aggregate(token_loss: list[list[float]], mask: list[list[bool]], loss_type: str, length: int) -> float:
    """docs/algorithms.md §4 as written, one completion and one token at a time."""
    sums, counts = [], []
    for losses, valid in zip(token_loss, mask, strict=True):
        kept = [value for value, v in zip(losses, valid, strict=True) if v]
        if kept:
            sums.append(sum(kept))
            counts.append(len(kept))
    num_sequences = len(sums)
    if loss_type == "grpo":
        return sum(s / n for s, n in zip(sums, counts, strict=True)) / num_sequences
    if loss_type == "dapo":
        return sum(sums) / sum(counts)
    if loss_type == "dr_grpo":
        return sum(sums) / (num_sequences * length)
    return sum(sums) / num_sequences  # seq_sum


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_aggregate_matches_slow_reference_on_any_micro_batch_split(loss_type):
    rng = random.Random(LOSS_TYPES.index(loss_type))
    token_loss = [[rng.uniform(-2, 2) for _ in range(6)] for _ in range(9)]
    mask = [[t < rng.choice([0, 1, 3, 6]) for t in range(6)] for _ in range(9)]
    mask[0] = [True] * 6
    expected = reference_aggregate(token_loss, mask, loss_type, length=8)
    loss_t, mask_t = torch.tensor(token_loss, dtype=F64), torch.tensor(mask)
    num_sequences, num_tokens = step_denominators(mask_t)
    options = dict(loss_type=loss_type, num_sequences=num_sequences, num_tokens=num_tokens, max_completion_length=8)
    assert_close(aggregate_loss(loss_t, mask_t, **options), expected, atol=1e-12)
    split = sum(aggregate_loss(loss_t[i : i + 2], mask_t[i : i + 2], **options) for i in range(0, 9, 2))
    assert_close(split, expected, atol=1e-12)


# ---------------------------------------------------------------- vector 9.6, end to end (chained, 1e-5)


def test_vector_9_6_surrogate_plus_k3():
    # beta 0.1, eps 0.2/0.28, L = 4. Seq 1 (A 1): rho e^0.1 = 1.105171 and e^-0.3 = 0.740818, both
    # unclipped for A > 0 below 1.28; k3 at x = 0 and x = -0.2 is 0 and 0.018731, so the token losses
    # are -1.105171 and -0.740818 + 0.0018731 = -0.738945. Seq 2 (A -0.5) pads T to 3.
    logp = torch.tensor([[-0.5, -1.0, 0.0], [-1.0, -2.0, -0.2]], dtype=F64)
    old_logp = torch.tensor([[-0.6, -0.7, 0.0], [-1.1, -1.5, -0.2]], dtype=F64)
    ref_logp = torch.tensor([[-0.5, -1.2, 0.0], [-1.3, -2.0, -0.1]], dtype=F64)
    token_adv = torch.tensor([[1.0] * 3, [-0.5] * 3], dtype=F64)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert_close(torch.exp(logp - old_logp)[mask], [1.105171, 0.740818, 1.105171, 0.606531, 1.0])
    surrogate, _ = clipped_surrogate(logp, old_logp, token_adv, epsilon=0.2, epsilon_high=0.28)
    token_loss = surrogate + 0.1 * kl_penalty(logp, ref_logp)
    assert_close(token_loss[mask], [-1.105171, -0.738945, 0.556667, 0.400000, 0.500517], atol=1e-5)
    num_sequences, num_tokens = step_denominators(mask)
    for loss_type, expected in [
        ("dapo", -0.077386),
        ("grpo", -0.218165),
        ("dr_grpo", -0.048366),
        ("seq_sum", -0.193466),
    ]:
        value = aggregate_loss(
            token_loss,
            mask,
            loss_type=loss_type,
            num_sequences=num_sequences,
            num_tokens=num_tokens,
            max_completion_length=4,
        )
        assert_close(value, expected, atol=1e-5)


# ---------------------------------------------------------------- bad input


def test_bad_surrogate_input_is_refused():
    logp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"\(B, T\) tensors of one shape.*seq_adv\[:, None\]"):
        clipped_surrogate(logp, logp, torch.zeros(2), epsilon=0.2)
    with pytest.raises(ValueError, match="0 < epsilon < 1"):
        clipped_surrogate(logp, logp, logp, epsilon=0.0)
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        clipped_surrogate(logp, logp, logp, epsilon=0.2, dual_clip=1.0)
    with pytest.raises(ValueError, match=r"\(B, T\) tensors of one shape"):
        logp_policy_loss(logp, torch.zeros(3, 2))


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match=r"unknown kl_estimator 'k4'.*'k1', 'k2', 'k3'"):
        kl_penalty(torch.zeros(1, 2), torch.zeros(1, 2), estimator="k4")
    with pytest.raises(ValueError, match=r"unknown loss_type 'bnpo'.*'grpo', 'dapo', 'dr_grpo', 'seq_sum'"):
        aggregate_loss(LOSS_9_5, MASK_9_5, loss_type="bnpo", num_sequences=2, num_tokens=6, max_completion_length=5)


def test_bad_aggregate_input_is_refused():
    options = dict(loss_type="dapo", num_sequences=2, num_tokens=6, max_completion_length=5)
    with pytest.raises(ValueError, match="same \\(B, T\\) shape"):
        aggregate_loss(LOSS_9_5, MASK_9_5[:, :2], **options)
    with pytest.raises(ValueError, match="skip its update"):
        aggregate_loss(LOSS_9_5, MASK_9_5, **{**options, "num_tokens": 0})
