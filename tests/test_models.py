"""Loading Hugging Face models by path (dtype, checkpointing, LoRA) and training them end to end, offline.

The models are tiny Llama / Qwen2 networks built here and saved to a temporary folder, with the testbed's
character tokenizer; the ``parity`` verifier of test_methods_e2e (plugged in by import path) makes mixed groups.
"""

import os

import pytest
import torch
from safetensors.torch import load_file

from neggrad.config import ConfigError, build_config
from neggrad.models.load import AdapterDisabledReference, load_policy, reference_model
from neggrad.models.packed import checkpointing_on
from neggrad.models.testbed.tokenizer import build_tokenizer
from neggrad.trainer.loop import Trainer, train
from neggrad.trainer.metrics import read_metrics

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RUN = [
    "task.min_operands=2",
    "task.max_operands=2",
    "task.eval_size=8",
    "num_generations=4",
    "per_device_train_batch_size=8",
    "gradient_accumulation_steps=2",  # 16 completions = 4 prompts x 4
    "max_completion_length=12",
    "learning_rate=1e-2",
    "reward.kind=tests.test_methods_e2e:parity",
    "eval_steps=0",
    "lld.probe_size=0",
    "num_samples_logged=0",
]


def _save_tiny(folder, arch: str = "llama"):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer()
    shape = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**shape)) if arch == "llama" else Qwen2ForCausalLM(Qwen2Config(**shape))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return _save_tiny(tmp_path_factory.mktemp("tiny-llama"))


def cfg(folder, *extra):
    return build_config({}, [f"model.name_or_path={folder}", *RUN, *extra])


def _is_adapter(name: str) -> bool:
    return "lora_" in name


# ---------------------------------------------------------------------------------------------- loading


def test_a_local_folder_loads_with_its_own_tokenizer_and_settings(tmp_path):
    folder = _save_tiny(tmp_path / "qwen", arch="qwen2")
    model, tokenizer, info = load_policy(cfg(folder, "model.gradient_checkpointing=true"))
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.dtype == torch.float32
    assert checkpointing_on(model)
    # AutoTokenizer would swap in Qwen2's tokenizer and drop the space token; the saved one is kept
    assert tokenizer("Q: 1+2=")["input_ids"] == build_tokenizer()("Q: 1+2=")["input_ids"]
    assert tokenizer.padding_side == "left"
    assert info["parameters"] == info["trainable_parameters"] == sum(p.numel() for p in model.parameters())


def test_batches_live_on_the_cpu_and_micro_batches_move_to_the_model(llama_dir):
    # on a GPU machine the model is on CUDA: a batch stays on the CPU for bookkeeping (an H200 run failed
    # when generate's CUDA tensors met the update's CPU index tensors) and each forward moves its rows
    from neggrad.models.policy import completion_forward
    from neggrad.rollout import build_rollout

    config = cfg(llama_dir, "max_completion_length=5")
    model, tokenizer, _ = load_policy(config)
    rollout = build_rollout(model, tokenizer, config).generate(["Q: 1+2=", "Q: 3+4="], num_generations=2)
    assert {t.device.type for t in (rollout.prompt_ids, rollout.completion_ids, rollout.truncated)} == {"cpu"}
    logits, hidden = completion_forward(model, rollout.select(torch.tensor([0, 3])), return_hidden=True)
    assert logits.device == hidden.device == next(model.parameters()).device
    moved = rollout.to("cpu")
    assert torch.equal(moved.completion_ids, rollout.completion_ids) and moved.texts == rollout.texts


def test_dtype_and_options_reach_from_pretrained(llama_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    seen = {}
    original = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    model, _, _ = load_policy(cfg(llama_dir, "model.dtype=bfloat16", "model.attn_implementation=eager"))
    assert model.dtype == torch.bfloat16
    assert seen["dtype"] is torch.bfloat16 and seen["attn_implementation"] == "eager"
    assert "trust_remote_code" not in seen  # passed only when the config sets it
    load_policy(cfg(llama_dir, "model.trust_remote_code=true"))
    assert seen["trust_remote_code"] is True


def test_loading_errors_are_one_line_and_say_what_to_change(tmp_path, llama_dir, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist: check model.name_or_path"):
        load_policy(cfg(tmp_path / "no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no config.json"):
        load_policy(cfg(tmp_path / "empty"))
    monkeypatch.setattr("neggrad.models.load._dtype_works", lambda dtype, device: False)
    with pytest.raises(ConfigError, match=r"model.dtype bfloat16: this (CPU|CUDA) .* use model.dtype: float32"):
        load_policy(cfg(llama_dir, "model.dtype=bfloat16"))
    monkeypatch.setitem(__import__("sys").modules, "peft", None)  # as if peft were not installed
    with pytest.raises(ConfigError, match=r"pip install 'neggrad\[lora\]'") as err:
        load_policy(cfg(llama_dir, "model.lora.enabled=true"))
    assert "\n" not in str(err.value)


def test_hub_only_keys_are_refused_for_the_testbed():
    with pytest.raises(ConfigError, match="model.gguf_file applies to Hugging Face models"):
        build_config({}, ["model.gguf_file=x.gguf"])
    with pytest.raises(ConfigError, match="model.trust_remote_code applies"):
        build_config({}, ["model.trust_remote_code=true"])


# ---------------------------------------------------------------------------------------------- LoRA


def test_lora_reference_is_the_policy_without_adapters(llama_dir):
    config = cfg(llama_dir, "model.lora.enabled=true", "model.lora.r=4")
    model, _, info = load_policy(config)
    assert 0 < info["trainable_parameters"] < info["parameters"]
    assert all(_is_adapter(n) for n, p in model.named_parameters() if p.requires_grad)
    ref = reference_model(model, config)
    assert isinstance(ref, AdapterDisabledReference)
    assert next(ref.parameters()) is next(model.parameters())  # no second copy
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # fresh adapters are zero (B = 0); make them matter
    ids = torch.tensor([[3, 4, 5, 6]], device=next(model.parameters()).device)  # the GPU where there is one
    model.train()
    with torch.no_grad():
        with model.disable_adapter():
            base_logits = model(input_ids=ids).logits
        policy_logits = model(input_ids=ids).logits
    ref_logits = ref(input_ids=ids).logits
    assert torch.equal(ref_logits, base_logits) and not torch.allclose(ref_logits, policy_logits)
    assert model.training  # the reference pass restored the policy's mode


def test_lora_run_trains_only_adapters_with_a_kl_to_the_base(tmp_path, llama_dir):
    config = cfg(llama_dir, "model.lora.enabled=true", "model.lora.r=4", "beta=0.1", "max_steps=2", "save_steps=0")
    trainer = Trainer(config, tmp_path)
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    summary = trainer.train()
    assert summary["status"] == "completed" and summary["steps"] == 2
    after = trainer.model.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved and all(_is_adapter(k) for k in moved), moved
    lines = read_metrics(tmp_path / "metrics.jsonl")
    # step 1: adapters start at B = 0, so policy == reference and the KL is exactly 0; step 2: they differ
    assert lines[0]["kl/ref"] == 0.0 and lines[1]["kl/ref"] > 0.0
    saved = sorted(p.name for p in (tmp_path / "checkpoints" / "step-2" / "model").iterdir())
    assert "adapter_model.safetensors" in saved and "model.safetensors" not in saved  # adapters only


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_resume_with_a_kl_reference_matches_an_uninterrupted_run(tmp_path, llama_dir, lora):
    # the reference must be the starting policy after a resume too: LoRA's base, or the reloaded start weights
    adapters = ["model.lora.enabled=true", "model.lora.r=4"] if lora else []
    config = cfg(llama_dir, *adapters, "beta=0.1", "max_steps=4", "save_steps=2")
    full = train(config, tmp_path / "full")

    class Crash(Exception):
        pass

    def crash_after_2(event, data):
        if event == "step" and data["step"] == 3:
            raise Crash

    with pytest.raises(Crash):
        train(config, tmp_path / "part", callback=crash_after_2)
    resumed = train(config, tmp_path / "part", resume=True)  # base rebuilt from the folder, adapters loaded
    assert resumed["steps"] == full["steps"] == 4

    def weights(run):
        name = "adapter_model.safetensors" if lora else "model.safetensors"
        return load_file(tmp_path / run / "checkpoints" / "step-4" / "model" / name)

    a, b = weights("full"), weights("part")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def untimed(run):
        lines = read_metrics(tmp_path / run / "metrics.jsonl")
        return [
            {k: v for k, v in line.items() if not k.startswith("time/") and k != "budget/seconds"} for line in lines
        ]

    assert untimed("full") == untimed("part")
    assert full["accuracy_after"] == resumed["accuracy_after"]
