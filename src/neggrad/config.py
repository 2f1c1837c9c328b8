"""One validated config tree: YAML in, dotted command-line overrides, clear errors out.

Keys follow TRL's ``GRPOConfig`` where the concept exists there (``num_generations``, ``beta``,
``epsilon``, ``epsilon_high``, ``loss_type``, ``scale_rewards``, ``num_iterations``,
``per_device_train_batch_size``, ``gradient_accumulation_steps``, ``steps_per_generation``,
``max_completion_length``, ``temperature``, ``top_p``, ``learning_rate``, ``seed``).
Each field's docstring is its help text (``use_attribute_docstrings``).
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A config that cannot run: the message names the key and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class TestbedModelConfig(_Section):
    """Shape of the tiny Qwen2-architecture model built locally for the testbed."""

    __test__ = False  # not a pytest test class, despite the name

    hidden_size: int = Field(128, ge=8)
    """Width of the residual stream (H)."""
    intermediate_size: int = Field(512, ge=8)
    """Width of the MLP."""
    num_hidden_layers: int = Field(4, ge=1)
    """Transformer blocks."""
    num_attention_heads: int = Field(4, ge=1)
    """Query heads; hidden_size must be divisible by it."""
    num_key_value_heads: int = Field(2, ge=1)
    """Key/value heads (grouped-query attention); must divide num_attention_heads."""
    max_position_embeddings: int = Field(256, ge=16)
    """Longest prompt + completion the model can see."""

    @model_validator(mode="after")
    def _heads(self) -> TestbedModelConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"model.testbed.hidden_size ({self.hidden_size}) must be divisible by "
                f"model.testbed.num_attention_heads ({self.num_attention_heads})"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"model.testbed.num_attention_heads ({self.num_attention_heads}) must be divisible by "
                f"model.testbed.num_key_value_heads ({self.num_key_value_heads})"
            )
        return self


class ModelConfig(_Section):
    """Which policy to train."""

    name_or_path: str = "testbed"
    """"testbed" builds the tiny local model (and its SFT warm start); otherwise a Hugging Face hub id or a
    local folder with a causal LM and its tokenizer."""
    testbed: TestbedModelConfig = Field(default_factory=TestbedModelConfig)
    """Shape of the testbed model (used only when name_or_path is "testbed")."""


class TaskConfig(_Section):
    """The synthetic multi-step arithmetic task: ``Q: 37+45-18=`` answered ``37+45=82, 82-18=64. A: 64``.

    Operations are applied left to right, one step each, so every answer is a chain of checkable steps.
    """

    name: Literal["arithmetic"] = "arithmetic"
    """The prompt source; "arithmetic" is the built-in testbed task."""
    min_operands: int = Field(3, ge=2, le=8)
    """Fewest numbers in a problem (steps = operands - 1)."""
    max_operands: int = Field(4, ge=2, le=8)
    """Most numbers in a problem."""
    digits: int = Field(1, ge=1, le=6)
    """Most digits per operand."""
    operators: str = "+-"
    """Operators drawn from, any of "+-*"."""
    eval_size: int = Field(200, ge=1)
    """Held-out prompts for greedy evaluation (disjoint from training prompts)."""
    seed: int = 0
    """Seed of the problem stream; training and evaluation prompts come from separate streams."""

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        if self.min_operands > self.max_operands:
            raise ValueError(
                f"task.min_operands ({self.min_operands}) must be <= task.max_operands ({self.max_operands})"
            )
        if not self.operators or set(self.operators) - set("+-*") or len(set(self.operators)) != len(self.operators):
            raise ValueError(f'task.operators must be distinct characters from "+-*", got {self.operators!r}')
        return self


class SFTConfig(_Section):
    """Supervised warm start of the testbed model, stopped at a middling accuracy and cached on disk."""

    enabled: bool = True
    """Run (or load from cache) the warm start before RL. Only for the testbed model."""
    target_accuracy: float = Field(0.4, gt=0, le=1)
    """Stop as soon as greedy accuracy on the SFT check set reaches this; RL then starts from a policy
    whose groups mostly mix right and wrong answers."""
    max_steps: int = Field(3000, ge=1)
    """Upper bound on SFT steps."""
    batch_size: int = Field(64, ge=1)
    """Worked examples per SFT step."""
    learning_rate: float = Field(2e-3, gt=0, allow_inf_nan=False)
    """AdamW learning rate of the warm start."""
    eval_every: int = Field(50, ge=1)
    """Check greedy accuracy every this many steps."""
    eval_size: int = Field(128, ge=1)
    """Prompts in the SFT check set (separate from the RL eval set)."""
    cache_dir: str | None = None
    """Where warm starts are cached; default $NEGGRAD_CACHE or ~/.cache/neggrad."""


class NGRPOConfig(_Section):
    """NGRPO advantage calibration (Nan et al. 2025, arXiv:2509.18851, Sec. 4.1)."""

    num_virtual: int = Field(1, ge=1)
    """Virtual maximum-reward samples added to each group's mean and std."""
    virtual_reward: float | None = None
    """Reward of the virtual sample; default the reward scheme's maximum (1)."""


class WReinforceConfig(_Section):
    """W-REINFORCE (Zhu et al. 2025, arXiv:2506.01347)."""

    positive_weight: float = Field(0.1, ge=0, allow_inf_nan=False)
    """lambda: advantage of a correct completion (wrong ones get -1)."""


class NonFiniteConfig(_Section):
    """What to do when the loss or gradient is NaN or infinite."""

    max_consecutive: int = Field(3, ge=1)
    """Stop the run after this many consecutive skipped updates."""


class Config(_Section):
    """A full neggrad run. Training step = one generation batch of ``per_device_train_batch_size *
    gradient_accumulation_steps * steps_per_generation`` completions (``P = that / num_generations``
    prompts), then ``num_iterations * steps_per_generation`` optimizer steps over it."""

    method: str = "grpo"
    """Named preset (see ``neggrad methods``); its values fill every key this file leaves unset."""
    seed: int = 0
    """Seed of model init, sampling and data order."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)

    # ---- rollout
    num_generations: int = Field(8, ge=2)
    """G: completions sampled per prompt (one group). GRPO needs at least 2."""
    max_completion_length: int = Field(48, ge=1)
    """Longest completion in tokens; longer ones are cut and count as truncated."""
    temperature: float = Field(1.0, gt=0, allow_inf_nan=False)
    """Sampling temperature; log-probs for the loss use logits / temperature too (as TRL and verl)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling mass."""

    # ---- batch
    per_device_train_batch_size: int = Field(64, ge=1)
    """Completions per micro-batch (forward/backward)."""
    gradient_accumulation_steps: int = Field(2, ge=1)
    """Micro-batches per optimizer step."""
    steps_per_generation: int = Field(1, ge=1)
    """Optimizer steps per generation batch (TRL's name)."""
    num_iterations: int = Field(1, ge=1)
    """Passes over each generation batch (PPO epochs); >1 makes the clip bind."""

    # ---- rewards and groups
    reward_scheme: Literal["binary", "pm1"] = "binary"
    """binary: r = 1 correct, 0 wrong; pm1: +1 / -1. Group classes always use binary correctness."""
    group_filter: Literal["none", "zero_std", "all_correct"] = "none"
    """Drop groups before the update: zero_std drops groups whose correctness does not vary (DAPO),
    all_correct drops groups that are all correct (NGRPO)."""
    refill: bool = False
    """After dropping groups, generate more prompts until the batch is full (dynamic sampling)."""
    max_generation_rounds: int = Field(4, ge=1)
    """Cap on generation rounds per step when refill is on."""
    overlong_buffer_len: int = Field(0, ge=0)
    """DAPO soft overlong penalty: completions longer than max_completion_length - this lose reward
    linearly (0: off)."""
    overlong_penalty_factor: float = Field(1.0, ge=0, allow_inf_nan=False)
    """Largest overlong penalty."""
    mask_truncated_completions: bool = False
    """Exclude completions cut at max_completion_length from the loss (they keep their reward)."""

    # ---- advantage
    advantage_estimator: Literal["grpo", "rloo", "ngrpo", "psr", "nsr", "w_reinforce", "raft", "reinforce_rej"] = (
        "grpo"
    )
    """Sequence advantage: grpo, rloo, ngrpo, psr, nsr, w_reinforce, raft, reinforce_rej."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Divide centred rewards by the group std (GRPO), the batch std, or not at all (Dr. GRPO)."""

    clamp_negative_advantages: bool = False
    """Set negative advantages to 0 (Pos-Only, arXiv:2505.18830 Sec. 3); only with the grpo estimator."""
    ngrpo: NGRPOConfig = Field(default_factory=NGRPOConfig)
    w_reinforce: WReinforceConfig = Field(default_factory=WReinforceConfig)

    # ---- loss
    policy_loss: Literal["clipped", "logp"] = "clipped"
    """clipped: PPO ratio surrogate; logp: -A * log-prob, no ratio (RAFT)."""
    dual_clip: float | None = Field(None, gt=1)
    """Dual clip constant c for negative advantages (off when null; RAFT++ uses 3)."""
    loss_type: Literal["grpo", "dapo", "dr_grpo", "seq_sum"] = "grpo"
    """Aggregation of token losses over an optimizer step (ALGORITHMS.md 1.5)."""
    epsilon: float = Field(0.2, gt=0, lt=1)
    """Lower clip range: ratio floor 1 - epsilon."""
    epsilon_high: float | None = Field(None, gt=0)
    """Upper clip range: ratio ceiling 1 + epsilon_high (default epsilon). DAPO recommends 0.28."""
    beta: float = Field(0.0, ge=0, allow_inf_nan=False)
    """KL coefficient to a frozen reference (k3). 0 builds no reference model at all."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """Per-token KL estimator (Schulman's k1/k2/k3)."""
    entropy_coef: float = Field(0.0, ge=0, allow_inf_nan=False)
    """Entropy bonus coefficient."""

    # ---- optimizer
    learning_rate: float = Field(5e-5, gt=0, allow_inf_nan=False)
    """AdamW peak learning rate."""
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False)
    """AdamW decoupled weight decay."""
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    """AdamW first-moment decay."""
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    """AdamW second-moment decay."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Clip the global gradient norm to this."""
    lr_scheduler_type: Literal["constant", "cosine"] = "constant"
    """After warm-up: constant, or cosine decay to 0 at max_steps."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up over this many optimizer steps."""
    max_steps: int = Field(100, ge=0)
    """Training steps (generation batches)."""

    # ---- evaluation, logging, checkpoints
    eval_steps: int = Field(25, ge=0)
    """Greedy evaluation every this many steps (0: only before and after training)."""
    eval_avg_k: int = Field(0, ge=0)
    """Also report sampled avg@k with this k (0: off)."""
    save_steps: int = Field(50, ge=0)
    """Checkpoint every this many steps (0: only at the end and on interruption)."""
    save_total_limit: int = Field(2, ge=1)
    """Keep this many newest checkpoints."""
    num_samples_logged: int = Field(4, ge=0)
    """Completions written to samples/ per step."""
    nonfinite: NonFiniteConfig = Field(default_factory=NonFiniteConfig)

    @property
    def generation_batch_size(self) -> int:
        """Completions generated per training step (B)."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.steps_per_generation

    @property
    def num_prompts(self) -> int:
        """Prompts (groups) per training step (P)."""
        return self.generation_batch_size // self.num_generations

    @model_validator(mode="after")
    def _combinations(self) -> Config:
        if self.generation_batch_size % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size * gradient_accumulation_steps * steps_per_generation = "
                f"{self.generation_batch_size} is not divisible by num_generations = {self.num_generations}: "
                "groups are never split; change one of them"
            )
        if self.epsilon_high is not None and self.epsilon_high < self.epsilon:
            raise ValueError(f"epsilon_high ({self.epsilon_high}) must be >= epsilon ({self.epsilon})")
        if self.advantage_estimator != "grpo" and (self.clamp_negative_advantages or self.scale_rewards != "group"):
            raise ValueError(
                f"clamp_negative_advantages and scale_rewards={self.scale_rewards!r} apply only to "
                f"advantage_estimator 'grpo', got {self.advantage_estimator!r}: remove them or use grpo"
            )
        if self.overlong_buffer_len >= self.max_completion_length:
            raise ValueError(
                f"overlong_buffer_len ({self.overlong_buffer_len}) must be < max_completion_length "
                f"({self.max_completion_length})"
            )
        if self.model.name_or_path != "testbed" and self.sft.enabled:
            self.sft.enabled = False
        return self


def _suggest(loc: tuple) -> str:
    """ ", did you mean 'learning_rate'?" for a misspelt key, found among its section's fields."""
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        annotation = model.model_fields.get(str(part))
        inner = getattr(annotation, "annotation", None)
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return ""
        model = inner
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f", did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?" if close else ""


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"unknown config key {loc!r}{_suggest(first['loc'])} (`neggrad config` prints every valid key)"
    msg = first["msg"].removeprefix("Value error, ")
    if kind in ("value_error", "assertion_error"):  # our validators name their keys and values themselves
        return msg
    return f"{loc}: {msg} (got {first.get('input')!r})" if "input" in first else f"{loc}: {msg}"


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML, so 1e-5, true, null and lists work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value (example: learning_rate=1e-5)")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise ConfigError(f"override {text!r} has no key (example: learning_rate=1e-5)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"override {key}={raw}: the value must be a finite number")
    return key.split("."), value


def _set_dotted(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {'.'.join(path)}: {part!r} is a value, not a section")
        node = child
    node[path[-1]] = value


def read_yaml(path: str | Path) -> dict:
    """Read a config file into a plain dict; a missing or malformed file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def build_config(raw: dict | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Raw dict (from YAML) + ``key.sub=value`` overrides -> validated Config with its method preset applied."""
    from neggrad.methods import apply_preset  # noqa: PLC0415 (methods imports this module)

    tree = dict(raw or {})
    for text in overrides:
        path, value = parse_override(text)
        _set_dotted(tree, path, value)
    try:
        return Config.model_validate(apply_preset(tree))
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    except ValueError as err:
        raise ConfigError(str(err)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML file (or the defaults) and apply overrides; raise ConfigError on any problem."""
    return build_config(read_yaml(path) if path else {}, overrides)


def dump_config(config: Config) -> str:
    """The resolved config as YAML, every key explicit, so a run directory fully describes its run."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
