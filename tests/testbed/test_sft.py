import json

import pytest
import torch
from transformers import Qwen2ForCausalLM

from neggrad.config import SFTConfig, TaskConfig
from neggrad.config import TestbedModelConfig as ModelShape
from neggrad.models.testbed.sft import cache_key, cache_root, greedy_completions, sft_batch, warm_start
from neggrad.models.testbed.tokenizer import build_tokenizer, load_tokenizer
from neggrad.tasks.testbed import solve

TINY = ModelShape(
    hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1
)
TASK = TaskConfig(min_operands=2, max_operands=2, digits=2, operators="+", eval_size=16)


def _sft(tmp_path, **overrides) -> SFTConfig:
    # target 1.0 is out of reach in 12 steps, so training runs to max_steps
    values = dict(target_accuracy=1.0, max_steps=12, batch_size=16, eval_every=6, eval_size=8, learning_rate=3e-3)
    return SFTConfig(cache_dir=str(tmp_path), **(values | overrides))


def _weights(path) -> dict[str, torch.Tensor]:
    return Qwen2ForCausalLM.from_pretrained(path).state_dict()


def test_batch_puts_loss_on_the_completion_only():
    tokenizer = build_tokenizer()
    batch = sft_batch(tokenizer, [solve([1, 2], ["+"]), solve([10, 20], ["+"])])
    # "Q: 1+2=" (7) + "1+2=3. A: 3" (11) + eos = 19 tokens; "Q: 10+20=" (9) + "10+20=30. A: 30" (15) + eos = 25
    assert batch["input_ids"].shape == (2, 25)
    assert batch["attention_mask"][0].tolist() == [1] * 19 + [0] * 6  # padded on the right
    labels = batch["labels"][0]
    assert (labels[:7] == -100).all() and (labels[19:] == -100).all()
    assert tokenizer.decode(labels[7:19]) == "1+2=3. A: 3<eos>"


def test_warm_start_trains_caches_and_reloads(tmp_path):
    log: list[dict] = []
    first = warm_start(TINY, TASK, _sft(tmp_path), seed=0, progress=log.append)
    assert not first.cached and first.steps == 12
    assert [d["step"] for d in log] == list(range(1, 13))
    assert sum(d["loss"] for d in log[-3:]) < sum(d["loss"] for d in log[:3])
    assert first.path.parent == tmp_path and first.path.name == "testbed-" + cache_key(
        TINY, TASK, _sft(tmp_path), seed=0
    )
    meta = json.loads((first.path / "meta.json").read_text())
    assert meta["steps"] == 12 and meta["accuracy"] == first.accuracy
    assert load_tokenizer(first.path).padding_side == "left"
    weights = _weights(first.path)

    log.clear()
    second = warm_start(TINY, TASK, _sft(tmp_path), seed=0, progress=log.append)
    assert second.cached and second.path == first.path and second.accuracy == first.accuracy and not log
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # no staging folder left behind

    # a fresh build elsewhere gives the same weights, bit for bit
    again = warm_start(TINY, TASK, _sft(tmp_path / "other"), seed=0)
    assert not again.cached
    rebuilt = _weights(again.path)
    assert all(torch.equal(weights[name], rebuilt[name]) for name in weights)


def test_partial_cache_folder_is_rebuilt(tmp_path):
    sft = _sft(tmp_path, max_steps=2, eval_every=2)
    folder = tmp_path / ("testbed-" + cache_key(TINY, TASK, sft, seed=0))
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"truncated")
    result = warm_start(TINY, TASK, sft, seed=0)
    assert not result.cached and result.path == folder
    assert json.loads((folder / "meta.json").read_text())["steps"] == 2
    Qwen2ForCausalLM.from_pretrained(folder)
    assert warm_start(TINY, TASK, sft, seed=0).cached


def test_cache_key_and_root(tmp_path, monkeypatch):
    sft = SFTConfig()
    assert cache_key(TINY, TASK, sft, seed=0) == cache_key(TINY, TASK, SFTConfig(cache_dir="/elsewhere"), seed=0)
    assert cache_key(TINY, TASK, sft, seed=0) != cache_key(TINY, TASK, sft, seed=1)
    assert len(cache_key(TINY, TASK, sft, seed=0)) == 16
    monkeypatch.setenv("NEGGRAD_CACHE", str(tmp_path))
    assert cache_root(sft) == tmp_path
    assert cache_root(SFTConfig(cache_dir="/x")).as_posix() == "/x"


def test_batched_greedy_matches_one_prompt_at_a_time(tmp_path):
    # left padding must not change what the model writes
    result = warm_start(TINY, TASK, _sft(tmp_path, max_steps=6), seed=0)
    model, tokenizer = Qwen2ForCausalLM.from_pretrained(result.path), load_tokenizer(result.path)
    prompts = ["Q: 1+2=", "Q: 37+45=", "Q: 5+60="]
    batched = greedy_completions(model, tokenizer, prompts, max_new_tokens=12)
    single = [greedy_completions(model, tokenizer, [p], max_new_tokens=12)[0] for p in prompts]
    assert batched == single


def test_right_padding_is_refused():
    tokenizer = build_tokenizer()
    tokenizer.padding_side = "right"
    with pytest.raises(ValueError, match="padding_side='left'"):
        greedy_completions(None, tokenizer, ["Q: 1+2="], max_new_tokens=4)


def test_sft_seed_shares_one_warm_start_across_run_seeds():
    from neggrad.config import build_config
    from neggrad.models.testbed.sft import cache_key

    def key(*overrides):
        cfg = build_config({}, list(overrides))
        seed = cfg.seed if cfg.sft.seed is None else cfg.sft.seed
        return cache_key(cfg.model.testbed, cfg.task, cfg.sft, seed=seed)

    assert key("seed=0") == key("seed=3", "sft.seed=0")  # a shared warm start for every RL seed
    assert key("seed=1") != key("seed=0")
    assert key("seed=1") == key("seed=1", "sft.seed=null")  # the key of caches made before sft.seed existed
