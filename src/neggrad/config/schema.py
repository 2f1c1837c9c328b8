"""The whole run's config: every top-level key, its type, default and help text, and the sections."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from neggrad.config import rules
from neggrad.config.algorithms import (
    HintConfig,
    LENSConfig,
    LLDConfig,
    LLDSConfig,
    NGRPOConfig,
    NTHRConfig,
    RandomRewardConfig,
    RLZVPConfig,
    THRConfig,
    WReinforceConfig,
    ZeroVarianceConfig,
)
from neggrad.config.base import _Section
from neggrad.config.feedback import FeedbackConfig
from neggrad.config.model import DataConfig, ModelConfig, RewardConfig, RolloutConfig, SFTConfig, TaskConfig


class BudgetConfig(_Section):
    """Stop on compute spent instead of steps, so arms that sample more per step (dynamic sampling, hints) are
    compared at equal compute. Checked after each step: the run ends at the first step where the budget is
    reached (max_steps still caps it). At most one of samples, tokens, seconds."""

    samples: int | None = Field(None, ge=1)
    """Completions generated, every generation round (refills) and hint re-generation included."""
    tokens: int | None = Field(None, ge=1)
    """Completion tokens generated (EOS included; hint prefixes written into a completion are not generated)."""
    seconds: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Wall-clock seconds of the run (training, evaluations and probes; a resumed run counts its time up to the
    checkpoint, not the time it was stopped)."""
    eval_every: float | None = Field(0.1, gt=0, le=1)
    """With a budget: evaluate each time another this fraction of it has been spent (0.1: ten evaluations plus the
    final one), so every arm's curve has points at the same compute. null, or no budget: every eval_steps steps."""

    @model_validator(mode="after")
    def _one(self) -> BudgetConfig:
        set_kinds = [k for k in ("samples", "tokens", "seconds") if getattr(self, k) is not None]
        if len(set_kinds) > 1:
            raise ValueError(
                f"budget sets {' and '.join(set_kinds)}: give at most one of budget.samples, budget.tokens, "
                "budget.seconds"
            )
        return self

    @property
    def kind(self) -> str | None:
        """The budget set: "samples", "tokens" or "seconds"; None for none (max_steps alone ends the run)."""
        return next((k for k in ("samples", "tokens", "seconds") if getattr(self, k) is not None), None)

    @property
    def limit(self) -> float | None:
        """The amount of ``kind`` the run may spend (None without a budget)."""
        return None if self.kind is None else getattr(self, self.kind)


class NonFiniteConfig(_Section):
    """What to do when the loss or gradient is NaN or infinite."""

    max_consecutive: int = Field(3, ge=1)
    """Stop the run after this many consecutive skipped updates."""


SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
    "warmup_stable_decay",
)
"""``lr_scheduler_type`` values: transformers' schedules that are a multiplier of the step (train.lr_lambda)."""

TRACKERS = ("tensorboard", "wandb", "trackio")
"""The experiment trackers ``report_to`` names (TRL's names); ``neggrad.trainer.trackers`` writes to them."""


class Config(_Section):
    """A full neggrad run. Training step = one generation batch of ``per_device_train_batch_size *
    gradient_accumulation_steps * steps_per_generation`` completions (``P = that / num_generations``
    prompts), then ``num_iterations * steps_per_generation`` optimizer steps over it."""

    method: str = "grpo"
    """Named preset (see ``neggrad methods``); its values fill every key this file leaves unset."""
    seed: int = 0
    """Seed of model init, sampling and data order."""
    label: str | None = None
    """Name of this arm in reports (``neggrad report`` groups runs by it); default: the method. Use it to
    compare settings that share a method, e.g. label=grpo+judge with feedback.enabled=true."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)

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
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)

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
    nthr: NTHRConfig = Field(default_factory=NTHRConfig)
    lld: LLDConfig = Field(default_factory=LLDConfig)
    zero_variance: ZeroVarianceConfig = Field(default_factory=ZeroVarianceConfig)
    rl_zvp: RLZVPConfig = Field(default_factory=RLZVPConfig)
    lens: LENSConfig = Field(default_factory=LENSConfig)
    thr: THRConfig = Field(default_factory=THRConfig)
    llds: LLDSConfig = Field(default_factory=LLDSConfig)
    random_reward: RandomRewardConfig = Field(default_factory=RandomRewardConfig)
    hint: HintConfig = Field(default_factory=HintConfig)
    strategies: list[str | dict[str, Any]] = Field(default_factory=list)
    """User strategies (docs/strategies.md): import paths of ``neggrad.strategies.Strategy`` subclasses,
    ``"my_pkg.rules:MyRule"``, or mappings ``{path: "my_pkg.rules:MyRule", k: 4}`` whose other keys are the
    class's keyword arguments. They run after the built-in ones, in this order."""

    # ---- loss
    policy_loss: Literal["clipped", "logp", "cispo"] = "clipped"
    """clipped: PPO ratio surrogate; logp: -A * log-prob, no ratio (RAFT); cispo: -sg(min(ratio, epsilon_high))
    * A * log-prob (MiniMax-M1, arXiv:2506.13585; TRL's loss_type="cispo" = this with loss_type dapo)."""
    importance_sampling_level: Literal["token", "sequence", "sequence_token"] = "token"
    """Ratio of the clipped surrogate: token (PPO/GRPO), sequence (GSPO, arXiv:2507.18071: the length-normalised
    sequence ratio; use loss_type grpo and epsilon 3e-4 / epsilon_high 4e-4), sequence_token (GSPO-token, for
    per-token advantages such as NTHR / THR / RL-ZVP)."""
    dual_clip: float | None = Field(None, gt=1)
    """Dual clip constant c for negative advantages (off when null; RAFT++ uses 3)."""
    loss_type: Literal["grpo", "dapo", "dr_grpo", "seq_sum"] = "grpo"
    """Aggregation of token losses over an optimizer step (docs/algorithms.md §4)."""
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
    logprob_chunk: int = Field(0, ge=0)
    """Compute the completions' log-probs and entropies from the final hidden states through the LM head this many
    positions at a time (neggrad.core.logprobs.chunked_logprobs), so no pass holds a micro-batch's (B, T, V) logits;
    0: off (the full logits, as TRL). Needs a plain linear LM head and reads no logits, so not with NTHR or THR."""
    group_by_length: bool = False
    """Form each optimizer step's micro-batches from rows of similar completion length (shortest first) and run
    each micro-batch without the columns that are padding in all its rows; every pass of the update (training,
    old-policy, reference, LLD) drops them. The loss of a step does not depend on how its rows are split, so this
    changes float rounding only; it saves the compute of padding when lengths vary and a step has several
    micro-batches (gradient_accumulation_steps > 1). With NTHR or LENS on-policy, micro-batches stay whole groups
    and are only trimmed. Like transformers' Trainer option of this name."""
    share_prompt_forward: bool = False
    """Run each distinct prompt of a micro-batch once in the training (and old-policy, reference, LLD) forwards and
    the completions on top of its KV cache, instead of once per completion (neggrad.models.policy.shared_prompt_pass;
    Prefix Grouper, arXiv:2506.05433). The same log-probs and gradients to float rounding, fewer tokens run: the
    longer the prompts and the larger num_generations, the larger the saving. Not with gradient checkpointing (which
    turns the KV cache off)."""
    remove_padding: bool | Literal["auto"] = False
    """Run the training (and old-policy, reference, LLD) forwards on the real tokens only: the per-token work
    (projections, MLP, LM head) skips the padding of prompts and completions, and only the positions that predict a
    completion token run (neggrad.models.packed; the idea of verl's use_remove_padding). The same log-probs and
    gradients to float rounding. For LlamaForCausalLM / Qwen2ForCausalLM (SmolLM2, Qwen2.5, the testbed) in
    float32 on the CPU, one process, no LoRA, no gradient checkpointing: true refuses anything else at set-up.
    auto: on where those hold and off otherwise (a GPU, bfloat16, LoRA, a launcher), the choice and its reason in
    the log and in summary.json's runtime. Combines with share_prompt_forward."""

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
    lr_scheduler_type: Literal[SCHEDULERS] = "constant"
    """After warm-up, transformers' schedule of this name (TRL's key and names; transformers.get_scheduler):
    constant, cosine (to 0 at max_steps), linear (to 0), cosine_with_min_lr (lr_scheduler_kwargs min_lr_rate or
    min_lr), constant_with_warmup (the same as constant here), polynomial, cosine_with_restarts, inverse_sqrt,
    cosine_warmup_with_min_lr, warmup_stable_decay (num_decay_steps)."""
    lr_scheduler_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Arguments of that schedule (transformers' scheduler_specific_kwargs), e.g. {min_lr_rate: 0.1}."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up over this many optimizer steps, for every schedule: (step + 1) / (warmup_steps + 1), so no
    step trains at rate 0."""
    max_steps: int = Field(100, ge=0)
    """Training steps (generation batches); with a budget, the most the run may take."""
    budget: BudgetConfig = Field(default_factory=BudgetConfig)

    # ---- evaluation, logging, checkpoints
    eval_steps: int = Field(25, ge=0)
    """Greedy evaluation every this many steps (0: only before and after training); with a budget, budget.eval_every
    sets the cadence instead."""
    eval_avg_k: int = Field(0, ge=0)
    """Also report sampled avg@k with this k (0: off)."""
    save_steps: int = Field(50, ge=0)
    """Checkpoint every this many steps (0: only at the end and on interruption)."""
    save_total_limit: int = Field(2, ge=1)
    """Keep this many newest checkpoints."""
    num_samples_logged: int = Field(4, ge=0)
    """Completions written to samples/ per step."""
    report_to: list[Literal["tensorboard", "wandb", "trackio"]] = Field(default_factory=list)
    """Experiment trackers that also receive each line of metrics.jsonl (same names, the training step as the step
    axis) and the resolved config: none, tensorboard, wandb (offline unless WANDB_MODE says otherwise), trackio, or
    a list (docs: integrations/trackers)."""
    nonfinite: NonFiniteConfig = Field(default_factory=NonFiniteConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to_list(cls, value: Any) -> list:
        if value is None:
            return []
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list | tuple):
            names = [names]
        known = ("none", *TRACKERS)
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"report_to takes {', '.join(known)} or a list of them, got {unknown[0]!r}")
        return list(dict.fromkeys(name for name in names if name != "none"))  # "none" and repeats dropped

    @model_validator(mode="after")
    def _cross_key_rules(self) -> Config:
        rules.check(self)  # config/rules.py
        return self

    @property
    def prompt_source(self) -> str:
        """Where the prompts come from: "data" (data.source) or the built-in task's name."""
        return "data" if self.data.source else self.task.name

    @property
    def generation_batch_size(self) -> int:
        """Completions generated per training step (B)."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.steps_per_generation

    @property
    def num_prompts(self) -> int:
        """Prompts (groups) per training step (P)."""
        return self.generation_batch_size // self.num_generations
