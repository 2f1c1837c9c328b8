"""The paper recipes in configs/recipes build, without loading any model, and keep each paper's numbers."""

from pathlib import Path

import pytest

from neggrad.config import load_config, read_yaml

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "recipes"

# Each paper's G, prompts per step, lr, KL beta, entropy (docs/algorithms.md §14); the method each file defaults to
TABLE = {
    "nthr_qwen2.5-math-1.5b.yaml": ("nthr", 8, 256, 1e-6, 1e-4, 0.0),
    "ngrpo_qwen2.5-math-7b.yaml": ("ngrpo", 8, 1024, 1e-6, 0.0, 0.001),
    "dapo_qwen2.5-math-7b.yaml": ("dapo", 16, 512, 1e-6, 0.0, 0.0),
    "psr_nsr_qwen2.5-math-7b.yaml": ("nsr", 8, 1024, 1e-6, 0.0, 0.001),
    "raft_pp_qwen2.5-math-7b.yaml": ("raft_pp", 4, 1024, 1e-6, 0.001, 0.001),
}


def test_every_recipe_is_in_the_table():
    assert sorted(p.name for p in RECIPES.glob("*.yaml")) == sorted(TABLE)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_recipe_builds_with_the_papers_numbers(name):
    path = RECIPES / name
    config = load_config(path)  # validation only: nothing is downloaded or loaded
    method, G, prompts, lr, beta, entropy = TABLE[name]
    assert config.method == method
    assert config.num_generations == G and config.num_prompts == prompts
    assert config.learning_rate == lr and config.beta == beta and config.entropy_coef == entropy
    assert config.model.name_or_path.startswith("Qwen/Qwen2.5-Math-")
    assert config.model.dtype == "bfloat16" and not config.model.trust_remote_code
    assert config.data.source and config.reward.kind == "math"
    assert config.rollout.backend == "vllm"
    # every optimizer step sees a whole number of groups, and the mini-batches split the generation batch evenly
    assert (config.per_device_train_batch_size * config.gradient_accumulation_steps) % G == 0


@pytest.mark.parametrize("name", sorted(TABLE))
def test_recipe_header_gives_the_command_and_the_hardware(name):
    text = (RECIPES / name).read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header and text.startswith("#"), "the header comes first"
    assert any("neggrad" in line and "--config configs/recipes/" + name in line for line in header)
    assert any("Hardware:" in line for line in header)
    assert "arXiv:" in header[0]
    assert read_yaml(RECIPES / name)  # plain YAML, no anchors to import paths


def test_nthr_recipe_is_the_papers_setting():
    config = load_config(RECIPES / "nthr_qwen2.5-math-1.5b.yaml")
    assert config.nthr.enabled and config.nthr.beta == 1.0 and config.nthr.eta == "2|0.5-p|"
    assert config.epsilon == config.epsilon_high == 0.2 and config.kl_estimator == "k3"
    assert config.data.filters == {"level": ["Level 3", "Level 4", "Level 5"]}
    baseline = load_config(RECIPES / "nthr_qwen2.5-math-1.5b.yaml", ["method=grpo"])
    assert not baseline.nthr.enabled and baseline.loss_type == config.loss_type == "dapo"


def test_ngrpo_recipe_clips_asymmetrically():
    config = load_config(RECIPES / "ngrpo_qwen2.5-math-7b.yaml")
    assert (config.epsilon, config.epsilon_high) == (0.16, 0.24)
    assert config.advantage_estimator == "ngrpo" and config.group_filter == "all_correct" and config.refill
