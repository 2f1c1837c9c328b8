"""Config: YAML + dotted overrides, preset expansion, and one clear error per user mistake."""

import pytest

from neggrad.config import Config, ConfigError, build_config, dump_config, load_config, parse_override


def test_defaults_are_the_grpo_preset():
    cfg = build_config()
    assert cfg.method == "grpo"
    assert (cfg.epsilon, cfg.epsilon_high, cfg.loss_type, cfg.beta) == (0.2, 0.2, "grpo", 0.0)
    # 64 completions per micro-batch x 2 accumulation x 1 step per generation = 128 = 16 prompts x 8
    assert (cfg.generation_batch_size, cfg.num_prompts) == (128, 16)


def test_overrides_are_parsed_as_yaml_at_their_dotted_place():
    cfg = build_config({"sft": {"max_steps": 7}}, ["learning_rate=1e-5", "sft.target_accuracy=0.5", "top_p=0.9"])
    assert cfg.learning_rate == 1e-5
    assert cfg.sft.target_accuracy == 0.5
    assert cfg.sft.max_steps == 7  # the file's sibling key survives the override
    assert cfg.top_p == 0.9
    assert parse_override("epsilon_high=null") == (["epsilon_high"], None)


def test_user_values_beat_the_preset():
    cfg = build_config({"method": "dapo", "epsilon_high": 0.3})
    assert cfg.epsilon_high == 0.3
    assert (cfg.reward_scheme, cfg.group_filter, cfg.refill, cfg.loss_type) == ("pm1", "zero_std", True, "dapo")
    # DAPO's soft overlong buffer is L // 5 of the configured max_completion_length (48 -> 9)
    assert cfg.overlong_buffer_len == 9


def test_resolved_config_round_trips(tmp_path):
    cfg = build_config({"method": "ngrpo"}, ["seed=3"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    again = load_config(path)
    assert again == cfg
    assert (again.epsilon, again.epsilon_high, again.advantage_estimator) == (0.16, 0.24, "ngrpo")


@pytest.mark.parametrize(
    ("raw", "overrides", "message"),
    [
        ({}, ["lerning_rate=1e-5"], r"unknown config key 'lerning_rate', did you mean 'learning_rate'"),
        ({}, ["sft.bogus=1"], r"unknown config key 'sft.bogus'"),
        ({}, ["learning_rate=-1"], r"^learning_rate: Input should be greater than 0 \(got -1\)"),
        ({}, ["learning_rate=fast"], r"^learning_rate: .*\(got 'fast'\)"),
        ({}, ["num_generations=1"], r"^num_generations: .*greater than or equal to 2"),
        ({}, ["num_generations=3"], r"= 128 is not divisible by num_generations = 3"),
        ({}, ["method=grpoo"], r"unknown method 'grpoo'; choose one of grpo, dr_grpo"),
        ({}, ["epsilon=0.3", "epsilon_high=0.2"], r"epsilon_high \(0.2\) must be >= epsilon \(0.3\)"),
        ({}, ["advantage_estimator=rloo", "scale_rewards=none"], r"apply only to advantage_estimator 'grpo'"),
        ({}, ["task.operators=+/"], r"task.operators must be distinct characters"),
        ({}, ["learning_rate"], r"is not key=value"),
        ({"task": 3}, [], r"^task: "),
        ({}, ["method=psr", "nthr.enabled=true"], r"nthr works on top of grpo, dr_grpo, dapo, rloo and ngrpo"),
        ({}, ["method=pos_only", "nthr.enabled=true"], r"clamp_negative_advantages=True"),
        ({}, ["method=nthr", "nthr.eta=1.5"], r"nthr.eta must be in \[0, 1\)"),
        ({}, ["method=nthr", "nthr.vocab=all"], r"^nthr.vocab: "),
    ],
)
def test_bad_input_gives_one_line_naming_the_key(raw, overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_config(raw, overrides)
    assert "\n" not in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: [1,\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listy)


def test_every_field_is_documented():
    def walk(model):
        for name, field in model.model_fields.items():
            if isinstance(field.annotation, type) and hasattr(field.annotation, "model_fields"):
                yield from walk(field.annotation)
            else:
                yield name, field.description

    missing = [name for name, doc in walk(Config) if not doc]
    assert not missing, f"fields without a docstring: {missing}"


def test_shipped_configs_build_for_every_method():
    from pathlib import Path

    from neggrad.config.presets import PRESETS

    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "configs").rglob("*.yaml")) + sorted((root / "src/neggrad/configs").rglob("*.yaml"))
    # studies list arms of configs (tests/test_compare.py); accelerate/ holds launcher configs
    files = [f for f in files if f.parent.name not in ("studies", "accelerate")]
    assert files
    for path in files:
        feedback = load_config(path).feedback.enabled
        for method in PRESETS:
            # judge feedback needs group statistics (docs/algorithms.md §10)
            if feedback and method not in ("grpo", "nthr", "dr_grpo", "dapo", "rloo", "ngrpo"):
                with pytest.raises(ConfigError, match="feedback.enabled needs"):
                    load_config(path, [f"method={method}"])
                continue
            cfg = load_config(path, [f"method={method}"])
            assert cfg.method == method, path


@pytest.mark.parametrize("base", ["grpo", "dr_grpo", "dapo", "rloo", "ngrpo"])
def test_nthr_composes_with_its_bases_and_keeps_their_keys(base):
    cfg = build_config({"method": base, "nthr": {"enabled": True, "beta": 0.0}})
    assert cfg.nthr.enabled and cfg.nthr.beta == 0.0
    assert cfg.loss_type == build_config({"method": base}).loss_type  # the base's preset values stay


def test_nthr_preset_fills_only_unset_section_keys():
    cfg = build_config({"method": "nthr", "nthr": {"vocab": "full"}})
    assert cfg.nthr.enabled and cfg.nthr.vocab == "full"
    assert build_config({"method": "nthr", "nthr": {"enabled": False}}).nthr.enabled is False


def test_settings_that_follow_another_key_say_so_instead_of_changing_silently():
    # sft.enabled: unset follows the model; an explicit warm start for a pretrained model is refused, naming the key
    assert build_config({}, []).sft.enabled
    pretrained = ["model.name_or_path=some/hub-model", "task.name=word_problems"]
    assert build_config({}, pretrained).sft.enabled is False
    with pytest.raises(ConfigError, match="remove sft.enabled"):
        build_config({}, [*pretrained, "sft.enabled=true"])
    # zero_variance.all_wrong=judge turns the judge on, and refuses an explicit feedback.enabled: false
    assert build_config({}, ["zero_variance.all_wrong=judge"]).feedback.enabled
    with pytest.raises(ConfigError, match="remove feedback.enabled"):
        build_config({}, ["zero_variance.all_wrong=judge", "feedback.enabled=false"])
    # the judge it turns on is checked like one turned on by hand
    with pytest.raises(ConfigError, match="needs feedback.step_split: testbed"):
        build_config({}, ["zero_variance.all_wrong=judge", "feedback.step_split=lines"])


def test_judge_strategy_is_refused_on_methods_without_group_statistics():
    """``zero_variance.all_wrong=judge`` turns the judge on, so it meets the same rule as ``feedback.enabled``
    (it was accepted before: that rule ran before the strategy turned feedback on)."""
    with pytest.raises(ConfigError, match="zero_variance.all_wrong=judge needs a method"):
        build_config({}, ["method=psr", "zero_variance.all_wrong=judge"])
    assert build_config({}, ["method=grpo", "zero_variance.all_wrong=judge"]).feedback.enabled
