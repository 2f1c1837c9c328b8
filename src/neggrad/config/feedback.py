"""Config section of the step-wise judge (``feedback``): oracle, local model or HTTP endpoint, noise."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from neggrad.config.base import _Section


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
    credit_truncated: bool = True
    """Partial credit for answers cut at max_completion_length. true (SGPO as written): a cut answer's correct
    steps earn credit like any other's. false: a cut answer keeps the wrong-answer reward (0, or -1 under pm1).
    On SmolLM2 the credit for cut answers was gamed: listing easy true steps without ever answering, every
    completion ran to the length cap within 2 steps and accuracy fell to 0 (results/real_smollm2_study, seed 1)."""
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
