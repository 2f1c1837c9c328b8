"""Config sections of what is trained on what: the model, the task or data set, the reward, the
testbed's SFT warm start and the rollout engine."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from neggrad.config.base import _Section


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


class LoraConfig(_Section):
    """Low-rank adapters (Hu et al. 2021, arXiv:2106.09685) through ``peft``: only the adapters train, and the KL
    reference is the same model with its adapters switched off, so no second copy is kept."""

    enabled: bool = False
    """Wrap the policy in LoRA adapters (pip install 'neggrad[lora]')."""
    r: int = Field(16, ge=1)
    """Rank of each adapter."""
    alpha: float = Field(32.0, gt=0, allow_inf_nan=False)
    """Scale numerator: an adapter's update is multiplied by alpha / r."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter input. 0 keeps the training forward equal to the sampling policy (ratio 1)."""
    target_modules: list[str] | str = "all-linear"
    """Modules that get adapters: "all-linear" (every linear layer but the LM head) or a list of names such as
    [q_proj, k_proj, v_proj, o_proj]."""


class ModelConfig(_Section):
    """Which policy to train, and how it is loaded."""

    name_or_path: str = "testbed"
    """"testbed" builds the tiny local model (and its SFT warm start); otherwise a Hugging Face hub id or a
    local folder with a causal LM and its tokenizer."""
    gguf_file: str | None = None
    """A GGUF file inside name_or_path (a hub repo or folder) to load, dequantised to dtype (needs the gguf
    package), e.g. SmolLM2-135M-Instruct.Q4_1.gguf."""
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    """Weight dtype of the policy. auto: the checkpoint's own dtype. float16 trains without loss scaling; prefer
    bfloat16 on GPUs that have it."""
    device: str = "auto"
    """Where the policy lives: "cpu", "cuda", "cuda:1", ... auto: this process's GPU (LOCAL_RANK) for a Hugging
    Face model when CUDA is available, else the CPU; the testbed stays on the CPU."""
    attn_implementation: str | None = None
    """Attention kernel passed to from_pretrained: eager, sdpa, flash_attention_2, ... (null: transformers'
    default)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory for longer completions, ~30 % more compute."""
    trust_remote_code: bool = False
    """Run modelling code shipped with a hub repo. Off unless you trust the repo."""
    lora: LoraConfig = Field(default_factory=LoraConfig)
    testbed: TestbedModelConfig = Field(default_factory=TestbedModelConfig)
    """Shape of the testbed model (used only when name_or_path is "testbed")."""

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.name_or_path == "testbed":
            hub_only = [k for k in ("gguf_file", "attn_implementation") if getattr(self, k) is not None]
            if self.trust_remote_code:
                hub_only.append("trust_remote_code")
            if hub_only:
                raise ValueError(
                    f"model.{hub_only[0]} applies to Hugging Face models, not the testbed: set model.name_or_path "
                    "to a hub id or folder, or remove it"
                )
        if not self.name_or_path.strip():
            raise ValueError('model.name_or_path is empty: give "testbed", a hub id or a model folder')
        return self


class TaskConfig(_Section):
    """A built-in task: the synthetic multi-step arithmetic testbed (``Q: 37+45-18=`` answered
    ``37+45=82, 82-18=64. A: 64``) or the same chains told as word problems for pretrained chat models.

    Operations are applied left to right, one step each, so every answer is a chain of checkable steps.
    """

    name: Literal["arithmetic", "word_problems"] = "arithmetic"
    """arithmetic: the testbed's ``Q: 37+45-18=`` prompts, for the built-in model. word_problems: "Mia has 14
    marbles. She buys 5 more. ..." with a worked solution and a \\boxed{} answer (neggrad.tasks.word_problems),
    formatted by data.prompt_template / data.chat_template, for pretrained chat models."""
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


class ColumnsConfig(_Section):
    """Which column of a prompt set holds what."""

    problem: str = "problem"
    """Column with the problem text that goes into the prompt."""
    answer: str = "answer"
    """Column with the gold answer the verifier checks against (numbers become text; a list is joined by ", ")."""
    solution: str | None = None
    """Column with a worked reference solution, kept for judges (optional)."""


class DataConfig(_Section):
    """Prompt sets for real-model training: local files or Hugging Face hub data sets (unset: the ``task`` testbed)."""

    source: str | None = None
    """Training prompts: a local .jsonl / .json / .parquet file, a hub id (needs the datasets package), or an eval
    set name (see eval_source). null trains on the arithmetic testbed of the task section."""
    subset: str | None = None
    """Hub config name, e.g. "main" for openai/gsm8k."""
    split: str = "train"
    """Hub split of source (ignored for local files)."""
    columns: ColumnsConfig = Field(default_factory=ColumnsConfig)
    """Column names of source (and of eval_source when it is a file or hub id and eval_columns is null)."""
    answer_format: Literal["plain", "boxed", "gsm8k"] = "plain"
    """How to read the answer column: plain (as is), boxed (its last \\boxed{}, e.g. a MATH solution column),
    gsm8k (the text after "####", thousands commas removed)."""
    filters: dict[str, list[str | int | float | bool]] = Field(default_factory=dict)
    """Keep training rows whose column value is in the list, e.g. {level: [3, 4, 5]} for MATH levels 3-5
    (HuggingFaceH4/MATH-500 stores levels as ints; hendrycks MATH copies write "Level 3")."""
    eval_source: str | None = None
    """Held-out prompts: math500, aime24, aime25, amc23, minerva, olympiadbench, gsm8k (hub id and columns built
    in), or a file or hub id. null: hold eval_size prompts of source out of training."""
    eval_subset: str | None = None
    """Hub config name of eval_source."""
    eval_split: str = "test"
    """Hub split of eval_source (a built-in eval set uses its own)."""
    eval_columns: ColumnsConfig | None = None
    """Column names of eval_source when it is a file or hub id (null: the same as columns)."""
    eval_answer_format: Literal["plain", "boxed", "gsm8k"] | None = None
    """answer_format of eval_source when it is a file or hub id (null: the same as answer_format)."""
    eval_size: int | None = Field(None, ge=1)
    """Evaluate on the first eval_size prompts of eval_source (null: all). Without eval_source, this many
    prompts of source are held out (null: a tenth of source, at most 500)."""
    prompt_template: str = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{}."
    """Text of the prompt (or of the user turn, with chat_template); "{problem}" is replaced by the problem. The
    default is the Qwen2.5-Math chain-of-thought instruction."""
    chat_template: bool = False
    """Format prompts with the tokenizer's chat template (instruct models); false: plain text (base models)."""
    system_prompt: str | None = None
    """System turn put before the user turn (only with chat_template)."""
    seed: int = 0
    """Seed of the training order (reshuffled every pass over source) and of the held-out split."""


class RewardConfig(_Section):
    """The verifier that scores completions: binary correctness, plus an optional format bonus."""

    kind: str = "auto"
    """arithmetic: the testbed's "A: n" exact integer match. math: math-verify equivalence of the last \\boxed{}
    (or final-answer line) with the gold answer (pip install 'neggrad[math]'). "my_pkg.rewards:fn": your function
    (completions, answers) -> list[bool]. integer: the integer the completion states as its final answer (its last
    \\boxed{}, else a "The answer is n" line) equals the gold integer (word problems). auto: math when
    data.source is set, integer for task.name word_problems, else arithmetic."""
    timeout: float = Field(5.0, gt=0, le=600, allow_inf_nan=False)
    """Seconds allowed per math answer check; past it the answer scores 0 and its worker process is replaced."""
    workers: int = Field(2, ge=1, le=256)
    """Worker processes checking math answers."""
    format_weight: float = Field(0.0, ge=0, allow_inf_nan=False)
    """Bonus added to the reward of a completion that states an extractable final answer (0: off)."""

    @model_validator(mode="after")
    def _kind(self) -> RewardConfig:
        from neggrad.tasks.verifiers.custom import is_import_path  # stdlib-only module, no import cycle

        if self.kind not in ("auto", "arithmetic", "math", "integer") and not is_import_path(self.kind):
            raise ValueError(
                "reward.kind must be arithmetic, math, integer, auto or an import path like "
                f"'my_pkg.rewards:is_correct', "
                f"got {self.kind!r}"
            )
        return self


class SFTConfig(_Section):
    """Supervised warm start of the testbed model, stopped at a middling accuracy and cached on disk."""

    enabled: bool | None = None
    """Run (or load from cache) the warm start before RL. Only for the testbed model; null: on for the
    testbed model, off for a pretrained one."""
    seed: int | None = None
    """Seed of the warm start (model init and SFT data order); null = the run's seed. Set it (e.g. 0) to
    start every RL seed from one shared policy: cheaper comparisons, seed spread from RL alone."""
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


class VLLMConfig(_Section):
    """vLLM rollouts (pip install 'neggrad[vllm]'): sampling only; log-probs for the loss always come from the
    training model."""

    mode: Literal["colocate", "server"] = "colocate"
    """colocate: a vLLM engine in this process on the training GPU, weights copied in after every update.
    server: a separate vLLM server at base_url (other GPUs) serves completions."""
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    """colocate: share of the GPU's memory vLLM may take for its weights and KV cache; the rest is left to
    training."""
    sleep: bool = False
    """colocate: free vLLM's weights and KV cache while the policy trains (vLLM sleep mode, level 2) and reload
    the current weights before each generation. Less memory, some latency per step."""
    max_model_len: int | None = Field(None, ge=16)
    """colocate: longest prompt + completion vLLM plans for (null: the model's own limit)."""
    base_url: str = "http://127.0.0.1:8000"
    """server: root of the vLLM server (its OpenAI-compatible /v1/completions is used)."""
    timeout_s: float = Field(240.0, gt=0, allow_inf_nan=False)
    """server: seconds to wait for the server to answer a request (or to come up)."""
    sync_weights: bool = True
    """server: push the updated weights to the server after every update (needs trl and a server started for
    weight updates, see neggrad.rollout.vllm). false: the server keeps its own weights (e.g. evaluation only)."""


class RolloutConfig(_Section):
    """Which engine samples the completions."""

    backend: Literal["hf", "hf_lean", "vllm"] = "hf"
    """hf: transformers generate on the training model. hf_lean: the same model and sampling in a plain decode loop
    with a pre-allocated (static) KV cache, less overhead per token (neggrad.rollout.lean; same tokens for a seed up
    to float rounding). vllm: a vLLM engine (rollout.vllm), same prompts and sampling settings, weights synced after
    every update."""
    compact: bool = False
    """hf_lean only: sample with less work per rollout. Each distinct prompt is prefilled once and its KV cache copied
    to the rows of its group, rows that have ended (EOS) are dropped from the batch so later decode steps run only
    the live rows, and Llama / Qwen2 float32 models on the CPU decode through a slimmer step (neggrad.rollout.slim).
    It draws its random numbers for the live rows only, so it does not give generate's tokens for a seed. Its
    contract instead: the same seed gives the same tokens; each token is drawn from the model's own distribution
    (temperature, top-k, top-p applied); the same output format (left-padded prompts, pad after EOS, truncated
    flags, hints); greedy decoding gives generate's greedy tokens. false: hf_lean samples generate's tokens."""
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)

    @model_validator(mode="after")
    def _compact_needs_lean(self) -> RolloutConfig:
        if self.compact and self.backend != "hf_lean":
            raise ValueError(
                f"rollout.compact is a mode of the lean decode loop: it needs rollout.backend hf_lean, "
                f"got {self.backend}"
            )
        return self
