"""Config sections of the wrong-answer options: NGRPO, W-REINFORCE, NTHR, LLD, the zero-variance
strategies (RL-ZVP, LENS, hints, random rewards), THR and LLDS."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from neggrad.config.base import _Section


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
