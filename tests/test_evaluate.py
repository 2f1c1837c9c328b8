"""evaluate: greedy accuracy, avg@k and unbiased pass@k from one round of samples, with a scripted engine."""

from dataclasses import dataclass

import pytest

from neggrad.trainer.evaluate import evaluate


@dataclass
class Example:
    prompt: str
    answer: str


@dataclass
class Out:
    texts: list[str]


class ScriptedEngine:
    """Greedy: answers "a" for every prompt. Sampling: the i-th of n completions of prompt p is p's script[i]."""

    def __init__(self, scripts: dict[str, list[str]]):
        self.scripts = scripts

    def generate(self, prompts, *, num_generations=1, greedy=False):
        if greedy:
            return Out(["a"] * len(prompts))
        return Out([self.scripts[p][i] for p in prompts for i in range(num_generations)])


class ExactTask:
    def score(self, completions, answers):
        return [c == a for c, a in zip(completions, answers, strict=True)]


def test_greedy_avg_and_pass_at_k():
    examples = [Example("p", "a"), Example("q", "b")]
    # p: 1 right of 4 samples; q: 0 right. Greedy says "a": right for p only.
    engine = ScriptedEngine({"p": ["a", "x", "x", "x"], "q": ["x"] * 4})
    result = evaluate(engine, ExactTask(), examples, avg_k=2, pass_k=[1, 2, 4], batch_size=4)
    assert result["eval/accuracy"] == 0.5
    assert result["eval/avg_at_k"] == pytest.approx(0.25)  # first 2 samples: p 1/2, q 0/2
    # p: pass@1 = 1/4, pass@2 = 1 - C(3,2)/C(4,2) = 1/2, pass@4 = 1; q: 0. Averaged over the two prompts:
    assert result["eval/pass_at_1"] == pytest.approx(0.125)
    assert result["eval/pass_at_2"] == pytest.approx(0.25)
    assert result["eval/pass_at_4"] == pytest.approx(0.5)
    # trapezoids over log k: (0.125 + 0.25) / 2 * log 2 + (0.25 + 0.5) / 2 * log 2, divided by log 4
    assert result["eval/pass_at_k_auc"] == pytest.approx((0.1875 + 0.375) / 2)


def test_no_sampling_by_default():
    result = evaluate(ScriptedEngine({}), ExactTask(), [Example("p", "a")])
    assert result == {"eval/accuracy": 1.0}
