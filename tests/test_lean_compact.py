"""rollout.compact: the lean loop with a shared prompt prefill and row compaction. Not generate's tokens for a seed,
but reproducible, drawn from the model's own distribution, the same output format, and generate's greedy tokens."""

import pytest
import torch
from transformers import StaticCache

from neggrad.config import ConfigError, build_config
from neggrad.rollout import build_rollout
from neggrad.rollout.base import distinct_rows
from neggrad.rollout.hf import HFRollout, completion_mask_from_ids
from neggrad.rollout.lean import LeanHFRollout, filter_scores
from neggrad.rollout.slim import slim_decode_step, supports
from tests.test_lean_rollout import PROMPTS, SETTINGS, eos_biased_tiny_model

G = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return eos_biased_tiny_model(tmp_path_factory.mktemp("tiny-chat"))


def _engines(model, tokenizer, **settings):
    kwargs = dict(max_completion_length=24, **settings)
    return HFRollout(model, tokenizer, **kwargs), LeanHFRollout(model, tokenizer, compact=True, **kwargs)


def _alive_before(generated: torch.Tensor, eos: int) -> torch.Tensor:
    """(B, n) bool: the row had not sampled EOS before step t (so step t sampled it)."""
    ended = (generated == eos).int().cumsum(1)
    return torch.cat([torch.ones_like(ended[:, :1]), ended[:, :-1] == 0], dim=1).bool()


@pytest.fixture
def attention(tiny, request):
    model, _ = tiny
    model.set_attn_implementation(request.param)  # the decode mask is bool for SDPA, additive for eager
    yield request.param
    model.set_attn_implementation("sdpa")


def _expected_forward_rows(live_after: list[int], batch: int, compact_at: float) -> list[int]:
    """The batch of each decode forward under the rule: drop the ended rows once they are ``compact_at`` of it."""
    rows, expected = batch, []
    for live in live_after:
        if rows - live and rows - live >= compact_at * rows:
            rows = live
        expected.append(rows)
    return expected


@pytest.mark.parametrize("compact_at", [0.0, 1 / 8, 1 / 3])
@pytest.mark.parametrize("attention", ["sdpa", "eager"], indirect=True)
def test_one_prefill_per_prompt_and_only_live_rows_decoded(tiny, attention, compact_at):
    model, tokenizer = tiny
    _, compact = _engines(model, tokenizer, temperature=1.0)
    compact.compact_at = compact_at
    torch.manual_seed(5)
    got = compact.generate(PROMPTS, num_generations=G)
    assert got.prompt_mask.eq(0).any()  # left padding was exercised
    assert compact.forward_rows[0] == len(PROMPTS)  # the prefill ran each distinct prompt once, not P * G rows
    alive = _alive_before(got.completion_ids, tokenizer.eos_token_id)  # (B, n)
    n = got.completion_ids.shape[1]
    live_after = [int((alive[:, t] & (got.completion_ids[:, t] != tokenizer.eos_token_id)).sum()) for t in range(n)]
    assert len(compact.forward_rows) == n  # one prefill, then a forward after every step but the last
    # the decode forward after step t ran the rows live after it, plus ended rows not yet dropped
    assert compact.forward_rows[1:] == _expected_forward_rows(live_after[:-1], len(PROMPTS) * G, compact_at)
    if compact_at == 0:
        assert compact.forward_rows[1:] == live_after[:-1]
    assert len(set(got.lengths.tolist())) > 1 and compact.forward_rows[-1] < len(PROMPTS) * G  # rows were dropped


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
def test_the_same_seed_gives_the_same_rollout_in_generates_format(tiny, settings):
    model, tokenizer = tiny
    hf, compact = _engines(model, tokenizer, **settings)
    model.train()
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(compact.generate(PROMPTS, num_generations=G))
    assert model.training  # sampled in eval mode, the model given back as found
    a, b = runs
    for name in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "truncated"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.texts == b.texts
    reference = hf.generate(PROMPTS, num_generations=G)  # the same prompts, tokenized and padded the same way
    assert torch.equal(a.prompt_ids, reference.prompt_ids) and torch.equal(a.prompt_mask, reference.prompt_mask)
    mask, truncated = completion_mask_from_ids(a.completion_ids, tokenizer.eos_token_id)
    assert torch.equal(a.completion_mask, mask) and torch.equal(a.truncated, truncated)
    assert torch.equal(
        a.completion_ids[mask == 0], torch.full_like(a.completion_ids[mask == 0], tokenizer.pad_token_id)
    )
    assert a.texts == tokenizer.batch_decode(a.completion_ids, skip_special_tokens=True)
    assert a.completion_ids.shape[1] <= 24 and (~a.truncated).any()


@pytest.mark.parametrize("attention", ["sdpa", "eager"], indirect=True)
def test_greedy_is_generates_greedy_and_hints_still_work(tiny, attention):
    model, tokenizer = tiny
    hf, compact = _engines(model, tokenizer, temperature=0.9, top_p=0.95)
    expected, got = hf.generate(PROMPTS, greedy=True), compact.generate(PROMPTS, greedy=True)
    for name in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "truncated"):
        assert torch.equal(getattr(expected, name), getattr(got, name)), name
    assert compact.forward_rows[0] == len(PROMPTS)  # greedy: one row per prompt, all distinct
    torch.manual_seed(3)
    hinted = compact.generate_with_prefix("What is 12 + 7?", "12 + 7 =", num_generations=G)
    assert compact.forward_rows[0] == 1  # G identical rows: one prefill row
    reference = hf.generate_with_prefix("What is 12 + 7?", "12 + 7 =", num_generations=G)
    assert torch.equal(hinted.prompt_ids, reference.prompt_ids)
    prefix = tokenizer("12 + 7 =", add_special_tokens=False)["input_ids"]
    assert hinted.completion_ids[:, : len(prefix)].tolist() == [prefix] * G
    assert hinted.offpolicy[:, : len(prefix)].all() and not hinted.offpolicy[:, len(prefix) :].any()


@pytest.mark.parametrize("settings", SETTINGS[1:], ids=["t0.7-p0.9", "t1.3-k20", "p0.8-k50"])
def test_every_token_is_drawn_from_the_models_own_distribution(tiny, settings):
    """As for the default loop (tests/test_lean_rollout.py): the scores each step of the compacted loop drew from
    equal a full forward's over the finished sequences, on every live row; rows already ended have none (NaN)."""
    model, tokenizer = tiny
    compact = LeanHFRollout(model, tokenizer, max_completion_length=20, compact=True, **settings)
    enc = tokenizer([p for p in PROMPTS for _ in range(3)], return_tensors="pt", padding=True)
    model.eval()
    torch.manual_seed(11)
    with torch.no_grad():
        out, scores = compact.decode_compact(enc["input_ids"], enc["attention_mask"], 20, keep_scores=True)
    prompt_len = enc["input_ids"].shape[1]
    generated = out[:, prompt_len:]
    alive = _alive_before(generated, tokenizer.eos_token_id)
    assert len(scores) == generated.shape[1] > 1 and not alive[:, -1].all()  # some rows ended before the last step
    assert compact.forward_rows[0] == len(PROMPTS)
    mask = torch.cat([enc["attention_mask"], alive.long()], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=out, attention_mask=mask, position_ids=positions).logits.float()
    for t, got in enumerate(scores):
        rows = alive[:, t]
        assert torch.isnan(got[~rows]).all() and not torch.isnan(got[rows]).any(), t
        expected = filter_scores(logits[rows, prompt_len - 1 + t], **settings)
        assert torch.equal(torch.isinf(expected), torch.isinf(got[rows])), t  # the same tokens kept
        kept = ~torch.isinf(expected)
        torch.testing.assert_close(got[rows][kept], expected[kept], rtol=1e-5, atol=1e-5)
        assert not torch.isinf(expected.gather(1, generated[rows, t, None])).any()  # each draw was allowed


def test_a_group_that_ends_early_leaves_the_batch(tiny):
    """Rows of one prompt that all sample EOS at once leave the batch together; the other groups go on decoding,
    and the ended group's rows come back as EOS then padding."""
    model, tokenizer = tiny
    _, compact = _engines(model, tokenizer, temperature=1.0)
    compact.compact_at = 0.0  # drop rows as soon as they end
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    for seed in range(40):
        torch.manual_seed(seed)
        got = compact.generate(PROMPTS, num_generations=G)
        ends = got.lengths.view(len(PROMPTS), G).max(dim=1).values  # when each group's last row ended
        if ends.min() < ends.max() - 1:
            break
    else:
        pytest.fail("no seed gave a group that ended before the others")
    group = int(ends.argmin())
    rows = got.completion_ids[group * G : (group + 1) * G]
    end = int(ends[group])
    assert (rows[:, end:] == pad).all() and not got.truncated[group * G : (group + 1) * G].any()
    assert (rows == eos).sum() == G
    # after the group's last step, the forwards held no row of it: fewer rows than the other groups' live ones + G
    alive = _alive_before(got.completion_ids, eos)
    others = torch.ones(len(PROMPTS) * G, dtype=torch.bool)
    others[group * G : (group + 1) * G] = False
    assert not alive[~others, end].any() and alive[others, end].any()  # end < the width: others went on
    assert compact.forward_rows[end] == int(
        alive[others, end].sum()
    )  # the forward after step end - 1 ran only the other groups' live rows


def test_distinct_rows_numbers_prompts_by_first_appearance():
    ids = torch.tensor([[0, 5, 6], [1, 2, 3], [0, 5, 6], [1, 2, 3], [0, 0, 6], [0, 0, 6]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1], [0, 1, 1], [1, 1, 1], [0, 0, 1], [0, 0, 1]])
    first, inverse = distinct_rows(ids, mask)
    assert first.tolist() == [0, 1, 4] and inverse.tolist() == [0, 1, 0, 1, 2, 2]
    same_ids = torch.tensor([[0, 5], [0, 5]])
    first, inverse = distinct_rows(same_ids, torch.tensor([[1, 1], [0, 1]]))  # a pad id that is also a token
    assert first.tolist() == [0, 1] and inverse.tolist() == [0, 1]


def test_the_config_turns_compact_on_for_the_lean_loop_only(tiny):
    model, tokenizer = tiny
    engine = build_rollout(model, tokenizer, build_config({}, ["rollout.backend=hf_lean", "rollout.compact=true"]))
    assert isinstance(engine, LeanHFRollout) and engine.compact
    assert not build_rollout(model, tokenizer, build_config({}, ["rollout.backend=hf_lean"])).compact
    for backend in ("hf", "vllm"):
        with pytest.raises(ConfigError, match="rollout.compact .* needs rollout.backend hf_lean, got " + backend):
            build_config({}, [f"rollout.backend={backend}", "rollout.compact=true"])


def _testbed_model():
    from neggrad.config import TestbedModelConfig
    from neggrad.models.testbed.model import build_model
    from neggrad.models.testbed.tokenizer import build_tokenizer

    return build_model(TestbedModelConfig(num_hidden_layers=2), build_tokenizer(), seed=0).eval()


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_the_slim_step_computes_the_models_forward(tiny, arch, attention):
    """Three decode steps over left-padded rows from the same prefilled cache: the slim step's logits and the keys
    and values it writes equal those of the model's own forward (Qwen2: the testbed, with q/k/v biases)."""
    model = tiny[0] if arch == "llama" else _testbed_model()
    model.eval().set_attn_implementation(attention)
    try:
        assert supports(model) and type(model).__name__.lower().startswith(arch)
        torch.manual_seed(0)
        batch, prompt_len, total = 5, 6, 9
        ids = torch.randint(3, 20, (batch, prompt_len))
        mask = torch.ones(batch, prompt_len, dtype=torch.long)
        mask[:2, :3] = 0
        valid = torch.ones(batch, total, dtype=torch.bool)
        valid[:, :prompt_len] = mask.bool()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        caches = [StaticCache(config=model.config, max_cache_len=total) for _ in range(2)]
        with torch.no_grad():
            for cache in caches:
                model(input_ids=ids, attention_mask=valid.long(), position_ids=positions, cache=cache)
            step = slim_decode_step(model)
            for t in range(total - prompt_len):
                token, position = torch.randint(3, 20, (batch,)), positions[:, -1:] + 1 + t
                allowed = valid & (torch.arange(total) <= prompt_len + t)
                expected = model(
                    input_ids=token[:, None],
                    attention_mask=LeanHFRollout._attention_mask(model, allowed),
                    position_ids=position,
                    cache=caches[0],
                ).logits[:, -1]
                got = step(token, position, allowed, prompt_len + t, caches[1])
                torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        for a, b in zip(caches[0].layers, caches[1].layers, strict=True):
            torch.testing.assert_close(a.keys, b.keys, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(a.values, b.values, rtol=1e-5, atol=1e-6)
    finally:
        model.set_attn_implementation("sdpa")


def test_the_slim_step_runs_only_where_it_was_checked(tiny):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    model, tokenizer = tiny
    small = dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    assert supports(LlamaForCausalLM(LlamaConfig(**small)))
    scaled = LlamaConfig(**small, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
    assert not supports(LlamaForCausalLM(scaled))
    assert not supports(LlamaForCausalLM(LlamaConfig(**small, hidden_act="gelu")))
    assert not supports(LlamaForCausalLM(LlamaConfig(**small)).to(torch.bfloat16))
    assert slim_decode_step(GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50))) is None
    # the compact loop calls the model's own forward for the prefill only when the slim step runs, every step if not
    engine = LeanHFRollout(model, tokenizer, max_completion_length=12, compact=True)
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        for slim in (True, False):
            engine.slim, calls[:] = slim, []
            torch.manual_seed(1)
            engine.generate(PROMPTS, num_generations=2)
            assert len(calls) == (1 if slim else len(engine.forward_rows)) and len(engine.forward_rows) > 1
    finally:
        hook.remove()


def test_a_testbed_run_with_compact_rollouts_is_reproducible(tmp_path):
    """End to end on the testbed's Qwen2 model (slim step included): two runs with the same seed sample the same
    completions and train to the same weights."""
    from neggrad.trainer.loop import train
    from neggrad.trainer.metrics import read_metrics
    from tests.test_train import _untimed, _weights, tiny

    overrides = ["max_steps=2", "save_steps=2", "eval_steps=1", "rollout.backend=hf_lean", "rollout.compact=true"]
    for run in ("a", "b"):
        train(tiny(*overrides), tmp_path / run)
    metrics = [_untimed(read_metrics(tmp_path / run / "metrics.jsonl")) for run in ("a", "b")]
    assert metrics[0] == metrics[1] and len(metrics[0]) == 2
    a, b = _weights(tmp_path / "a", 2), _weights(tmp_path / "b", 2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    samples = [sorted((tmp_path / run / "samples").iterdir()) for run in ("a", "b")]
    assert samples[0] and [p.read_text() for p in samples[0]] == [p.read_text() for p in samples[1]]
