"""The in-process judge on a tiny random model: garbage replies are failures, never crashes."""

import pytest

from neggrad.config import TestbedModelConfig
from neggrad.feedback.cache import JudgeCache
from neggrad.feedback.judge import JudgeRequest
from neggrad.feedback.local import LocalJudge
from neggrad.models.testbed.model import build_model
from neggrad.models.testbed.tokenizer import build_tokenizer

REQUESTS = [
    JudgeRequest("Q: 3+4=", "3+4=7. A: 7", ("3+4=8", "A: 8")),
    JudgeRequest("Q: 5-1=", "5-1=4. A: 4", ("5-1=3", "A: 3")),
    JudgeRequest("Q: 5-1=", "5-1=4. A: 4", ()),
]


@pytest.fixture(scope="module")
def tiny():
    tokenizer = build_tokenizer()
    shape = TestbedModelConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=1024,
    )  # fmt: skip
    return build_model(shape, tokenizer, seed=0), tokenizer


def test_a_random_model_yields_failures(tiny, tmp_path):
    model, tokenizer = tiny
    judge = LocalJudge(model, tokenizer, model_id="tiny", template="{problem}|{reference}|{steps}", max_new_tokens=6)
    verdicts = judge.judge(REQUESTS)
    assert [v.kind for v in verdicts] == ["failure"] * 3
    assert "FIRST_WRONG_STEP" in verdicts[0].reason and verdicts[0].num_steps == 2
    assert verdicts[2].reason == "the response has no steps"


def test_a_prompt_longer_than_the_context_is_a_failure(tiny):
    model, tokenizer = tiny
    judge = LocalJudge(model, tokenizer, model_id="tiny", template="{problem}" + "0" * 1100 + "{reference}{steps}")
    verdict = judge.judge(REQUESTS[:1])[0]
    assert verdict.failed and "exceeds the judge model's context of 1024" in verdict.reason


def test_an_error_inside_generate_is_a_failure(tiny, monkeypatch):
    model, tokenizer = tiny
    judge = LocalJudge(model, tokenizer, model_id="tiny", template="{problem}{reference}{steps}", max_new_tokens=2)

    def broken(prompts):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(judge, "_generate", broken)
    assert [v.reason for v in judge.judge(REQUESTS[:2])] == ["local judge error: RuntimeError"] * 2


def test_replies_are_parsed_and_cached(tiny, tmp_path, monkeypatch):
    model, tokenizer = tiny
    cache = JudgeCache(tmp_path, "local|tiny|4")
    judge = LocalJudge(
        model, tokenizer, model_id="tiny", template="{problem}{reference}{steps}", max_new_tokens=4, cache=cache
    )
    calls = []

    def scripted(prompts):  # what a capable judge model would answer
        calls.append(len(prompts))
        return ["Step 1 says 3+4=8.\nFIRST_WRONG_STEP: 1", "FIRST_WRONG_STEP: NONE"][: len(prompts)]

    monkeypatch.setattr(judge, "_generate", scripted)
    first = judge.judge(REQUESTS[:2])
    assert [(v.kind, v.step, v.cached) for v in first] == [("first_wrong", 1, False), ("none_wrong", None, False)]
    again = judge.judge(REQUESTS[:2])
    assert [(v.kind, v.cached) for v in again] == [("first_wrong", True), ("none_wrong", True)]
    assert calls == [2]  # the second call paid nothing
