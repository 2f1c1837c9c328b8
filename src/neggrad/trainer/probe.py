"""The paper's LLD probe: one update on one group from a fixed start, and what it did to the correct answers.

Deng et al. 2025, arXiv:2505.18830, Fig. 1 and 4 (docs/algorithms.md §6.2): for each probe prompt with a
mixed group sampled once from theta_0, reset to theta_0, do one update on that group alone and report
Delta(x) = mean over its correct responses of ln pi_after(y+|x) - ln pi_before(y+|x). Variants:
``grpo``, ``pos_only``, ``nthr`` (beta 1, eta 0) and ``random`` (per wrong response, as many random tokens
as NTHR chose there lose their penalty); ``nthr_beta0`` / ``random_beta0`` the same with beta 0 (every
token with a positive score). The update is one step of a fresh AdamW with the run's learning
rate, weight decay, gradient clip and ``loss_type`` [neggrad choice; the paper gives no probe optimizer].
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from neggrad.config import Config
from neggrad.core.logprobs import token_logprobs
from neggrad.core.shaping import scheme_rewards
from neggrad.models.policy import completion_logits
from neggrad.rollout.base import Rollout
from neggrad.trainer.batch import TrainBatch, sequence_advantages
from neggrad.trainer.update import UpdateResult, policy_update

VARIANTS: dict[str, dict] = {
    "grpo": {},
    "pos_only": {"clamp_negative_advantages": True},
    "nthr": {"nthr": {"enabled": True, "beta": 1.0, "eta": 0.0}},
    "random": {"nthr": {"enabled": True, "beta": 1.0, "eta": 0.0, "control": "random"}},
    "nthr_beta0": {"nthr": {"enabled": True, "beta": 0.0, "eta": 0.0}},
    "random_beta0": {"nthr": {"enabled": True, "beta": 0.0, "eta": 0.0, "control": "random"}},
    "nthr_batch": {"nthr": {"enabled": True, "beta": 1.0, "eta": 0.0, "scope": "batch"}},
}
"""Probe variants as config changes on top of the run's config (docs/algorithms.md §6.2)."""


def rollout_from_ids(prompts: list[list[int]], completions: list[list[int]], pad_token_id: int) -> Rollout:
    """A Rollout from token ids: prompts left-padded, completions (EOS included) right-padded."""
    tp = max(len(p) for p in prompts)
    t = max(len(c) for c in completions)
    rows = len(prompts)
    prompt_ids = torch.full((rows, tp), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((rows, tp), dtype=torch.long)
    completion_ids = torch.full((rows, t), pad_token_id, dtype=torch.long)
    completion_mask = torch.zeros((rows, t), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        prompt_ids[i, tp - len(p) :] = torch.tensor(p)
        prompt_mask[i, tp - len(p) :] = 1
        completion_ids[i, : len(c)] = torch.tensor(c)
        completion_mask[i, : len(c)] = 1
    return Rollout(
        prompt_ids, prompt_mask, completion_ids, completion_mask, torch.zeros(rows, dtype=torch.bool), [""] * rows
    )


def group_batch(
    config: Config, rollout: Rollout, correct: torch.Tensor, prompts: list[str] | None = None
) -> TrainBatch:
    """A TrainBatch of whole groups (rows of ``rollout`` in groups of G) with the config's advantages."""
    G = config.num_generations
    c = correct.bool().view(-1, G)  # (P, G)
    rewards = scheme_rewards(c, reward_scheme=config.reward_scheme)
    adv = sequence_advantages(config, rewards, c)  # (P, G)
    P = c.shape[0]
    return TrainBatch(
        rollout=rollout,
        prompts=prompts or [""] * P,
        answers=[""] * P,
        correct=c.reshape(-1),
        rewards=rewards.reshape(-1).float(),
        seq_adv=adv.reshape(-1).float(),
        rows=torch.ones(P * G, dtype=torch.bool),
        stats={},
    )


def variant_config(config: Config, variant: str) -> Config:
    """``config`` with a probe variant applied (and LLD on, without the probe set)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown probe variant {variant!r}: choose from {', '.join(VARIANTS)}")
    change = copy.deepcopy(VARIANTS[variant])
    nthr = {**config.nthr.model_dump(), **change.pop("nthr", {"enabled": False})}
    lld = {**config.lld.model_dump(), "enabled": True, "probe_size": 0}
    update = {"nthr": type(config.nthr)(**nthr), "lld": type(config.lld)(**lld), **change}
    return config.model_copy(update=update)


def one_step(config: Config, model, rollout: Rollout, correct: torch.Tensor, variant: str = "grpo") -> UpdateResult:
    """One update of a copy of ``model`` on these groups with a fresh AdamW; ``model`` is untouched.

    Returns the update's result: ``metrics["lld/delta_seq_mean"]`` is the probe's Delta(x) when the
    rows are one group.
    """
    cfg = variant_config(config, variant)
    work = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(
        work.parameters(), lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    batch = group_batch(cfg, rollout, correct)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return policy_update(cfg, work, optimizer, scheduler, batch)


class ProbeSet:
    """docs/algorithms.md §6.3: fixed (prompt, correct completion) pairs from held-out prompts, tracked over training.

    Built once at step 0 (one sampled completion per held-out prompt, the correct ones kept, up to
    ``lld.probe_size``) and saved to ``RUN_DIR/lld_probe.json`` with each pair's step-0 log-likelihood,
    so a resumed run measures against the same baseline.
    """

    FILE = "lld_probe.json"

    def __init__(self, prompts: list[list[int]], completions: list[list[int]], base_logp: list[float], pad: int):
        self.prompts, self.completions, self.base_logp, self.pad = prompts, completions, base_logp, pad

    @classmethod
    def build(cls, config: Config, engine, task, eval_set) -> ProbeSet:
        size = config.lld.probe_size
        examples = list(eval_set)[: 4 * size]
        with torch.random.fork_rng(devices=[]):  # the training RNG stream does not see the probe
            torch.manual_seed(config.seed + 7919)
            rollout = engine.generate([e.prompt for e in examples], num_generations=1)
        correct = task.score(rollout.texts, [e.answer for e in examples])
        keep = [i for i, ok in enumerate(correct) if ok][:size]
        prompts = [rollout.prompt_ids[i][rollout.prompt_mask[i].bool()].tolist() for i in keep]
        completions = [rollout.completion_ids[i][rollout.completion_mask[i].bool()].tolist() for i in keep]
        pad = engine.tokenizer.pad_token_id
        probe = cls(prompts, completions, [], pad)
        probe.base_logp = probe.logp(engine.model, config).tolist()
        return probe

    def logp(self, model, config: Config) -> torch.Tensor:
        """(N,) sequence log-likelihood of every pair under ``model`` (no grad, eval mode)."""
        if not self.prompts:
            return torch.zeros(0)
        rollout = rollout_from_ids(self.prompts, self.completions, self.pad)
        was_training = model.training
        model.eval()
        out = []
        device = next(model.parameters()).device
        with torch.no_grad():
            for idx in torch.arange(len(self.prompts)).split(config.per_device_train_batch_size):
                mb = rollout.select(idx).to(device)
                lp = token_logprobs(completion_logits(model, mb), mb.completion_ids, temperature=config.temperature)
                out.append((lp * mb.completion_mask.float()).sum(dim=1).cpu())
        model.train(was_training)
        return torch.cat(out)

    def metrics(self, model, config: Config) -> dict:
        """lld/probe/*: change against step 0, summed and per token, and the fraction now below step 0."""
        if not self.prompts:
            return {"lld/probe/count": 0}
        delta = self.logp(model, config) - torch.tensor(self.base_logp)  # (N,)
        tokens = torch.tensor([len(c) for c in self.completions], dtype=torch.float32)
        return {
            "lld/probe/count": len(self.prompts),
            "lld/probe/delta_seq_mean": float(delta.mean()),
            "lld/probe/delta_tok_mean": float((delta / tokens).mean()),
            "lld/probe/below_frac": float((delta < 0).float().mean()),
        }

    def save(self, run_dir) -> None:
        path = Path(run_dir) / self.FILE
        tmp = path.with_suffix(".tmp")
        data = {"prompts": self.prompts, "completions": self.completions, "base_logp": self.base_logp, "pad": self.pad}
        tmp.write_text(json.dumps(data))
        tmp.replace(path)

    @classmethod
    def load(cls, run_dir) -> ProbeSet | None:
        path = Path(run_dir) / cls.FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(data["prompts"], data["completions"], data["base_logp"], data["pad"])
