"""Tests for neggrad.core.advantages: hand-computed vectors (docs/algorithms.md §2), a slow reference, bad input."""

import math
import random

import pytest
import torch

from neggrad.core.advantages import ESTIMATORS, group_advantages, trained_rows
from neggrad.core.shaping import scheme_rewards

R1 = [1.0, 0, 0, 0, 0, 0, 0, 0]  # one correct in eight
R4 = [1.0, 1, 0, 0, 1, 0, 1, 0]  # four correct in eight


def rows(*values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)  # float64, as the hand computation


def assert_close(actual: torch.Tensor, expected, atol: float = 1e-6) -> None:
    # torch.allclose, not torch.testing.assert_close: the latter's first call costs seconds of imports.
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.allclose(actual, expected, atol=atol, rtol=0), f"\n{actual}\n!= (atol {atol})\n{expected}"


# ---------------------------------------------------------------- slow reference, python floats


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def std(xs: list[float], correction: int = 1) -> float:
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - correction))


def reference_advantages(
    rewards: list[list[float]],
    correct: list[list[bool]],
    method: str,
    *,
    scale_rewards: str = "group",
    clamp: bool = False,
    eps: float = 1e-6,
    num_virtual: int = 1,
    virtual_reward: float = 1.0,
    positive_weight: float = 0.1,
    correction: int = 1,
) -> list[list[float]]:
    """Every estimator as docs/algorithms.md §2 writes it, one group and one completion at a time."""
    everything = [r for row in rewards for r in row]
    result = []
    for row, row_correct in zip(rewards, correct, strict=True):
        group_size = len(row)
        if method == "grpo":
            scale = {"group": std(row, correction) + eps, "batch": std(everything) + eps, "none": 1.0}[scale_rewards]
            adv = [(r - mean(row)) / scale for r in row]
            adv = [max(a, 0.0) for a in adv] if clamp else adv
        elif method == "rloo":  # leave one out, literally
            adv = [r - sum(row[j] for j in range(group_size) if j != i) / (group_size - 1) for i, r in enumerate(row)]
        elif method == "ngrpo":
            augmented = row + [virtual_reward] * num_virtual
            adv = [(r - mean(augmented)) / (std(augmented, correction) + eps) for r in row]
        elif method == "psr":
            adv = [1.0 if c else 0.0 for c in row_correct]
        elif method == "nsr":
            adv = [0.0 if c else -1.0 for c in row_correct]
        elif method == "w_reinforce":
            adv = [positive_weight if c else -1.0 for c in row_correct]
        elif method == "raft":
            adv = [1.0 if c else 0.0 for c in row_correct]
        elif method == "reinforce_rej":
            adv = list(row)
        result.append(adv)
    return result


def random_groups(rng: random.Random, num_prompts: int, group_size: int) -> tuple[list[list[float]], list[list[bool]]]:
    """Binary, pm1 and shaped (continuous) groups; the first is all-wrong and the second all-correct."""
    rewards, correct = [], []
    for p in range(num_prompts):
        probability = [0.0, 1.0][p] if p < 2 else 0.4
        row_correct = [rng.random() < probability for _ in range(group_size)]
        if p % 3 == 0:
            row = [float(c) for c in row_correct]
        elif p % 3 == 1:
            row = [2.0 * c - 1.0 for c in row_correct]
        else:
            row = [float(c) - rng.random() * 0.5 for c in row_correct]
        rewards.append(row)
        correct.append(row_correct)
    return rewards, correct


@pytest.mark.parametrize("method", sorted(ESTIMATORS))
@pytest.mark.parametrize("group_size", [2, 3, 8])
def test_matches_slow_reference(method, group_size):
    rng = random.Random(group_size)
    rewards, correct = random_groups(rng, num_prompts=9, group_size=group_size)
    adv = group_advantages(rows(*rewards), method=method, correct=torch.tensor(correct))
    assert_close(adv, reference_advantages(rewards, correct, method), atol=1e-7)


@pytest.mark.parametrize(
    ("options", "reference_options"),
    [
        ({"scale_rewards": "batch"}, {"scale_rewards": "batch"}),
        ({"scale_rewards": "none"}, {"scale_rewards": "none"}),
        ({"clamp_negative_advantages": True}, {"clamp": True}),
        ({"eps": 1e-4}, {"eps": 1e-4}),
    ],
)
def test_grpo_options_match_slow_reference(options, reference_options):
    rewards, correct = random_groups(random.Random(0), num_prompts=7, group_size=5)
    adv = group_advantages(rows(*rewards), **options)
    assert_close(adv, reference_advantages(rewards, correct, "grpo", **reference_options), atol=1e-7)


def test_ngrpo_and_w_reinforce_options_match_slow_reference():
    rewards, correct = random_groups(random.Random(1), num_prompts=6, group_size=4)
    adv = group_advantages(rows(*rewards), method="ngrpo", num_virtual=3, virtual_reward=0.5)
    assert_close(adv, reference_advantages(rewards, correct, "ngrpo", num_virtual=3, virtual_reward=0.5), atol=1e-7)
    adv = group_advantages(rows(*rewards), method="w_reinforce", correct=torch.tensor(correct), positive_weight=0.3)
    assert_close(adv, reference_advantages(rewards, correct, "w_reinforce", positive_weight=0.3), atol=1e-7)


def test_float32_in_float32_out():
    rewards, correct = random_groups(random.Random(2), num_prompts=6, group_size=8)
    adv = group_advantages(torch.tensor(rewards), method="ngrpo")
    assert adv.dtype == torch.float32
    assert_close(adv, reference_advantages(rewards, correct, "ngrpo"), atol=1e-5)


# ---------------------------------------------------------------- vector 9.1, G = 8

# Hand check, R1: mean 1/8; unbiased std sqrt((0.875^2 + 7 * 0.125^2) / 7) = sqrt(0.125) = 0.353553.
# GRPO: 0.875 / 0.353553 = 2.474874 less the eps effect -> 2.474867; -0.125 / 0.353553 = -0.353552.
# Dr. GRPO: 0.875 and -0.125. RLOO: 8/7 * 0.875 = 1 and 8/7 * -0.125 = -1/7 = -0.142857.
# R4: mean 0.5, unbiased std sqrt(8 * 0.25 / 7) = 0.534522, so GRPO +-0.5 / 0.534522 = +-0.935413.
# NGRPO on R1: R' has two 1s in nine, mean 2/9 = 0.222222, std sqrt(126/81/8) = 0.440959,
# A = (7/9) / 0.440959 = 1.763830 and -(2/9) / 0.440959 = -0.503951.
TABLE_9_1 = [
    # method, options, R1 correct, R1 wrong, R4 correct, R4 wrong
    ("grpo", {}, 2.474867, -0.353552, 0.935413, -0.935413),
    ("grpo", {"scale_rewards": "none"}, 0.875000, -0.125000, 0.500000, -0.500000),  # dr_grpo
    ("rloo", {}, 1.000000, -0.142857, 0.571429, -0.571429),
    ("ngrpo", {}, 1.763830, -0.503951, 0.843272, -1.054091),
    ("grpo", {"clamp_negative_advantages": True}, 2.474867, 0.0, 0.935413, 0.0),  # pos_only
]


@pytest.mark.parametrize(("method", "options", "r1_correct", "r1_wrong", "r4_correct", "r4_wrong"), TABLE_9_1)
def test_vector_9_1(method, options, r1_correct, r1_wrong, r4_correct, r4_wrong):
    adv = group_advantages(rows(R1, R4), method=method, **options)
    assert_close(adv[0], [r1_correct] + [r1_wrong] * 7)
    assert_close(adv[1], [r4_correct if r else r4_wrong for r in R4])


def test_vector_9_1_population_std_rows_are_not_ours():
    # The "biased std" values (numpy's default, used by GRPO-Zero and NGRPO's printed Eq. 6)
    # come out of the reference with correction=0; the library uses the unbiased std instead.
    correct = [[r > 0 for r in R1], [r > 0 for r in R4]]
    biased = reference_advantages([R1, R4], correct, "grpo", correction=0)
    assert_close(torch.tensor(biased)[:, :3], [[2.645743, -0.377963, -0.377963], [0.999998, 0.999998, -0.999998]])
    population = reference_advantages([R1, R4], correct, "ngrpo", correction=0)
    assert_close(torch.tensor(population)[:, :3], [[1.870824, -0.534521, -0.534521], [0.894425, 0.894425, -1.118032]])
    assert not torch.allclose(group_advantages(rows(R1, R4)), torch.tensor(biased, dtype=torch.float64))


def test_vector_9_1_all_wrong_and_all_correct():
    all_wrong, all_correct = [0.0] * 8, [1.0] * 8
    # GRPO: every reward equals the mean, so exactly 0 whatever eps.
    assert torch.equal(group_advantages(rows(all_wrong, all_correct)), torch.zeros(2, 8, dtype=torch.float64))
    # NGRPO all-wrong: R' = eight 0s and one 1, mean 1/9, std sqrt((64/81 + 8/81) / 8) = 1/3,
    # A = -(1/9) / (1/3 + 1e-6) = -0.333332. All-correct: R' is nine 1s, so exactly 0.
    adv = group_advantages(rows(all_wrong, all_correct), method="ngrpo")
    assert_close(adv[0], [-0.333332] * 8)
    assert torch.equal(adv[1], torch.zeros(8, dtype=torch.float64))


def test_vector_9_1_batch_scaling():
    # Rows [1,0,0,0] and [1,1,0,0]: batch mean 3/8, unbiased std sqrt((3 * 0.625^2 + 5 * 0.375^2) / 7)
    # = sqrt(1.875 / 7) = 0.517549. Row 1: 0.75 / 0.517549 = 1.449135, -0.25 / 0.517549 = -0.483045.
    # Row 2: +-0.5 / 0.517549 = +-0.966090.
    rewards = rows([1, 0, 0, 0], [1, 1, 0, 0])
    batch = group_advantages(rewards, scale_rewards="batch")
    assert_close(batch, [[1.449135, -0.483045, -0.483045, -0.483045], [0.966090, 0.966090, -0.966090, -0.966090]])
    # Per group: row 1 std 0.5 -> 1.5 and -0.5 (less eps); row 2 std sqrt(1/3) = 0.577350 -> +-0.866024.
    group = group_advantages(rewards, scale_rewards="group")
    assert_close(group, [[1.499997, -0.499999, -0.499999, -0.499999], [0.866024, 0.866024, -0.866024, -0.866024]])


def test_equal_rewards_give_exact_zeros():
    # 0.1 + 0.1 + 0.1 in float32 is not 0.3, so the mean of three 0.1s need not be 0.1; still 0.
    flat = torch.full((1, 3), 0.1)
    for method in ("grpo", "rloo"):
        assert torch.equal(group_advantages(flat, method=method), torch.zeros(1, 3))
    assert torch.equal(group_advantages(flat, method="ngrpo", virtual_reward=0.1), torch.zeros(1, 3))
    assert torch.equal(group_advantages(flat, scale_rewards="batch"), torch.zeros(1, 3))


# ---------------------------------------------------------------- vector 9.2, correctness [1,0,0,1]

CORRECT_9_2 = torch.tensor([[True, False, False, True]])


@pytest.mark.parametrize(
    ("method", "expected_adv", "expected_rows"),
    [
        ("psr", [1.0, 0.0, 0.0, 1.0], [True, False, False, True]),  # wrong rows dropped
        ("nsr", [0.0, -1.0, -1.0, 0.0], [False, True, True, False]),  # correct rows dropped
        ("w_reinforce", [0.1, -1.0, -1.0, 0.1], [True] * 4),
        ("raft", [1.0, 0.0, 0.0, 1.0], [True] * 4),  # wrong rows kept at A = 0
    ],
)
def test_vector_9_2_correctness_baselines(method, expected_adv, expected_rows):
    # The rewards are deliberately not the correctness: these methods must read `correct` only.
    shaped = rows([0.3, -0.2, 0.0, 0.9])
    adv = group_advantages(shaped, method=method, correct=CORRECT_9_2)
    assert_close(adv, [expected_adv])
    assert torch.equal(trained_rows(CORRECT_9_2, method=method), torch.tensor([expected_rows]))


def test_vector_9_2_reinforce_rej_on_pm1():
    # pm1 maps [1,0,0,0] to [1,-1,-1,-1]; Reinforce-Rej's advantage is the reward itself.
    correct = torch.tensor([[True, False, False, False]])
    rewards = scheme_rewards(correct, reward_scheme="pm1")
    assert_close(group_advantages(rewards, method="reinforce_rej"), [[1.0, -1.0, -1.0, -1.0]])


@pytest.mark.parametrize("method", ["grpo", "rloo", "ngrpo", "reinforce_rej"])
def test_reward_methods_train_every_row(method):
    assert trained_rows(CORRECT_9_2, method=method).all()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("shape", [(8,), (2, 1), (2, 4, 1)])
def test_rewards_must_be_groups_of_at_least_two(shape):
    with pytest.raises(ValueError, match=r"shape \(P, G\) with G >= 2.*num_generations"):
        group_advantages(torch.zeros(shape))


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown advantage method 'ppo'.*'grpo'.*'w_reinforce'"):
        group_advantages(torch.zeros(2, 4), method="ppo")
    with pytest.raises(ValueError, match=r"unknown advantage method 'ppo'"):
        trained_rows(CORRECT_9_2, method="ppo")


@pytest.mark.parametrize("method", ["psr", "nsr", "w_reinforce", "raft"])
def test_correctness_methods_require_correct(method):
    with pytest.raises(ValueError, match=rf"method '{method}' reads binary correctness.*pass correct="):
        group_advantages(torch.zeros(2, 4), method=method)


@pytest.mark.parametrize("method", ["rloo", "ngrpo", "psr", "reinforce_rej"])
def test_grpo_only_options_are_refused_elsewhere(method):
    with pytest.raises(ValueError, match="clamp_negative_advantages .*needs method 'grpo'"):
        group_advantages(torch.zeros(1, 4), method=method, correct=CORRECT_9_2, clamp_negative_advantages=True)
    with pytest.raises(ValueError, match="scale_rewards='none' needs method 'grpo'"):
        group_advantages(torch.zeros(1, 4), method=method, correct=CORRECT_9_2, scale_rewards="none")


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match='scale_rewards must be "group", "batch" or "none"'):
        group_advantages(torch.zeros(1, 4), scale_rewards="std")
    with pytest.raises(ValueError, match="float tensor"):
        group_advantages(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or inf"):
        group_advantages(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="num_virtual must be >= 1.*'grpo'"):
        group_advantages(torch.zeros(1, 4), method="ngrpo", num_virtual=0)


def test_bad_correct_is_refused():
    with pytest.raises(ValueError, match="bool"):
        group_advantages(torch.zeros(1, 4), method="psr", correct=torch.ones(1, 4))
    with pytest.raises(ValueError, match=r"correct has shape \(2, 2\) but rewards have \(1, 4\)"):
        group_advantages(torch.zeros(1, 4), method="psr", correct=torch.ones(2, 2, dtype=torch.bool))


def test_abstaining_rewards_vector_9_2():
    # docs/algorithms.md §1.3 (TRL PR #5902): [1, None, 0, 0] -> GRPO [1.154699, 0, -0.577349, -0.577349],
    # RLOO [1, 0, -0.5, -0.5]
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    scorable = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)
    grpo = group_advantages(rewards, method="grpo", scorable=scorable)
    assert grpo[0].tolist() == pytest.approx([1.154699, 0.0, -0.577349, -0.577349], abs=1e-5)
    assert torch.equal(grpo[1], group_advantages(rewards[1:2], method="grpo")[0])  # a fully scored group unchanged
    assert grpo[2].tolist() == [0.0] * 4  # one scorable answer: no baseline, all 0
    rloo = group_advantages(rewards, method="rloo", scorable=scorable)
    assert rloo[0].tolist() == pytest.approx([1.0, 0.0, -0.5, -0.5], abs=1e-6)
    correct = rewards.bool()  # estimators on binary correctness skip abstentions too
    nsr = group_advantages(rewards, method="nsr", correct=correct, scorable=scorable)
    assert nsr[0].tolist() == [0.0, 0.0, -1.0, -1.0]
