"""The rules between keys: what one setting requires of, or excludes in, another.

Each rule reads the whole validated config and raises ``ValueError`` with one line naming the keys (pydantic turns
it into a ``ConfigError`` with the key's location); a few fill a default that depends on other keys (``reward.kind:
auto``, ``sft.enabled``, the judge's step splitter), said in the rule. ``check`` runs them in order; ``Config``
calls it once its fields are valid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neggrad.config.schema import Config


def check(config: Config) -> None:
    """Every cross-key rule, in order."""
    data_and_reward(config)
    feedback_composition(config)
    combinations(config)


def data_and_reward(config: Config) -> None:
    """Prompt source, data keys and reward kind agree; ``reward.kind: auto`` resolved; the judge's step splitter."""
    data = config.data
    if data.source is None:
        set_keys = [k for k in ("eval_source", "subset", "eval_subset") if getattr(data, k) is not None]
        if set_keys or data.filters:
            raise ValueError(f"data.{(set_keys or ['filters'])[0]} needs data.source (the training prompts)")
    if "{problem}" not in data.prompt_template:
        raise ValueError(f'data.prompt_template must contain "{{problem}}", got {data.prompt_template!r}')
    if data.system_prompt is not None and not data.chat_template:
        raise ValueError(
            "data.system_prompt needs data.chat_template: true (plain prompts have no system turn); "
            "or put the text into data.prompt_template"
        )
    if data.source is not None and config.task.name != "arithmetic":
        raise ValueError(
            f"task.name {config.task.name!r} is a built-in prompt source and data.source names another: "
            "keep one of them"
        )
    if config.task.name == "word_problems" and config.model.name_or_path == "testbed" and data.source is None:
        raise ValueError(
            "task.name 'word_problems': word problems need a pretrained chat model (model.name_or_path: a hub "
            "id, a folder or pkg://...); the built-in testbed model reads only 'Q: 37+45-18=' prompts"
        )
    config.feedback.resolve_step_split(config.prompt_source)
    if config.feedback.enabled:
        config.feedback.check_oracle(config.prompt_source)
    if config.reward.kind == "auto":
        config.reward.kind = (
            "math" if data.source else {"word_problems": "integer"}.get(config.task.name, "arithmetic")
        )
    elif config.reward.kind == "arithmetic" and config.task.name == "word_problems":
        raise ValueError(
            "reward.kind 'arithmetic' reads the testbed's 'A: <integer>' answers; word problems end in "
            "\\boxed{n}: use reward.kind: integer (the default) or math"
        )
    elif config.reward.kind == "arithmetic" and data.source:
        raise ValueError(
            "reward.kind 'arithmetic' reads the testbed's 'A: <integer>' answers, not data.source's: "
            "use reward.kind: math (or your own function)"
        )


def feedback_composition(config: Config) -> None:
    """Judge feedback needs advantages built from the group's rewards, wrong answers kept."""
    # docs/algorithms.md §10.3: the partial rewards act through group statistics over wrong answers
    judged = config.feedback.enabled or config.zero_variance.all_wrong == "judge"  # the judge strategy turns it on
    if judged and (config.advantage_estimator not in ("grpo", "rloo", "ngrpo") or config.clamp_negative_advantages):
        key = "feedback.enabled" if config.feedback.enabled else "zero_variance.all_wrong=judge"
        off = "set feedback.enabled: false" if config.feedback.enabled else "choose another zero_variance.all_wrong"
        raise ValueError(
            f"{key} needs a method whose advantages use the group's rewards and keep wrong answers "
            f"(grpo, dr_grpo, dapo, rloo, ngrpo); method {config.method!r} (advantage_estimator "
            f"{config.advantage_estimator!r}, clamp_negative_advantages {config.clamp_negative_advantages}) "
            f"ignores group statistics or discards wrong answers: {off} or change the method"
        )


def combinations(config: Config) -> None:
    """Batch shape, clip widths, estimator options, the wrong-answer strategies, and the SFT default."""
    if config.generation_batch_size % config.num_generations:
        raise ValueError(
            f"per_device_train_batch_size * gradient_accumulation_steps * steps_per_generation = "
            f"{config.generation_batch_size} is not divisible by num_generations = {config.num_generations}: "
            "groups are never split; change one of them"
        )
    if config.epsilon_high is not None and config.epsilon_high < config.epsilon:
        raise ValueError(f"epsilon_high ({config.epsilon_high}) must be >= epsilon ({config.epsilon})")
    if config.advantage_estimator != "grpo" and (config.clamp_negative_advantages or config.scale_rewards != "group"):
        raise ValueError(
            f"clamp_negative_advantages and scale_rewards={config.scale_rewards!r} apply only to "
            f"advantage_estimator 'grpo', got {config.advantage_estimator!r}: remove them or use grpo"
        )
    if config.overlong_buffer_len >= config.max_completion_length:
        raise ValueError(
            f"overlong_buffer_len ({config.overlong_buffer_len}) must be < max_completion_length "
            f"({config.max_completion_length})"
        )
    if config.share_prompt_forward and config.model.gradient_checkpointing:
        raise ValueError(
            "share_prompt_forward runs the completions on the prompts' KV cache, which gradient checkpointing turns "
            "off: set one of share_prompt_forward and model.gradient_checkpointing to false"
        )
    if config.remove_padding is True and config.model.gradient_checkpointing:
        raise ValueError(
            "remove_padding runs its own forward, without gradient checkpointing: set one of remove_padding and "
            "model.gradient_checkpointing to false"
        )
    frontier(config)
    from neggrad import strategies  # noqa: PLC0415 (strategies import this module)

    strategies.check(config)  # the active strategies' requirements and declared conflicts
    testbed = config.model.name_or_path == "testbed"
    if config.sft.enabled is None:
        config.sft.enabled = testbed
    elif config.sft.enabled and not testbed:
        raise ValueError(
            f"sft.enabled is the testbed model's warm start; model.name_or_path {config.model.name_or_path!r} is "
            "pretrained: remove sft.enabled (or set it false)"
        )


def frontier(config: Config) -> None:
    """Combinations of the wrong-answer options (docs/algorithms.md §5.4): one strategy per group kind, exclusive
    options refused."""
    zv = config.zero_variance
    if config.policy_loss == "cispo":
        if config.epsilon_high is None or config.epsilon_high <= 1.0:
            raise ValueError(
                f"policy_loss cispo caps the importance weight at epsilon_high (TRL semantics, an absolute cap, "
                f"not a clip width): set epsilon_high > 1, e.g. 5.0 (got {config.epsilon_high})"
            )
        if config.importance_sampling_level != "token":
            raise ValueError("policy_loss cispo and importance_sampling_level sequence (GSPO) exclude each other")
    drops = {"zero_std": ("all_wrong", "all_correct"), "all_correct": ("all_correct",)}.get(config.group_filter, ())
    for kind, strategy in (("all_wrong", zv.all_wrong), ("all_correct", zv.all_correct)):
        if strategy not in ("preset", "keep", "drop") and kind in drops:
            raise ValueError(
                f"zero_variance.{kind}={strategy} conflicts with group_filter={config.group_filter}, which drops "
                f"{kind.replace('_', '-')} groups first: set group_filter none (or all_correct), or another "
                "strategy"
            )
    if zv.all_wrong == "judge":  # the judge strategy is the feedback section: it turns it on
        if not config.feedback.enabled and "enabled" in config.feedback.model_fields_set:
            raise ValueError(
                "zero_variance.all_wrong=judge gives all-wrong groups the judge's partial rewards, which "
                "feedback.enabled: false turns off: remove feedback.enabled (or set it true)"
            )
        config.feedback.enabled = True
        config.feedback.check_oracle(config.prompt_source)
    elif config.feedback.enabled and zv.all_wrong not in ("preset", "keep"):
        raise ValueError(
            f"feedback.enabled (the judge owns all-wrong groups) conflicts with zero_variance.all_wrong="
            f"{zv.all_wrong}: one strategy per group kind"
        )
