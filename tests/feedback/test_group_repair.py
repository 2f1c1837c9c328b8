"""The group policy: all-wrong groups get the judge's partial rewards, everything else is untouched."""

import json
import math
import types

import pytest
import torch

from neggrad.config import build_config
from neggrad.core.partial_reward import partial_reward
from neggrad.feedback.judge import JudgeRequest, none_wrong
from neggrad.feedback.oracle import OracleJudge
from neggrad.feedback.repair import FeedbackStats, repair_all_wrong, safe_judge
from neggrad.rollout.base import Rollout
from neggrad.tasks.build import build_task
from neggrad.tasks.testbed import parse_prompt, solve
from neggrad.trainer.batch import collect_batch
from neggrad.trainer.metrics import METRICS

G = 4


def _wrong(prompt: str, position: int) -> str:
    """The reference solution with step ``position`` (1-based) corrupted and the final answer off by one."""
    problem = solve(*parse_prompt(prompt))
    steps = list(problem.steps)
    steps[position - 1] = steps[position - 1] + "1"  # 3+4=7 -> 3+4=71
    if position < len(steps):
        steps[-1] = f"A: {int(problem.answer) + 1}"
    return ", ".join(steps[:-1]) + ". " + steps[-1]


def _group(prompt: str, kind: int) -> list[str]:
    """Group kinds: 0 mixed, 1 all wrong at steps 1, 2, 3, 3; 2 all wrong identically; 3 all correct."""
    solution = solve(*parse_prompt(prompt)).solution
    if kind == 0:
        return [solution, _wrong(prompt, 1), _wrong(prompt, 2), _wrong(prompt, 3)]
    if kind == 1:
        return [_wrong(prompt, 1), _wrong(prompt, 2), _wrong(prompt, 3), _wrong(prompt, 3)]
    if kind == 2:
        return [_wrong(prompt, 2)] * G
    return [solution] * G


class ScriptedEngine:
    """A rollout engine whose i-th prompt of every call gets the completions of group kind i % 4."""

    tokenizer = types.SimpleNamespace(pad_token_id=0)

    def generate(self, prompts, *, num_generations):
        texts = [t for i, p in enumerate(prompts) for t in _group(p, i % 4)]
        B = len(texts)
        return Rollout(
            torch.ones(B, 1, dtype=torch.long), torch.ones(B, 1, dtype=torch.long),
            torch.full((B, 2), 5), torch.ones(B, 2, dtype=torch.long), torch.zeros(B, dtype=torch.bool), texts,
        )  # fmt: skip


def _config(*overrides):
    return build_config(
        {},
        [
            "task.min_operands=3", "task.max_operands=3", "num_generations=4",
            "per_device_train_batch_size=8", "gradient_accumulation_steps=2",  # 16 completions = 4 groups
            "feedback.enabled=true", "feedback.step_split=testbed", *overrides,
        ],
    )  # fmt: skip


def _r(f: float) -> float:
    return partial_reward(torch.tensor(f, dtype=torch.float64)).item()


def test_repair_all_wrong_on_one_round():
    cfg = _config()
    prompts = [build_task(cfg.task).train_example(i).prompt for i in range(4)]
    texts = [t for i, p in enumerate(prompts) for t in _group(p, i)]
    correct = torch.tensor([[True, False, False, False], [False] * 4, [False] * 4, [True] * 4])
    stats = FeedbackStats()
    repair = repair_all_wrong(
        OracleJudge(), correct, prompts, prompts, texts, cfg=cfg.feedback, reward_scheme="binary", stats=stats
    )
    assert repair.repaired.tolist() == [False, True, True, False]
    assert repair.varies.tolist() == [False, True, False, False]
    # 3 steps each: first wrong at 1, 2, 3, 3 -> f = 0, 1/3, 2/3, 2/3
    expected = [_r(0.0), _r(1 / 3), _r(2 / 3), _r(2 / 3)]
    torch.testing.assert_close(repair.rewards[1], torch.tensor(expected, dtype=torch.float32))
    torch.testing.assert_close(repair.rewards[2], torch.full((4,), _r(1 / 3), dtype=torch.float32))
    metrics = stats.metrics()
    assert (metrics["feedback/groups"], metrics["feedback/judged"], metrics["feedback/failed"]) == (2, 8, 0)
    assert metrics["feedback/f_mean"] == pytest.approx((0 + 1 / 3 + 2 / 3 + 2 / 3 + 4 / 3) / 8)
    assert metrics["feedback/f_hist"] == [1, 0, 0, 5, 0, 0, 2, 0, 0, 0]  # 1/3 -> bin 3, 2/3 -> bin 6
    assert set(metrics) <= set(METRICS)


def test_answers_cut_at_the_length_limit_lose_their_credit_only_when_asked():
    """feedback.credit_truncated: false gives a cut answer the wrong-answer reward (0; -1 under pm1), the rest of
    its group keeps the judge's partial credit; the default keeps SGPO's credit for every answer."""
    prompts = [build_task(_config().task).train_example(i).prompt for i in range(4)]
    texts = [t for i, p in enumerate(prompts) for t in _group(p, i)]
    correct = torch.tensor([[True, False, False, False], [False] * 4, [False] * 4, [True] * 4])
    truncated = torch.zeros(16, dtype=torch.bool)
    truncated[[6, 7, 9]] = True  # group 1's answers 2 and 3 (f = 2/3), group 2's answer 1 (f = 1/3)
    by_setting = {}
    for credit in (True, False):
        for scheme in ("binary", "pm1"):
            cfg = _config(f"feedback.credit_truncated={str(credit).lower()}")
            repair = repair_all_wrong(
                OracleJudge(), correct, prompts, prompts, texts,
                cfg=cfg.feedback, reward_scheme=scheme, stats=FeedbackStats(), truncated=truncated,
            )  # fmt: skip
            by_setting[credit, scheme] = repair.rewards
    credit = torch.tensor([[_r(0.0), _r(1 / 3), _r(2 / 3), _r(2 / 3)], [_r(1 / 3)] * 4], dtype=torch.float32)
    torch.testing.assert_close(by_setting[True, "binary"][1:3], credit)
    cut = credit.clone()
    cut[0, 2:] = 0.0
    cut[1, 1] = 0.0
    torch.testing.assert_close(by_setting[False, "binary"][1:3], cut)
    pm1 = 2 * credit - 1
    pm1[0, 2:] = -1.0
    pm1[1, 1] = -1.0
    torch.testing.assert_close(by_setting[False, "pm1"][1:3], pm1)
    assert by_setting[False, "binary"][[0, 3]].eq(0).all()  # groups that were not repaired stay untouched


def test_grpo_batch_mixed_untouched_all_wrong_gets_variance():
    cfg = _config()
    batch, cursor = collect_batch(cfg, ScriptedEngine(), build_task(cfg.task), 0, judge=OracleJudge())
    assert cursor == 4
    correct = batch.correct.view(4, G)
    assert correct.tolist() == [[True, False, False, False], [False] * 4, [False] * 4, [True] * 4]  # unchanged
    rewards, adv = batch.rewards.view(4, G), batch.seq_adv.view(4, G)
    assert rewards[0].tolist() == [1.0, 0.0, 0.0, 0.0] and rewards[3].tolist() == [1.0] * 4
    torch.testing.assert_close(rewards[1], torch.tensor([_r(0.0), _r(1 / 3), _r(2 / 3), _r(2 / 3)]))
    assert adv[1].std() > 0 and adv[1][0] < 0 < adv[1][3]  # the answer that went furthest is pushed up most
    assert adv[2].abs().max() == 0  # identical answers: no variance even after repair
    assert batch.stats["accuracy"] == 5 / 16  # repaired answers still count as wrong
    assert batch.stats["feedback/groups"] == 2 and batch.stats["time/judge"] >= 0
    assert set(batch.stats) <= set(METRICS)


def test_without_feedback_all_wrong_groups_stay_at_zero():
    cfg = _config("feedback.enabled=false")
    batch, _ = collect_batch(cfg, ScriptedEngine(), build_task(cfg.task), 0)
    assert batch.rewards.view(4, G)[1].tolist() == [0.0] * 4
    assert not any(key.startswith("feedback/") for key in batch.stats)


def test_dapo_zero_std_keeps_a_repaired_group_iff_it_varies_and_maps_to_pm1():
    # dapo: pm1 rewards, zero_std filter with refill. Per round: mixed and varied-repaired kept, the identical
    # all-wrong and the all-correct groups dropped; two rounds fill P = 4.
    cfg = _config("method=dapo")
    batch, cursor = collect_batch(cfg, ScriptedEngine(), build_task(cfg.task), 0, judge=OracleJudge())
    assert cursor == 8 and batch.stats["groups/gen_rounds"] == 2 and batch.stats["groups/dropped"] == 4
    assert batch.stats["feedback/groups"] == 4  # both all-wrong groups of both rounds went to the judge
    rewards = batch.rewards.view(4, G)
    assert rewards[0].tolist() == [1.0, -1.0, -1.0, -1.0]
    expected = [-1 + 2 * _r(f) for f in (0.0, 1 / 3, 2 / 3, 2 / 3)]  # -1 + 2r under pm1
    torch.testing.assert_close(rewards[1], torch.tensor(expected))
    assert batch.correct.view(4, G)[1].tolist() == [False] * 4


class BrokenJudge:
    name = "broken"

    def judge(self, requests):
        raise RuntimeError("judge server exploded")


def test_a_failing_judge_costs_rewards_never_the_run():
    cfg = _config("method=ngrpo")
    batch, _ = collect_batch(cfg, ScriptedEngine(), build_task(cfg.task), 0, judge=BrokenJudge())
    # ngrpo drops the all-correct group and refills: two rounds, 2 all-wrong groups each, 16 failed answers
    assert batch.stats["feedback/failed"] == 16 and batch.stats["feedback/judged"] == 0
    rewards = batch.rewards.view(-1, G)
    assert rewards[1].tolist() == [0.0] * 4  # failure -> reward 0
    assert torch.isfinite(batch.seq_adv).all()


def test_safe_judge_rejects_impossible_verdicts():
    class Liar:
        name = "liar"

        def judge(self, requests):
            return OracleJudge().judge(requests)[:-1]

    requests = [JudgeRequest("Q: 1+2=", "", ("1+2=3", "A: 3"))] * 2
    assert [v.reason for v in safe_judge(Liar(), requests)] == ["judge returned the wrong number of verdicts"] * 2


def test_a_judge_that_finds_nothing_wrong_in_an_empty_answer_fails_that_answer_only():
    class Lenient:
        name = "lenient"

        def judge(self, requests):
            return [none_wrong(len(r.steps)) for r in requests]

    completions = ["1+2=3, 3+4=8. A: 8", "  \n", "1+2=4, 4+4=8. A: 8", ""]  # answers 2 and 4 have no step
    stats = FeedbackStats()
    cfg = build_config({}, []).feedback
    repair = repair_all_wrong(
        Lenient(), torch.zeros(1, G, dtype=torch.bool), ["Q: 1+2+4="], ["1+2=3, 3+4=7. A: 7"], completions,
        cfg=cfg, reward_scheme="binary", stats=stats,
    )  # fmt: skip
    top = partial_reward(torch.tensor([2 / 3]), beta=cfg.beta, gamma=cfg.gamma, scale=cfg.scale).item()
    assert repair.rewards[0].tolist() == pytest.approx([top, 0.0, top, 0.0])  # none wrong: k = n; no steps: 0
    assert [v.reason for v in stats.verdicts] == [None, "the response has no steps", None, "the response has no steps"]
    assert stats.metrics()["feedback/failed"] == 2 and bool(repair.varies[0])


def test_a_tiny_run_with_the_http_judge_writes_metrics_and_never_the_key(stub, tmp_path, monkeypatch):
    from neggrad.trainer.loop import train
    from tests.test_train import TINY

    secret = "sk-run-dir-secret-42"
    monkeypatch.setenv("NEGGRAD_TEST_RUN_KEY", secret)
    cfg = build_config(
        {},
        [
            *TINY, "max_steps=2", "eval_steps=0", "save_steps=0",
            "feedback.enabled=true", "feedback.judge=http", f"feedback.http.base_url={stub.url}",
            "feedback.http.model=stub", "feedback.http.api_key_env=NEGGRAD_TEST_RUN_KEY",
            f"feedback.cache_dir={tmp_path / 'cache'}",
            "feedback.prompt_template=case:ok1 {problem}{reference}{steps}",
        ],
    )  # fmt: skip
    run_dir = tmp_path / "run"
    summary = train(cfg, run_dir)
    assert summary["status"] == "completed"
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(key in lines[0] for key in ("feedback/groups", "feedback/f_hist", "time/judge"))
    assert all(math.isfinite(line["loss/total"]) for line in lines)
    assert stub.auth and set(stub.auth) == {f"Bearer {secret}"}
    for path in [*run_dir.rglob("*"), *(tmp_path / "cache").rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
