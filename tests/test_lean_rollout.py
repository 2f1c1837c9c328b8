"""rollout.backend hf_lean: the plain decode loop with a static KV cache samples what HF generate samples."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from neggrad.config import build_config
from neggrad.rollout import build_rollout
from neggrad.rollout.hf import HFRollout
from neggrad.rollout.lean import LeanHFRollout, filter_scores
from tests.tiny_chat import build_tiny_chat_model

PROMPTS = ["Tom has 3 apples", "What is 12 + 7?", "A", "Sara buys 4 pens and gives away 2 of them"]  # left padded


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return eos_biased_tiny_model(tmp_path_factory.mktemp("tiny-chat"))


def eos_biased_tiny_model(folder):
    """The tiny SmolLM2-shaped chat model, its head given a bias towards EOS so that rows end at different steps."""
    folder = build_tiny_chat_model(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[tokenizer.eos_token_id] = 3.0
    model.lm_head = head
    return model, tokenizer


SETTINGS = [
    {"temperature": 1.0, "top_p": 1.0, "top_k": 0},
    {"temperature": 0.7, "top_p": 0.9, "top_k": 0},
    {"temperature": 1.3, "top_p": 1.0, "top_k": 20},
    {"temperature": 1.0, "top_p": 0.8, "top_k": 50},
]


def _both(model, tokenizer, **settings):
    kwargs = dict(max_completion_length=24, **settings)
    return HFRollout(model, tokenizer, **kwargs), LeanHFRollout(model, tokenizer, **kwargs)


def _same(a, b):
    for name in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "truncated"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.texts == b.texts


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
def test_the_same_seed_samples_the_same_tokens_as_generate(tiny, settings):
    model, tokenizer = tiny
    hf, lean = _both(model, tokenizer, **settings)
    model.train()  # each engine samples in eval mode and gives the model back as it found it
    torch.manual_seed(7)
    expected = hf.generate(PROMPTS, num_generations=4)
    torch.manual_seed(7)
    got = lean.generate(PROMPTS, num_generations=4)
    assert model.training
    _same(expected, got)
    assert expected.prompt_mask.eq(0).any()  # left padding was exercised
    assert (~expected.truncated).any() and len(set(expected.lengths.tolist())) > 1  # rows ended at different steps
    # and the generator is where generate left it: the next draws agree too
    torch.manual_seed(8)
    hf.generate(PROMPTS[:2], num_generations=2)
    after_hf = torch.rand(3)
    torch.manual_seed(8)
    lean.generate(PROMPTS[:2], num_generations=2)
    assert torch.equal(torch.rand(3), after_hf)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_greedy_and_hinted_generation_match_generate(tiny, attention):
    model, tokenizer = tiny
    model.set_attn_implementation(attention)  # the decode mask is bool for SDPA, additive for eager
    try:
        hf, lean = _both(model, tokenizer, temperature=0.9, top_p=0.95)
        _same(hf.generate(PROMPTS, greedy=True), lean.generate(PROMPTS, greedy=True))
        sampled = []
        for engine in (hf, lean):
            torch.manual_seed(3)
            sampled.append(engine.generate(PROMPTS, num_generations=2))
        _same(*sampled)
        torch.manual_seed(3)
        expected = hf.generate_with_prefix("What is 12 + 7?", "12 + 7 =", num_generations=4)
        torch.manual_seed(3)
        got = lean.generate_with_prefix("What is 12 + 7?", "12 + 7 =", num_generations=4)
        _same(expected, got)
        assert torch.equal(expected.offpolicy, got.offpolicy)
    finally:
        model.set_attn_implementation("sdpa")


@pytest.mark.parametrize("settings", SETTINGS[1:], ids=["t0.7-p0.9", "t1.3-k20", "p0.8-k50"])
def test_every_token_is_drawn_from_the_models_own_distribution(tiny, settings):
    """The scores each decode step samples from equal those of one full forward over the finished sequences (no
    cache), filtered the same way: the per-token distribution does not depend on the cache or the loop."""
    model, tokenizer = tiny
    lean = LeanHFRollout(model, tokenizer, max_completion_length=20, **settings)
    enc = tokenizer([p for p in PROMPTS for _ in range(3)], return_tensors="pt", padding=True)
    model.eval()
    torch.manual_seed(11)
    with torch.no_grad():
        out, scores = lean.decode(enc["input_ids"], enc["attention_mask"], 20, keep_scores=True)
    prompt_len, steps = enc["input_ids"].shape[1], out.shape[1] - enc["input_ids"].shape[1]
    assert steps == len(scores) and steps > 1
    generated = out[:, prompt_len:]
    ended = (generated == tokenizer.eos_token_id).int().cumsum(1)  # > 0 from a row's EOS on
    alive_before = torch.cat([torch.ones_like(ended[:, :1]), (ended[:, :-1] == 0).int()], dim=1)  # (B, steps)
    mask = torch.cat([enc["attention_mask"], alive_before], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=out, attention_mask=mask, position_ids=positions).logits.float()
    for t in range(steps):
        rows = alive_before[:, t].bool()
        expected = filter_scores(logits[rows, prompt_len - 1 + t], **settings)
        got = scores[t][rows]
        assert torch.equal(torch.isinf(expected), torch.isinf(got)), t  # the same tokens kept
        kept = ~torch.isinf(expected)
        torch.testing.assert_close(got[kept], expected[kept], rtol=1e-5, atol=1e-5)
        assert torch.equal(torch.isinf(expected.gather(1, generated[rows, t, None])), torch.zeros_like(kept[:, :1]))


def test_filtering_follows_transformers_rules_on_ties():
    torch.manual_seed(0)
    scores = torch.randn(6, 50).round(decimals=1)  # many ties
    for temperature, top_k, top_p in [(0.7, 0, 1.0), (1.0, 5, 1.0), (1.0, 0, 0.6), (1.4, 10, 0.9), (1.0, 1, 0.01)]:
        expected = scores.clone()
        if temperature != 1.0:
            expected = TemperatureLogitsWarper(temperature)(None, expected)
        if top_k:
            expected = TopKLogitsWarper(top_k)(None, expected)
        if top_p < 1.0:
            expected = TopPLogitsWarper(top_p)(None, expected)
        assert torch.equal(filter_scores(scores, temperature=temperature, top_k=top_k, top_p=top_p), expected)


def test_the_config_selects_the_lean_engine_and_refuses_what_it_cannot_sample(tiny):
    model, tokenizer = tiny
    engine = build_rollout(model, tokenizer, build_config({}, ["rollout.backend=hf_lean", "top_p=0.9"]))
    assert isinstance(engine, LeanHFRollout) and engine.top_p == 0.9
    assert type(build_rollout(model, tokenizer, build_config({}, []))) is HFRollout  # generate stays the default
    build_config({}, ["rollout.backend=hf_lean", "zero_variance.all_wrong=hint", "feedback.step_split=testbed"])
    model.generation_config.repetition_penalty = 1.2
    try:
        with pytest.raises(ValueError, match="repetition_penalty: use rollout.backend hf"):
            LeanHFRollout(model, tokenizer, max_completion_length=8)
    finally:
        model.generation_config.repetition_penalty = 1.0


def test_a_testbed_run_trains_the_same_with_the_lean_loop(tmp_path):
    """End to end on the testbed's Qwen2 model: the same samples, metrics and weights as with generate."""
    from neggrad.trainer.loop import train
    from neggrad.trainer.metrics import read_metrics
    from tests.test_train import _untimed, _weights, tiny

    for backend in ("hf", "hf_lean"):
        train(tiny("max_steps=2", "save_steps=2", "eval_steps=1", f"rollout.backend={backend}"), tmp_path / backend)
    metrics = [_untimed(read_metrics(tmp_path / b / "metrics.jsonl")) for b in ("hf", "hf_lean")]
    assert metrics[0] == metrics[1] and len(metrics[0]) == 2
    a, b = _weights(tmp_path / "hf", 2), _weights(tmp_path / "hf_lean", 2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    samples = [sorted((tmp_path / b / "samples").iterdir()) for b in ("hf", "hf_lean")]
    assert samples[0] and [p.read_text() for p in samples[0]] == [p.read_text() for p in samples[1]]
