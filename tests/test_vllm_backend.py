"""The vLLM backend without vLLM: its install error, its Rollout layout, weight export and sync, server replies.

vLLM needs CUDA and cannot be installed here, so the engine is replaced by fakes with the same small interface
(``generate(prompts, sampling=, seeds=)``, ``load_weights``, ``sleep``, ``wake_up``) that the real
``_Colocated`` and ``_Server`` engines implement.
"""

import copy
import os
import sys

import pytest
import torch

from neggrad.config import ConfigError, build_config
from neggrad.models.testbed.tokenizer import build_tokenizer
from neggrad.rollout import build_rollout
from neggrad.rollout.hf import HFRollout
from neggrad.rollout.vllm import VLLMRollout, hf_weights, parse_completions, rollout_from_token_ids
from tests.test_models import RUN, _save_tiny

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = ["Q: 1+2=", "Q: 7-3=", "Q: 9+9="]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    folder = _save_tiny(tmp_path_factory.mktemp("tiny"))
    return folder, AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), build_tokenizer()


class FakeEngine:
    """Stands in for vLLM: generates with its own copy of the policy, one unpadded prompt at a time."""

    def __init__(self, model, tokenizer):
        self.copy = copy.deepcopy(model).eval()
        self.tokenizer = tokenizer
        self.calls: list[str] = []

    def generate(self, prompts, *, sampling, seeds):
        self.calls.append("generate")
        out = []
        for i, ids in enumerate(prompts):
            if seeds is not None:
                torch.manual_seed(seeds[i])
            greedy = sampling["temperature"] == 0
            extra = {} if greedy else {"temperature": sampling["temperature"], "top_p": sampling["top_p"], "top_k": 0}
            gen = self.copy.generate(
                input_ids=torch.tensor([ids]),
                max_new_tokens=sampling["max_tokens"],
                do_sample=not greedy,
                eos_token_id=sampling["stop_token_ids"][0],
                pad_token_id=self.tokenizer.pad_token_id,
                **extra,
            )
            out.append(gen[0, len(ids) :].tolist())  # vLLM's token_ids: through the stop token, no padding
        return out

    def load_weights(self, model):
        self.calls.append("load")
        with hf_weights(model) as items:
            state = dict(items)
        self.copy.load_state_dict(state, strict=False)

    def sleep(self):
        self.calls.append("sleep")

    def wake_up(self, tags):
        self.calls.append(f"wake:{','.join(tags)}")


def test_without_vllm_the_backend_says_how_to_install_it(tiny, monkeypatch):
    folder, model, tokenizer = tiny
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed (it is not on CPU machines anyway)
    config = build_config({}, [f"model.name_or_path={folder}", *RUN, "rollout.backend=vllm"])
    with pytest.raises(ConfigError, match=r"pip install 'neggrad\[vllm\]'") as err:
        build_rollout(model, tokenizer, config)
    assert "\n" not in str(err.value)
    assert isinstance(build_rollout(model, tokenizer, build_config({}, RUN)), HFRollout)


def test_the_testbed_is_refused_by_the_vllm_backend(tiny):
    _, model, tokenizer = tiny
    with pytest.raises(ConfigError, match="needs a Hugging Face model"):
        build_rollout(model, tokenizer, build_config({}, ["rollout.backend=vllm"]))


def test_token_lists_become_the_rollout_hf_builds(tiny):
    _, model, tokenizer = tiny
    hf = HFRollout(model, tokenizer, max_completion_length=12).generate(PROMPTS, num_generations=2, greedy=True)
    # what vLLM hands back: each completion through its first EOS, unpadded
    lists = [row[: int(m.sum())].tolist() for row, m in zip(hf.completion_ids, hf.completion_mask, strict=True)]
    ours = rollout_from_token_ids(hf.prompt_ids, hf.prompt_mask, lists, tokenizer)
    for field in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "truncated"):
        assert torch.equal(getattr(ours, field), getattr(hf, field)), field
    assert ours.texts == hf.texts


def test_eos_padding_and_truncation_by_hand():
    tokenizer = build_tokenizer()  # pad 0, eos 1
    prompt_ids = torch.tensor([[0, 5], [6, 7]])  # (B=2, Tp=2), the first left padded
    prompt_mask = torch.tensor([[0, 1], [1, 1]])
    # row 0 stops at EOS after 2 tokens (and junk past it is cut); row 1 hits the limit without EOS
    out = rollout_from_token_ids(prompt_ids, prompt_mask, [[8, 9, 1, 4], [3, 4, 5, 6]], tokenizer)
    assert out.completion_ids.tolist() == [[8, 9, 1, 0], [3, 4, 5, 6]]
    assert out.completion_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert out.truncated.tolist() == [False, True]
    assert out.lengths.tolist() == [3, 4]


def test_engine_rollout_matches_hf_and_syncs_after_updates(tiny):
    _, model, tokenizer = tiny
    policy = copy.deepcopy(model)
    engine = FakeEngine(policy, tokenizer)
    vr = VLLMRollout(policy, tokenizer, engine, max_completion_length=12)
    hf = HFRollout(policy, tokenizer, max_completion_length=12)
    a, b = vr.generate(PROMPTS, greedy=True), hf.generate(PROMPTS, greedy=True)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.texts == b.texts
    with torch.no_grad():  # an "update"
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    vr.sync_weights(policy)
    assert all(torch.equal(x, y) for x, y in zip(engine.copy.parameters(), policy.parameters(), strict=True))
    assert engine.calls == ["load", "generate", "load"]


def test_sampling_seeds_come_from_the_torch_rng(tiny):
    _, model, tokenizer = tiny
    vr = VLLMRollout(model, tokenizer, FakeEngine(model, tokenizer), max_completion_length=8)
    torch.manual_seed(3)
    first = vr.generate(PROMPTS, num_generations=4)
    torch.manual_seed(3)
    again = vr.generate(PROMPTS, num_generations=4)
    assert torch.equal(first.completion_ids, again.completion_ids)
    assert first.completion_ids.shape[0] == 12


def test_sleeping_engine_loads_the_current_weights_when_it_wakes(tiny):
    _, model, tokenizer = tiny
    engine = FakeEngine(model, tokenizer)
    vr = VLLMRollout(model, tokenizer, engine, max_completion_length=4, sleep=True)
    vr.sync_weights(model)  # asleep: nothing to copy now
    vr.generate(PROMPTS[:1], greedy=True)
    assert engine.calls == ["load", "sleep", "wake:weights", "load", "wake:kv_cache", "generate", "sleep"]


def test_lora_weights_are_exported_merged_under_base_names(tiny):
    peft = pytest.importorskip("peft")
    _, model, _ = tiny
    base_names = [n for n, _ in model.named_parameters()]
    lora = peft.get_peft_model(
        copy.deepcopy(model), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_()
    ids = torch.tensor([[3, 4, 5]])
    before = lora(input_ids=ids).logits
    expected = copy.deepcopy(lora).merge_and_unload().state_dict()
    with hf_weights(lora) as items:
        exported = {name: tensor.clone() for name, tensor in items}  # views: unmerging rewrites them after
    assert list(exported) == base_names
    assert all(torch.allclose(exported[n], expected[n], atol=1e-6) for n in base_names)
    assert torch.allclose(lora(input_ids=ids).logits, before, atol=1e-6)  # adapters unmerged again


def test_server_replies_are_read_prompt_major():
    reply = {"choices": [{"index": 1, "token_ids": [5, 1]}, {"index": 0, "token_ids": [4, 4, 1]}]}
    assert parse_completions(reply, num_prompts=2, n=1) == [[4, 4, 1], [5, 1]]
    older = {"choices": [{"index": 0, "logprobs": {"tokens": ["token_id:7", "token_id:1"]}}]}
    assert parse_completions(older, num_prompts=1, n=1) == [[7, 1]]
    with pytest.raises(RuntimeError, match="returned 1 completions, expected 2"):
        parse_completions(older, num_prompts=2, n=1)


@pytest.fixture
def fake_engines(monkeypatch) -> list:
    """VLLMRollout.from_config builds a FakeEngine; the list collects the engines built."""
    engines = []

    def fake_from_config(cls, model, tokenizer, config):
        engines.append(FakeEngine(model, tokenizer))
        return cls(model, tokenizer, engines[-1], max_completion_length=config.max_completion_length)

    monkeypatch.setattr(VLLMRollout, "from_config", classmethod(fake_from_config))
    return engines


def test_trainer_syncs_the_engine_after_every_update(tiny, tmp_path, fake_engines):
    from neggrad.trainer.loop import Trainer

    folder, _, _ = tiny
    engines = fake_engines
    config = build_config({}, [f"model.name_or_path={folder}", *RUN, "rollout.backend=vllm", "max_steps=2"])
    trainer = Trainer(config, tmp_path)
    trainer.setup()
    summary = trainer.train()
    assert summary["steps"] == 2
    engine = engines[0]
    assert engine.calls.count("load") == 1 + 2  # at start, then after each update
    assert all(torch.equal(x, y) for x, y in zip(engine.copy.parameters(), trainer.model.parameters(), strict=True))


def test_eval_uses_the_configured_backend(tiny, tmp_path, fake_engines, capsys):
    from neggrad.cli import main

    folder, _, _ = tiny
    engines = fake_engines
    overrides = [f"model.name_or_path={folder}", *RUN, "rollout.backend=vllm"]
    (tmp_path / "c.yaml").write_text("method: grpo\n")
    args = ["eval", "--config", str(tmp_path / "c.yaml"), "--pass-k", "1,2"]
    assert main([*args, *overrides]) == 0  # overrides are positional, as in every other command
    assert len(engines) == 1 and "generate" in engines[0].calls  # sampled by the (fake) vLLM engine
    assert "eval/pass_at_2" in capsys.readouterr().out
