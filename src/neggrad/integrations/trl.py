"""neggrad inside TRL: a ``GRPOTrainer`` whose advantages, NTHR, judge feedback and loss are neggrad's core.

    from trl import GRPOConfig
    from neggrad.integrations.trl import NeggradConfig, NeggradGRPOTrainer, preset

    neggrad_config, grpo_kwargs = preset("ngrpo")            # or NeggradConfig(advantage_estimator="ngrpo", ...)
    args = GRPOConfig(output_dir="out", num_generations=8, **grpo_kwargs)
    trainer = NeggradGRPOTrainer(model=..., reward_funcs=[correct], args=args, train_dataset=...,
                                 neggrad_config=neggrad_config)
    trainer.train()

TRL keeps generation, reward functions, batching, the optimizer and logging. Four methods are overridden
(TRL 1.16's private API, hence the pinned range ``TRL_SUPPORTED``), and every formula is a ``neggrad.core``
function, never a copy:

- ``_calculate_rewards`` keeps the scored batch (prompts, completions, per-function rewards).
- ``_generate_and_score_completions`` replaces TRL's advantages with ``group_advantages`` (docs/algorithms.md §2)
  after judge repair of all-wrong groups (``repair_all_wrong``, docs/algorithms.md §10), then NTHR
  (``nthr_group`` / ``scale_token_advantages``, docs/algorithms.md §7) makes them (B, T) token advantages, and stores
  the step's loss denominators (docs/algorithms.md §4).
- ``_get_per_token_logps_and_entropies`` (TRL's old-policy and reference passes) and ``_compute_loss`` run
  the model through ``neggrad.models.policy.completion_forward``, the same forward as neggrad's own trainer:
  position ids that count real tokens, as ``generate`` does, so left-padded prompts get ratio 1 on the first
  pass. The loss is ``clipped_surrogate`` (or ``logp_policy_loss``) + ``beta * kl_penalty`` -
  ``entropy_coef * token_entropy``, reduced by ``aggregate_loss``.

NTHR costs **one extra no-grad forward** over each generation batch, with the LM-head pre-hook of
``completion_forward`` catching the hidden states. TRL's own passes cannot serve: its training forward sees
shuffled micro-batches that split groups, and its fused LM head never materialises the logits or calls the
head module. The selection is made once per generation batch, from the policy that sampled it, and stays
fixed across ``num_iterations`` and ``steps_per_generation`` (docs/algorithms.md §7.3).

Not available here: group filtering with refill and the overlong penalty (neggrad's sampler does them; in
TRL, all-correct and all-wrong groups stay in the batch with the advantages their estimator gives them),
vLLM importance correction (vLLM generation with ``vllm_importance_sampling_correction=False`` is allowed,
untested here), sequence-level importance sampling, tools, multimodal inputs, entropy masking,
off-policy masking, TRL loss types other than grpo / dapo / dr_grpo. The trainer refuses them at start-up.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from neggrad.config import NTHR_ESTIMATORS, FeedbackConfig, NGRPOConfig, NTHRConfig, WReinforceConfig
from neggrad.config.presets import PRESETS
from neggrad.core.advantages import group_advantages, trained_rows
from neggrad.core.logprobs import token_logprobs
from neggrad.core.losses import (
    aggregate_loss,
    clipped_surrogate,
    kl_penalty,
    logp_policy_loss,
    step_denominators,
    token_entropy,
)
from neggrad.core.nthr import nthr_group, scale_token_advantages
from neggrad.core.shaping import REWARD_MAX
from neggrad.feedback.judge import Judge
from neggrad.feedback.repair import FeedbackStats, repair_all_wrong
from neggrad.models.policy import completion_forward
from neggrad.rollout.base import Rollout

try:
    import trl
    from accelerate.utils import gather_object
    from trl import GRPOTrainer
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"neggrad.integrations.trl needs TRL ({err}): pip install 'neggrad[trl]'") from err

logger = logging.getLogger(__name__)

TRL_SUPPORTED = ("1.16", "1.17")
"""Tested TRL versions: >= the first, < the second (the overridden methods are TRL's private API)."""

LOSS_TYPES = ("grpo", "dapo", "dr_grpo")
"""TRL ``loss_type`` values that name a neggrad aggregation (docs/algorithms.md §4)."""


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


if not _version_tuple(TRL_SUPPORTED[0]) <= _version_tuple(trl.__version__) < _version_tuple(TRL_SUPPORTED[1]):
    logger.warning(
        "neggrad.integrations.trl is tested with trl>=%s,<%s, found %s: it overrides private GRPOTrainer methods, "
        "so run tests/integrations/test_trl.py before trusting it",
        *TRL_SUPPORTED,
        trl.__version__,
    )


class NeggradConfig(BaseModel):
    """What TRL's ``GRPOConfig`` lacks; every other setting is TRL's and keeps TRL's name.

    Read from ``GRPOConfig``: ``num_generations``, ``epsilon``, ``epsilon_high``, ``beta`` (k3 by default),
    ``loss_type`` (grpo, dapo, dr_grpo), ``scale_rewards``, ``temperature``, ``max_completion_length``,
    ``mask_truncated_completions``, ``entropy_coef``.
    """

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)

    advantage_estimator: Literal["grpo", "rloo", "ngrpo", "psr", "nsr", "w_reinforce", "raft", "reinforce_rej"] = (
        "grpo"
    )
    """Sequence advantage (neggrad.core.advantages.ESTIMATORS); grpo honours GRPOConfig.scale_rewards."""
    clamp_negative_advantages: bool = False
    """Pos Only (arXiv:2505.18830 Sec. 3): negative advantages become 0; grpo only."""
    reward_scheme: Literal["binary", "pm1"] = "binary"
    """What your correctness reward returns: binary 1 / 0 or pm1 +1 / -1. Sets NGRPO's default virtual reward
    and maps judged partial rewards to -1 + 2r under pm1."""
    correctness_reward: str | None = None
    """Name of the reward function (as TRL names it: the function's __name__) whose value says whether a
    completion is correct; null: the first reward function. Correctness drives psr / nsr / w_reinforce / raft,
    NTHR and judge feedback; the advantage itself uses TRL's weighted sum of all reward functions."""
    correct_threshold: float = 0.5
    """A completion is correct iff its correctness reward is above this (0.5 fits 1/0 and +1/-1)."""
    policy_loss: Literal["clipped", "logp"] = "clipped"
    """clipped: PPO ratio surrogate; logp: -A * log-prob, no ratio (RAFT)."""
    dual_clip: float | None = Field(None, gt=1)
    """Dual clip constant c for negative advantages (off when null; RAFT++ and Reinforce-Rej use 3)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """Per-token KL estimator for GRPOConfig.beta > 0 (Schulman's k1/k2/k3)."""
    ngrpo: NGRPOConfig = Field(default_factory=NGRPOConfig)
    """NGRPO calibration: virtual max-reward samples (advantage_estimator ngrpo)."""
    w_reinforce: WReinforceConfig = Field(default_factory=WReinforceConfig)
    """W-REINFORCE's weight of a correct completion."""
    nthr: NTHRConfig = Field(default_factory=NTHRConfig)
    """NTHR token re-weighting (one extra no-grad forward per generation batch)."""
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    """Step-wise judge feedback for all-wrong groups. The judge reads the dataset column named by
    reference_column as the reference solution and the prompt as the problem."""
    reference_column: str = "answer"
    """Dataset column shown to the judge as the reference solution (feedback.enabled)."""

    @model_validator(mode="after")
    def _check(self) -> NeggradConfig:
        if self.clamp_negative_advantages and self.advantage_estimator != "grpo":
            raise ValueError(
                f"clamp_negative_advantages needs advantage_estimator 'grpo', got {self.advantage_estimator!r}"
            )
        if self.nthr.enabled and (self.advantage_estimator not in NTHR_ESTIMATORS or self.policy_loss != "clipped"):
            raise ValueError(
                f"nthr works on top of the grpo, rloo and ngrpo estimators with the clipped loss, got "
                f"advantage_estimator={self.advantage_estimator!r}, policy_loss={self.policy_loss!r}"
            )
        _resolve_step_split(self.feedback)
        if self.nthr.enabled and self.nthr.control != "none":
            raise ValueError("nthr.control 'random' is a study arm of neggrad's own trainer: set nthr.control: none")
        if self.feedback.enabled and (
            self.advantage_estimator not in NTHR_ESTIMATORS or self.clamp_negative_advantages
        ):
            raise ValueError(
                "feedback.enabled needs an estimator that uses the group's rewards and keeps wrong answers "
                f"(grpo, rloo, ngrpo without clamp_negative_advantages), got {self.advantage_estimator!r}"
            )
        return self


def _resolve_step_split(feedback: FeedbackConfig) -> None:
    """An unset ``feedback.step_split``: the testbed's rule for the oracle judge (it checks the arithmetic
    testbed's answers), one step per line for any other judge (a data set's answers)."""
    feedback.resolve_step_split("arithmetic" if feedback.judge == "oracle" else "data")


def preset(method: str) -> tuple[NeggradConfig, dict[str, Any]]:
    """A neggrad method (``neggrad methods``) as a ``NeggradConfig`` and the ``GRPOConfig`` keyword arguments.

    Group filtering, refill and the overlong penalty have no TRL counterpart and are left out; a method whose
    advantages need the filter (reinforce_rej: A = r would train zero-variance groups) is refused.
    """
    if method not in PRESETS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(PRESETS)}")
    values = PRESETS[method].values
    if method == "reinforce_rej":
        raise ValueError("reinforce_rej needs group_filter zero_std, which TRL cannot apply: use neggrad train")
    ours = {k: values[k] for k in NeggradConfig.model_fields if k in values}
    grpo = {k: values[k] for k in ("epsilon", "epsilon_high", "loss_type", "scale_rewards", "beta", "entropy_coef")}
    if grpo["epsilon_high"] is None:
        del grpo["epsilon_high"]
    return NeggradConfig.model_validate(ours), grpo


def _rollout(prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor, completion_mask: Tensor) -> Rollout:
    """TRL's batch tensors as the ``Rollout`` that ``completion_forward`` reads (texts are not needed)."""
    truncated = torch.zeros(completion_ids.shape[0], dtype=torch.bool)
    return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, truncated, [""] * len(completion_ids))


class NeggradGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` with neggrad's advantages, NTHR, judge feedback and loss (see the module docstring).

    Args:
        *args, **kwargs: those of ``trl.GRPOTrainer``.
        neggrad_config: the neggrad settings; default ``NeggradConfig()`` (GRPO advantages, no NTHR, no judge).
        judge: any ``neggrad.feedback.judge.Judge``; default the one ``neggrad_config.feedback`` names.
    """

    def __init__(self, *args, neggrad_config: NeggradConfig | None = None, judge: Judge | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.neggrad = neggrad_config or NeggradConfig()
        _resolve_step_split(self.neggrad.feedback)  # also when the section was assigned after validation
        self._check_supported()
        if judge is None and self.neggrad.feedback.enabled:
            from neggrad.feedback.build import judge_for

            judge = judge_for(self.neggrad.feedback)
        self.judge = judge
        names = list(self.reward_func_names)
        wanted = self.neggrad.correctness_reward
        if wanted is not None and wanted not in names:
            raise ValueError(f"correctness_reward {wanted!r} is not a reward function of this trainer: {names}")
        self._correct_column = names.index(wanted) if wanted is not None else 0
        self._scored: tuple | None = None

    def _check_supported(self) -> None:
        args = self.args
        problems = {
            "loss_type": (self.loss_type not in LOSS_TYPES, f"one of {LOSS_TYPES}"),
            "vllm_importance_sampling_correction": (
                self.use_vllm and self.vllm_importance_sampling_correction,
                "False (neggrad's loss has no vLLM importance correction; vLLM generation itself is fine)",
            ),
            "importance_sampling_level": (self.importance_sampling_level != "token", '"token"'),
            "top_entropy_quantile": (self.top_entropy_quantile < 1.0, "1.0"),
            "off_policy_mask_threshold": (self.off_policy_mask_threshold is not None, "None"),
            "delta": (getattr(args, "delta", None) is not None, "None"),
            "use_adaptive_entropy": (getattr(self, "use_adaptive_entropy", False), "False"),
            "tools": (bool(self.tools), "no tools"),
            "multi_objective_aggregation": (self.multi_objective_aggregation != "sum_then_normalize", "the default"),
        }
        bad = [f"{key} (set it to {fix})" for key, (wrong, fix) in problems.items() if wrong]
        if bad:
            raise ValueError(f"NeggradGRPOTrainer does not support these GRPOConfig settings: {', '.join(bad)}")

    # ---- scoring and advantages

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._scored = (inputs, prompts, completions, rewards_per_func)
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        local_inputs, prompts, completions, rewards_per_func = self._scored
        self._scored = None
        mode = "train" if self.model.training else "eval"
        G = self.num_generations if mode == "train" else self.num_generations_eval
        cfg = self.neggrad
        rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device)).nansum(dim=1).float().cpu()
        correct = (rewards_per_func[:, self._correct_column] > cfg.correct_threshold).cpu()  # NaN -> wrong
        rewards, correct = rewards.view(-1, G), correct.view(-1, G)  # (P, G) over every process
        if cfg.feedback.enabled:
            rewards = self._judge_all_wrong(rewards, correct, local_inputs, prompts, completions, mode)
        virtual = cfg.ngrpo.virtual_reward
        seq_adv = group_advantages(
            rewards,
            method=cfg.advantage_estimator,
            correct=correct,
            scale_rewards=self.scale_rewards if cfg.advantage_estimator == "grpo" else "group",
            clamp_negative_advantages=cfg.clamp_negative_advantages,
            num_virtual=cfg.ngrpo.num_virtual,
            virtual_reward=REWARD_MAX[cfg.reward_scheme] if virtual is None else virtual,
            positive_weight=cfg.w_reinforce.positive_weight,
        )  # (P, G)
        rows = trained_rows(correct, method=cfg.advantage_estimator)  # (P, G)
        self._replace_logged_advantages(seq_adv.view(-1))
        first = self.accelerator.process_index * len(prompts)
        local = slice(first, first + len(prompts))  # this process's rows of the gathered batch
        device = out["completion_mask"].device
        seq_adv_local = seq_adv.view(-1)[local].to(device)  # (b,)
        rows_local = rows.view(-1)[local].to(device)  # (b,)
        out["advantages"] = seq_adv_local
        if cfg.nthr.enabled:
            out["advantages"] = self._nthr(out, seq_adv_local, correct.view(-1)[local], G, mode)  # (b, T)
        out["neggrad_trained"] = rows_local.float()
        mask = out["completion_mask"] * rows_local[:, None]  # (b, T)
        num_sequences, num_tokens = step_denominators(mask)
        totals = self.accelerator.reduce(torch.tensor([num_sequences, num_tokens], device=device), reduction="sum")
        out["neggrad_num_sequences"], out["neggrad_num_tokens"] = totals[0].float(), totals[1].float()  # 0-dim
        return out

    def _judge_all_wrong(self, rewards: Tensor, correct: Tensor, local_inputs, prompts, completions, mode) -> Tensor:
        """(P, G) rewards with those of all-wrong groups replaced by judged partial rewards
        (docs/algorithms.md §10.3)."""
        G = rewards.shape[1]
        column = self.neggrad.reference_column
        if column not in local_inputs[0]:
            raise ValueError(
                f"feedback needs the reference solution in dataset column {column!r}; the dataset has "
                f"{sorted(local_inputs[0])}: set NeggradConfig.reference_column"
            )
        texts = gather_object(list(completions))
        problems = [p if isinstance(p, str) else p[-1]["content"] for p in gather_object(list(prompts))[::G]]
        references = [str(x[column]) for x in gather_object(list(local_inputs))[::G]]
        stats = FeedbackStats()
        repair = repair_all_wrong(
            self.judge,
            correct,
            problems,
            references,
            texts,
            cfg=self.neggrad.feedback,
            reward_scheme=self.neggrad.reward_scheme,
            stats=stats,
        )
        for key, value in stats.metrics().items():
            if not isinstance(value, list):
                self._metrics[mode][key].append(float(value))
        return torch.where(repair.repaired[:, None], repair.rewards, rewards)  # (P, G)

    def _replace_logged_advantages(self, seq_adv: Tensor) -> None:
        """The completions table shows the advantages that were trained on, not TRL's."""
        logged = self._logs["advantages"]
        for _ in range(min(len(seq_adv), len(logged))):
            logged.pop()
        logged.extend(seq_adv.tolist())

    @torch.no_grad()
    def _nthr(self, out: dict, seq_adv: Tensor, correct: Tensor, G: int, mode: str) -> Tensor:
        """(b, T) token advantages: NTHR on each mixed group, from one extra no-grad forward
        (docs/algorithms.md §7)."""
        b = len(seq_adv)
        if b % G:
            raise ValueError(
                f"NTHR needs whole groups on each process, but this process holds {b} completions for "
                f"num_generations={G}: make per_device_train_batch_size * steps_per_generation a multiple of G"
            )
        opt, model = self.neggrad.nthr, self.accelerator.unwrap_model(self.model)
        mask = out["completion_mask"]  # (b, T)
        token_adv = seq_adv[:, None].expand_as(mask).float().clone()  # (b, T)
        chunk = max(G, self.args.per_device_train_batch_size - self.args.per_device_train_batch_size % G)
        selected_tokens, wrong_tokens, groups = 0.0, 0.0, 0
        for start in range(0, b, chunk):
            stop = min(start + chunk, b)
            part = slice(start, stop)
            ids = out["completion_ids"][part]
            rollout = _rollout(out["prompt_ids"][part], out["prompt_mask"][part], ids, mask[part])
            logits, hidden = completion_forward(model, rollout, return_hidden=True)  # (c, T, V), (c, T, H)
            for g0 in range(0, stop - start, G):
                rows = slice(start + g0, start + g0 + G)
                result = nthr_group(
                    logits[g0 : g0 + G],
                    hidden[g0 : g0 + G],
                    out["completion_ids"][rows],
                    mask[rows],
                    correct[rows],
                    beta=opt.beta,
                    eta=opt.eta,
                    vocab=opt.vocab,
                    anchor_include_self=opt.anchor_include_self,
                    temperature=self.temperature,
                    chunk_tokens=opt.chunk_tokens,
                    chunk_vocab=opt.chunk_vocab,
                )
                if result is None:
                    continue
                token_adv[rows] = scale_token_advantages(token_adv[rows], result.selected, result.eta)
                groups += 1
                selected_tokens += float(result.selected.sum())
                wrong_tokens += float((mask[rows] * (~correct[rows]).to(mask.device)[:, None]).sum())
        self._metrics[mode]["nthr/groups"].append(groups)
        self._metrics[mode]["nthr/selected_frac"].append(selected_tokens / wrong_tokens if wrong_tokens else 0.0)
        return token_adv

    # ---- forward passes and loss

    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, **extra
    ):
        """TRL's old-policy / reference pass, through neggrad's forward (positions as in ``generate``)."""
        if extra.pop("compute_aux_loss", False) or any(value is not None for value in extra.values()):
            raise ValueError("NeggradGRPOTrainer supports text-only models without MoE aux loss")
        T, n = logits_to_keep, input_ids.shape[0]
        batch_size = batch_size or n
        logps, entropies = [], []
        for start in range(0, n, batch_size):
            part = slice(start, start + batch_size)
            ids, attn = input_ids[part], attention_mask[part]
            with self.accelerator.autocast():
                logits, _ = completion_forward(model, _rollout(ids[:, :-T], attn[:, :-T], ids[:, -T:], attn[:, -T:]))
            logps.append(token_logprobs(logits, ids[:, -T:], temperature=self.temperature))  # (c, T)
            if compute_entropy:
                entropies.append(token_entropy(logits / self.temperature))
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None

    def _step_denominators(self, inputs: dict, mode: str) -> tuple[int, int]:
        """The optimizer step's (S, tokens) from the generation batch's, as each process's share under DDP.

        One optimizer step covers ``gradient_accumulation_steps / steps_per_generation`` generation batches
        (exact when they are equal, TRL's default; otherwise the generation batch's counts stand in for the
        step's, as TRL's own dapo normaliser does). DDP averages gradients, so each process divides its sum
        by the global count over the number of processes.
        """
        scale = 1.0 / self.accelerator.num_processes
        if mode == "train":
            scale *= self.args.gradient_accumulation_steps / self.args.steps_per_generation

        def share(total: Tensor) -> int:
            value = float(total) * scale
            return max(1, round(value)) if value > 0 else 0

        return share(inputs["neggrad_num_sequences"]), share(inputs["neggrad_num_tokens"])

    def _compute_loss(self, model, inputs):
        cfg, mode = self.neggrad, "train" if self.model.training else "eval"
        ids = inputs["completion_ids"]
        rollout = _rollout(inputs["prompt_ids"], inputs["prompt_mask"], ids, inputs["completion_mask"])
        with self.accelerator.autocast():
            logits, _ = completion_forward(model, rollout)  # (b, T, V)
        logp = token_logprobs(logits, ids, temperature=self.temperature)  # (b, T)
        mask = inputs["completion_mask"].float() * inputs["neggrad_trained"][:, None]  # (b, T)
        adv = inputs["advantages"]
        token_adv = adv[:, None].expand_as(logp) if adv.dim() == 1 else adv  # (b, T)
        old = inputs.get("old_per_token_logps")
        old = logp.detach() if old is None else old
        if cfg.policy_loss == "logp":
            token_loss, clip = logp_policy_loss(logp, token_adv), {}
        else:
            token_loss, clip = clipped_surrogate(
                logp, old, token_adv, epsilon=self.epsilon_low, epsilon_high=self.epsilon_high, dual_clip=cfg.dual_clip
            )
        if self.beta != 0.0:
            kl = kl_penalty(logp, inputs["ref_per_token_logps"], estimator=cfg.kl_estimator)  # (b, T)
            token_loss = token_loss + self.beta * kl
            self._metrics[mode]["kl"].append(self._masked_mean(kl, mask))
        entropy_coef = getattr(self, "entropy_coef", 0.0) or 0.0
        with torch.set_grad_enabled(entropy_coef > 0 and torch.is_grad_enabled()):
            entropy = token_entropy(logits / self.temperature)  # (b, T)
        if entropy_coef > 0:
            token_loss = token_loss - entropy_coef * entropy
        num_sequences, num_tokens = self._step_denominators(inputs, mode)
        if num_tokens == 0:  # every row dropped (PSR / NSR on a batch without such rows): no gradient
            return (logp * 0.0).sum()
        loss = aggregate_loss(
            token_loss,
            mask,
            loss_type=self.loss_type,
            num_sequences=num_sequences,
            num_tokens=num_tokens,
            max_completion_length=self.max_completion_length,
        )
        self._metrics[mode]["entropy"].append(self._masked_mean(entropy.detach(), mask))
        names = {"low": "clip_ratio/low_mean", "high": "clip_ratio/high_mean", "dual": "clip_ratio/dual_mean"}
        for key, name in names.items():
            if key in clip:
                self._metrics[mode][name].append(self._masked_mean(clip[key].float(), mask))
        return loss

    def _masked_mean(self, values: Tensor, mask: Tensor) -> float:
        totals = self.accelerator.reduce(torch.stack([(values * mask).sum(), mask.sum()]).detach(), reduction="sum")
        return float(totals[0] / totals[1].clamp(min=1.0))
