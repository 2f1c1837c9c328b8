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
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NTHR_ESTIMATORS = ("grpo", "rloo", "ngrpo")
"""Advantage estimators NTHR can sit on: they score whole groups, wrong answers included."""


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
    marbles. She buys 5 more. ..." with a worked solution and a \\boxed{} answer (neggrad.data.word_problems),
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
        from neggrad.rewards.custom import is_import_path  # stdlib-only module, no import cycle

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


class NTHRConfig(_Section):
    """NTHR: down-weight the penalty on wrong-answer tokens that resemble the correct answers
    (Deng et al. 2025, arXiv:2505.18830, Sec. 5, Alg. 1; docs/algorithms.md §7)."""

    enabled: bool = False
    """Turn NTHR on (method ``nthr`` = grpo + this). Allowed on grpo, dr_grpo, dapo, rloo and ngrpo."""
    beta: float = 1.0
    """Threshold scale: tau = beta * min over correct responses of their mean score (paper: 1.0; 0 for
    R1-Distill-1.5B). 0 selects every token with a positive score; -.inf selects every wrong token."""
    eta: Literal["2|0.5-p|", "1-p", "p"] | float = "2|0.5-p|"
    """Advantage factor of selected tokens: "2|0.5-p|" (paper, App. 7.3), "1-p", "p", or a constant in [0, 1)."""
    vocab: Literal["response", "full"] = "response"
    """Gradient vocabulary: "response" = token ids of the group's completions (paper, App. 7.4), "full" = exact."""
    anchor_include_self: bool = True
    """Keep a correct response's own tokens in the sum when its anchor mean is taken (docs/algorithms.md §7.2)."""
    scope: Literal["group", "batch"] = "group"
    """Whose correct answers a wrong token is scored against: "group" = its own group's (the paper), "batch" =
    every correct answer of the batch (on each process), so tokens that would displace other prompts' correct
    answers are protected too (neggrad.core.nthr.nthr_batch). batch costs one no-grad forward pass per step
    (the scores need the whole batch before the first loss) and needs a linear LM head (Llama, Qwen, SmolLM2)."""
    control: Literal["none", "random"] = "none"
    """A control arm (docs/algorithms.md §6.2): "random" scales as many randomly chosen tokens of each wrong
    response as NTHR selected there, so the effect of *which* tokens are chosen can be isolated."""
    chunk_tokens: int = Field(1024, ge=1)
    """Tokens per block of the score computation (bounds its extra memory)."""
    chunk_vocab: int = Field(8192, ge=1)
    """Vocabulary columns per block (bounds memory with vocab "full")."""

    @model_validator(mode="after")
    def _check(self) -> NTHRConfig:
        if isinstance(self.eta, float) and not 0.0 <= self.eta < 1.0:
            raise ValueError(f"nthr.eta must be in [0, 1) or one of 2|0.5-p|, 1-p, p; got {self.eta}")
        if self.beta != self.beta:  # NaN
            raise ValueError("nthr.beta must be a number (use -.inf to select every wrong token)")
        return self


class LLDConfig(_Section):
    """Lazy Likelihood Displacement diagnostics (arXiv:2505.18830, Sec. 4; docs/algorithms.md §6)."""

    enabled: bool = True
    """Log how each update moved the log-likelihood of the correct completions it trained on (one extra
    no-grad forward over those completions, reported as time/lld)."""
    wrong: bool = False
    """Also measure the wrong completions (lld/wrong/*): a second forward over them."""
    probe_size: int = Field(64, ge=0)
    """Held-out (prompt, correct completion) pairs fixed at step 0 and tracked over training (0: off)."""
    probe_every: int = Field(10, ge=1)
    """Steps between probe measurements (lld/probe/*)."""


class FeedbackNoiseConfig(_Section):
    """Judge noise of the oracle judge, to measure how much judge error the method tolerates."""

    flip: float = Field(0.0, ge=0, le=1)
    """Probability that a verdict is replaced by a uniformly drawn one (any step, or none wrong)."""
    shift: float = Field(0.0, ge=0, le=1)
    """Probability that a verdict moves one step earlier or later (an off-by-one judge)."""
    seed: int = 0
    """Seed of the noise; a response's noise depends only on (seed, problem, response)."""


class FeedbackLocalConfig(_Section):
    """The ``local`` judge: a Hugging Face causal LM run in this process, greedy."""

    name_or_path: str = ""
    """Hub id or local folder of the judge model (required for judge: local)."""
    max_new_tokens: int = Field(512, ge=1)
    """Longest judge reply in tokens; a reply cut before its verdict line is a failure."""
    batch_size: int = Field(8, ge=1)
    """Judge prompts per generate call."""
    device: str = "auto"
    """Where the judge model runs: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ..."""


class FeedbackHTTPConfig(_Section):
    """The ``http`` judge: an OpenAI-compatible chat-completions server (vLLM, SGLang, a hosted API)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """Server root (http:// or https://, no user name or password); requests go to <base_url>/chat/completions.
    Redirects are not followed: a 3xx reply is a failed judgement naming its target."""
    model: str = ""
    """Model name sent in each request (required for judge: http)."""
    api_key_env: str | None = "NEGGRAD_JUDGE_API_KEY"
    """NAME of the environment variable holding the API key (never the key itself); null for a server
    without authentication. The key is never written to the run directory, logs or errors."""
    allow_insecure_key: bool = False
    """Send the API key over plain http:// to a host other than this machine (loopback), where anyone on the
    network path can read it. Off: such a base_url with a key is refused; use https:// instead."""
    max_concurrency: int = Field(8, ge=1)
    """Requests in flight at once (and kept-alive connections to the server, reused from request to request)."""
    timeout_s: float = Field(60.0, gt=0, allow_inf_nan=False)
    """Deadline in seconds for one request: a reply not read whole by then counts as timed out, however its bytes
    trickle in (connecting and waiting for the reply's headers are also each bounded by it)."""
    max_retries: int = Field(3, ge=0)
    """Retries of a request after a timeout, a connection error, HTTP 429 or 5xx."""
    backoff_s: float = Field(1.0, ge=0, allow_inf_nan=False)
    """First wait before a retry; doubled each retry. A server's Retry-After header wins."""
    max_backoff_s: float = Field(60.0, ge=0, allow_inf_nan=False)
    """Longest wait before a retry, Retry-After included."""
    breaker_failures: int = Field(20, ge=1)
    """Failed requests in a row that open the circuit breaker (requests then fail at once)."""
    breaker_cooldown_s: float = Field(60.0, ge=0, allow_inf_nan=False)
    """Seconds the open breaker waits before requests are tried again."""
    temperature: float = Field(0.0, ge=0, allow_inf_nan=False)
    """Judge sampling temperature (0: greedy, so cached replies are what the server would say again)."""
    max_tokens: int = Field(1024, ge=1)
    """Longest judge reply in tokens."""

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value:  # checked with the judge (feedback.judge http needs one)
            return value
        parts = urlsplit(value)
        if parts.username is not None or parts.password is not None:  # checked first: the value is not echoed
            raise ValueError(
                "feedback.http.base_url must hold no user name or password: put the API key in the environment "
                "variable named by feedback.http.api_key_env"
            )
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise ValueError(f"feedback.http.base_url must start with http:// or https://, got {value!r}")
        return value


class FeedbackConfig(_Section):
    """Step-wise judge feedback on all-wrong groups: SGPO (Chen et al. 2025, arXiv:2505.11595), docs/algorithms.md §10.

    A judge finds the first wrong step k of each answer in a group with no correct answer; the answer
    gets scale * sigmoid(beta * ((k - 1) / n - gamma)) instead of 0, so the group has a gradient.
    """

    enabled: bool = False
    """Send all-wrong groups to the judge (allowed with grpo, dr_grpo, dapo, rloo, ngrpo)."""
    judge: Literal["oracle", "local", "http"] = "oracle"
    """oracle: exact step check of the arithmetic testbed (reads step_split: testbed); local: a Hugging
    Face model in this process; http: an OpenAI-compatible server."""
    step_split: str | None = None
    """How an answer is cut into steps: lines, regex:<pattern> (cut at each match), or testbed (one step
    per equation plus the answer line). null: follows the task, testbed on the arithmetic testbed, lines
    otherwise. Also cuts hint prefixes and LLDS's steps. See neggrad.feedback.steps."""
    beta: float = Field(10.0, gt=0, allow_inf_nan=False)
    """Steepness of the logistic partial reward."""
    gamma: float = Field(0.5, ge=0, le=1)
    """Step fraction that earns half of scale."""
    scale: float = Field(0.5, gt=0, le=1)
    """Largest partial reward; below 1 so a wrong answer stays below a correct one."""
    prompt_template: str | None = None
    """Judge prompt for local and http, with {problem}, {reference} and {steps}; null: the built-in one
    (neggrad.feedback.judge.DEFAULT_TEMPLATE)."""
    cache_dir: str | None = None
    """Where judge replies are cached; default $NEGGRAD_CACHE/judge or ~/.cache/neggrad/judge."""
    noise: FeedbackNoiseConfig = Field(default_factory=FeedbackNoiseConfig)
    local: FeedbackLocalConfig = Field(default_factory=FeedbackLocalConfig)
    http: FeedbackHTTPConfig = Field(default_factory=FeedbackHTTPConfig)

    @model_validator(mode="after")
    def _check(self) -> FeedbackConfig:
        from neggrad.feedback.steps import check_rule  # noqa: PLC0415 (feedback imports the testbed, which imports this)

        if self.step_split is not None:
            check_rule(self.step_split)
        if self.prompt_template is not None:
            missing = [p for p in ("{problem}", "{reference}", "{steps}") if p not in self.prompt_template]
            if missing:
                raise ValueError(f"feedback.prompt_template lacks {', '.join(missing)}: the judge needs all three")
        if self.enabled:
            self.check_judge()
        return self

    def check_judge(self) -> None:
        """Raise ValueError unless the chosen judge has what it needs (also checked by ``neggrad judge``)."""
        if self.judge == "local" and not self.local.name_or_path:
            raise ValueError("feedback.judge 'local' needs feedback.local.name_or_path (a hub id or model folder)")
        if self.judge == "http" and not (self.http.model and self.http.base_url):
            raise ValueError("feedback.judge 'http' needs feedback.http.base_url and feedback.http.model")

    def resolve_step_split(self, task: str) -> None:
        """Set an unset ``step_split`` from ``task`` ("arithmetic", "word_problems" or "data"): the testbed's
        rule for the arithmetic testbed, one step per line for everything else."""
        if self.step_split is None:
            self.step_split = "testbed" if task == "arithmetic" else "lines"

    def check_oracle(self, task: str) -> None:
        """Raise ValueError unless the oracle judge can check ``task``'s answers with this step rule."""
        if self.judge != "oracle":
            return
        if task == "arithmetic" and self.step_split != "testbed":
            raise ValueError(
                f"feedback.judge 'oracle' checks the testbed's equations one by one and needs "
                f"feedback.step_split: testbed (got {self.step_split!r})"
            )
        if task == "word_problems" and self.step_split == "testbed":
            raise ValueError(
                "feedback.step_split 'testbed' cuts the testbed's 'Q: ...=' answers; word problems are answered in "
                "prose: use feedback.step_split: lines"
            )
        if task == "data":
            raise ValueError(
                "feedback.judge 'oracle' checks the built-in tasks only (task.name arithmetic or word_problems); "
                "with data.source use feedback.judge: local or http"
            )


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
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)


class ZeroVarianceConfig(_Section):
    """What to do with groups whose answers are all wrong or all right (docs/algorithms.md §5.4), judged on binary
    correctness. "preset" leaves it to the method's keys (group_filter, advantage_estimator, feedback)."""

    all_wrong: Literal["preset", "keep", "drop", "ngrpo", "nsr", "w_reinforce", "rl_zvp", "lens", "judge", "hint"] = (
        "preset"
    )
    """keep: no gradient (GRPO); drop: filter out (refill as configured); ngrpo: virtual max-reward sample;
    nsr / w_reinforce: A = -1; rl_zvp: entropy-scaled token advantages; lens: confidence-calibrated penalty;
    judge: step-wise judge feedback (turns feedback on); hint: re-generate with the reference solution's first
    steps as a response prefix (hint section)."""
    all_correct: Literal["preset", "keep", "drop", "rl_zvp"] = "preset"
    """keep: no gradient; drop: filter out; rl_zvp: A = alpha * token entropy (arXiv:2509.21880)."""


class RLZVPConfig(_Section):
    """RL-ZVP (Le et al. 2025, arXiv:2509.21880, Eq. 5): token advantages from the policy's entropy."""

    alpha: float = Field(0.1, gt=0, allow_inf_nan=False)
    """Scale of the entropy advantage (paper 0.1)."""


class LENSConfig(_Section):
    """LENS (Feng et al. 2025, arXiv:2510.08696, Sec. 5.1): confident wrong answers are penalised most."""

    alpha: float = Field(0.25, gt=0, allow_inf_nan=False)
    """Scale of all-wrong groups' advantages (paper 0.25)."""
    mixed: bool = True
    """Also calibrate mixed groups' rewards (as the paper); false: only all-wrong groups."""


class THRConfig(_Section):
    """THR (Deng et al. 2025, arXiv:2510.03669; form reconstructed, docs/algorithms.md §8): NTHR's token influence
    on the correct answers, used on every token of a mixed group."""

    enabled: bool = False
    """Turn THR on (exclusive with nthr; same scoring code)."""
    p: float = Field(0.5, ge=-1, le=1)
    """> 0: exploit (more weight where the update helps the correct answers); < 0: explore. 0 = GRPO."""
    beta: float = 1.0
    """Dominance threshold scale: |s_t| > |beta * min anchor mean|."""
    mode: Literal["reweight", "dominant_only"] = "reweight"
    """reweight: A (1 + p sign(THR)) on dominant tokens; dominant_only: train only dominant tokens."""


class LLDSConfig(_Section):
    """LLDS (Deng et al. 2025, arXiv:2512.04220, Eq. 4-6, 9-10): a loss that pushes back up the
    likelihood an update took from responses with A >= 0. Zero on on-policy updates."""

    enabled: bool = False
    """Add the LLDS term to the loss."""
    coef: float = Field(0.2, ge=0, allow_inf_nan=False)
    """lambda (paper 0.2)."""
    gate: Literal["step", "action", "response", "token"] = "step"
    """step (the paper's default, Eq. 4): a response's steps, cut by ``feedback.step_split`` (by default the
    testbed's equations on the testbed, lines otherwise), each penalised only where its total log-likelihood
    fell; action: runs of own tokens (model turns; a single-turn response is one action, so = response);
    response: whole responses whose log-likelihood fell (Eq. 10); token: every token whose log-prob fell (Eq. 9)."""


class HintConfig(_Section):
    """Guidance for groups nobody solves (docs/algorithms.md §11): G - 1 answers of an all-wrong group are re-generated
    with the reference solution's first k steps written at the start of the response, k rising in a ladder
    until one is right. The hint tokens are trained with LUFFY's shaped loss (arXiv:2504.14945 Eq. 6), never
    as the policy's own samples."""

    fractions: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75])
    """Ladder: k = min(ceil(f * S), S - 1) for each f, S = the reference's steps (the last step, the answer,
    is never given)."""
    gamma: float = Field(0.1, gt=0, allow_inf_nan=False)
    """LUFFY's shaping constant: hint-token loss -A * pi / (pi + gamma)."""
    warmup_steps: int = Field(0, ge=0)
    """Steps without hints at the start of training."""

    @model_validator(mode="after")
    def _check(self) -> HintConfig:
        if not self.fractions or not all(0.0 < f < 1.0 for f in self.fractions):
            raise ValueError(f"hint.fractions must be a non-empty list of numbers in (0, 1), got {self.fractions}")
        return self


class RandomRewardConfig(_Section):
    """Random-reward control (Shao et al. 2025, arXiv:2506.10947): rewards are coin flips independent of the
    answer, so a run shows what training does without any signal."""

    enabled: bool = False
    """Replace correctness by coin flips for training (true accuracy is still logged and evaluated)."""
    rate: Literal["matched"] | float = "matched"
    """Probability of reward 1: "matched" = the round's true accuracy, or a number in [0, 1] (paper 0.5)."""

    @model_validator(mode="after")
    def _check(self) -> RandomRewardConfig:
        if isinstance(self.rate, float) and not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"random_reward.rate must be in [0, 1] or 'matched', got {self.rate}")
        return self


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
"""The experiment trackers ``report_to`` names (TRL's names); ``neggrad.trackers`` writes to them."""


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

    @model_validator(mode="after")
    def _data_and_reward(self) -> Config:
        data = self.data
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
        if data.source is not None and self.task.name != "arithmetic":
            raise ValueError(
                f"task.name {self.task.name!r} is a built-in prompt source and data.source names another: "
                "keep one of them"
            )
        if self.task.name == "word_problems" and self.model.name_or_path == "testbed" and data.source is None:
            raise ValueError(
                "task.name 'word_problems': word problems need a pretrained chat model (model.name_or_path: a hub "
                "id, a folder or pkg://...); the built-in testbed model reads only 'Q: 37+45-18=' prompts"
            )
        self.feedback.resolve_step_split(self.prompt_source)
        if self.feedback.enabled:
            self.feedback.check_oracle(self.prompt_source)
        if self.reward.kind == "auto":
            self.reward.kind = (
                "math" if data.source else {"word_problems": "integer"}.get(self.task.name, "arithmetic")
            )
        elif self.reward.kind == "arithmetic" and self.task.name == "word_problems":
            raise ValueError(
                "reward.kind 'arithmetic' reads the testbed's 'A: <integer>' answers; word problems end in "
                "\\boxed{n}: use reward.kind: integer (the default) or math"
            )
        elif self.reward.kind == "arithmetic" and data.source:
            raise ValueError(
                "reward.kind 'arithmetic' reads the testbed's 'A: <integer>' answers, not data.source's: "
                "use reward.kind: math (or your own function)"
            )
        return self

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
    def _feedback_composition(self) -> Config:
        # docs/algorithms.md §10.3: the partial rewards act through group statistics over wrong answers
        judged = self.feedback.enabled or self.zero_variance.all_wrong == "judge"  # the judge strategy turns it on
        if judged and (self.advantage_estimator not in ("grpo", "rloo", "ngrpo") or self.clamp_negative_advantages):
            key = "feedback.enabled" if self.feedback.enabled else "zero_variance.all_wrong=judge"
            off = "set feedback.enabled: false" if self.feedback.enabled else "choose another zero_variance.all_wrong"
            raise ValueError(
                f"{key} needs a method whose advantages use the group's rewards and keep wrong answers "
                f"(grpo, dr_grpo, dapo, rloo, ngrpo); method {self.method!r} (advantage_estimator "
                f"{self.advantage_estimator!r}, clamp_negative_advantages {self.clamp_negative_advantages}) "
                f"ignores group statistics or discards wrong answers: {off} or change the method"
            )
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
        self._frontier()
        from neggrad import strategies  # noqa: PLC0415 (strategies import this module)

        strategies.check(self)  # the active strategies' requirements and declared conflicts
        testbed = self.model.name_or_path == "testbed"
        if self.sft.enabled is None:
            self.sft.enabled = testbed
        elif self.sft.enabled and not testbed:
            raise ValueError(
                f"sft.enabled is the testbed model's warm start; model.name_or_path {self.model.name_or_path!r} is "
                "pretrained: remove sft.enabled (or set it false)"
            )
        return self

    def _frontier(self) -> None:
        """Combinations of the wrong-answer options (docs/algorithms.md §5.4): one strategy per group kind, exclusive
        options refused."""
        zv = self.zero_variance
        if self.policy_loss == "cispo":
            if self.epsilon_high is None or self.epsilon_high <= 1.0:
                raise ValueError(
                    f"policy_loss cispo caps the importance weight at epsilon_high (TRL semantics, an absolute cap, "
                    f"not a clip width): set epsilon_high > 1, e.g. 5.0 (got {self.epsilon_high})"
                )
            if self.importance_sampling_level != "token":
                raise ValueError("policy_loss cispo and importance_sampling_level sequence (GSPO) exclude each other")
        drops = {"zero_std": ("all_wrong", "all_correct"), "all_correct": ("all_correct",)}.get(self.group_filter, ())
        for kind, strategy in (("all_wrong", zv.all_wrong), ("all_correct", zv.all_correct)):
            if strategy not in ("preset", "keep", "drop") and kind in drops:
                raise ValueError(
                    f"zero_variance.{kind}={strategy} conflicts with group_filter={self.group_filter}, which drops "
                    f"{kind.replace('_', '-')} groups first: set group_filter none (or all_correct), or another "
                    "strategy"
                )
        if zv.all_wrong == "judge":  # the judge strategy is the feedback section: it turns it on
            if not self.feedback.enabled and "enabled" in self.feedback.model_fields_set:
                raise ValueError(
                    "zero_variance.all_wrong=judge gives all-wrong groups the judge's partial rewards, which "
                    "feedback.enabled: false turns off: remove feedback.enabled (or set it true)"
                )
            self.feedback.enabled = True
            self.feedback.check_oracle(self.prompt_source)
        elif self.feedback.enabled and zv.all_wrong not in ("preset", "keep"):
            raise ValueError(
                f"feedback.enabled (the judge owns all-wrong groups) conflicts with zero_variance.all_wrong="
                f"{zv.all_wrong}: one strategy per group kind"
            )


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


RESUME_KEYS = (
    "max_steps",
    "eval_steps",
    "eval_avg_k",
    "save_steps",
    "save_total_limit",
    "num_samples_logged",
    "report_to",
    "budget.samples",
    "budget.tokens",
    "budget.seconds",
    "budget.eval_every",
    "lld.probe_every",
    "model.gradient_checkpointing",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
)
"""Keys ``neggrad train --resume RUN key=value`` may change: the budget (max_steps, budget.*), the evaluation,
checkpoint and logging cadence, and memory-only settings (the micro-batch split only with the same completions per
optimizer step). None changes what was already trained; every other key is refused."""


def config_changes(old: Config, new: Config) -> dict[str, list]:
    """``{dotted key: [old value, new value]}`` of every leaf that differs between two configs."""

    def flat(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out

    before, after = flat(old.model_dump(mode="json")), flat(new.model_dump(mode="json"))
    return {key: [before.get(key), after.get(key)] for key in {**before, **after} if before.get(key) != after.get(key)}


def check_resume_changes(changes: dict[str, list], old: Config, new: Config) -> None:
    """Raise ConfigError unless every change of a resumed run's config is one of RESUME_KEYS (and the micro-batch
    split keeps the completions per optimizer step)."""
    refused = [key for key in changes if key not in RESUME_KEYS]
    if refused:
        raise ConfigError(
            f"--resume cannot change {', '.join(refused)}: it would change what was already trained; "
            f"keys that may change: {', '.join(RESUME_KEYS)}"
        )
    per_step = [c.per_device_train_batch_size * c.gradient_accumulation_steps for c in (old, new)]
    if per_step[0] != per_step[1]:
        raise ConfigError(
            f"--resume may split the batch differently but not resize it: per_device_train_batch_size * "
            f"gradient_accumulation_steps must stay {per_step[0]} (got {per_step[1]})"
        )
