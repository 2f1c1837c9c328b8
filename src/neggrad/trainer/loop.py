"""The training loop: one visible call per stage of a GRPO step (DESIGN.md data flow).

    collect_batch  -> generate, score, group policy, advantages       (batch.py)
    policy_update  -> old-policy pass, clipped surrogate, optimizer   (update.py)
    evaluate       -> greedy pass@1 on the held-out set               (evaluate.py)
    save_checkpoint-> atomic, exact resume                            (checkpoint.py)

A run directory holds ``config.yaml``, ``metrics.jsonl``, ``samples/``, ``checkpoints/`` and, at the
end, ``summary.json``. Under ``torchrun`` / ``accelerate launch`` every process runs this loop on its own
groups and only rank 0 writes the run directory (distributed.py).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from neggrad.config import (
    Config,
    ConfigError,
    build_config,
    check_resume_changes,
    config_changes,
    dump_config,
    read_yaml,
)
from neggrad.core.groups import KINDS
from neggrad.feedback.build import close_judges
from neggrad.models.load import load_policy, reference_model
from neggrad.models.packed import check as check_packed
from neggrad.models.packed import refusal as packed_refusal
from neggrad.models.policy import linear_head
from neggrad.rollout import build_rollout
from neggrad.rollout.base import Rollout
from neggrad.rollout.hf import HFRollout
from neggrad.tasks.build import build_task
from neggrad.trainer.batch import TrainBatch, collect_batch
from neggrad.trainer.checkpoint import (
    SHARDS,
    CheckpointError,
    list_checkpoints,
    load_trainer_state,
    read_trainer_state,
    remove_stale_tmp,
    rng_state,
    save_checkpoint_or_explain,
    set_rng_state,
    shard_folder,
    shard_name,
    write_trainer_state,
)
from neggrad.trainer.distributed import Dist, GroupSeededRollout, full_parameters, gather_rows
from neggrad.trainer.evaluate import evaluate
from neggrad.trainer.metrics import MetricsWriter
from neggrad.trainer.probe import ProbeSet
from neggrad.trainer.trackers import Trackers, require
from neggrad.trainer.update import UpdateResult, policy_update

logger = logging.getLogger(__name__)

Callback = Callable[[str, dict], None]


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a NaN or infinite loss or gradient."""


class OutOfMemoryStop(RuntimeError):
    """The GPU ran out of memory: the message names where, what is intact and the settings to lower."""


CUDA_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
"""What torch raises when an allocation on the GPU fails (``torch.cuda.OutOfMemoryError`` is the same class)."""

clock = time.perf_counter
"""The run's wall clock (``elapsed_s``, ``budget/seconds``); tests replace it to spend a seconds budget at once."""

SPENT = {"samples": "spent_samples", "tokens": "spent_tokens", "seconds": "spent_seconds"}
"""Budget kind -> the trainer-state counter of what the run has spent of it (saved in checkpoints)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_lambda(config: Config, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at an optimizer step: linear warm-up over ``warmup_steps``, then
    transformers' schedule named ``lr_scheduler_type`` (``transformers.get_scheduler`` with ``lr_scheduler_kwargs``,
    planned for ``total_steps``).

    The warm-up is neggrad's, ``(step + 1) / (warmup_steps + 1)``, for every schedule (transformers' starts at rate
    0, and its ``constant`` has none): the first step already trains, and ``constant`` and ``cosine`` keep the rates
    of neggrad's earlier hand-written schedule. A ConfigError names a schedule argument that is missing or unknown.
    """
    from transformers import get_scheduler

    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.learning_rate)  # min_lr is relative to it
    try:
        named = get_scheduler(
            config.lr_scheduler_type,
            probe,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=total_steps,
            scheduler_specific_kwargs=dict(config.lr_scheduler_kwargs),
        )
    except (TypeError, ValueError) as err:
        given = f"lr_scheduler_type={config.lr_scheduler_type} with lr_scheduler_kwargs={config.lr_scheduler_kwargs}"
        raise ConfigError(f"{given}: {err}") from None
    after_warmup = named.lr_lambdas[0]

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        return after_warmup(step)

    return factor


class _StopFlag:
    """Set by SIGINT / SIGTERM: the loop finishes its step, saves a checkpoint and returns."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # second signal: stop now
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("interrupt received: finishing this step, then saving a checkpoint (again to abort)")

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """A GRPO-family run: ``setup()`` builds everything, ``train()`` runs the loop and returns the summary."""

    def __init__(self, config: Config, run_dir: str | Path, *, callback: Callback | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.callback = callback or (lambda event, data: None)
        self.trackers = Trackers()  # report_to: opened by rank 0 at the end of setup(), closed by train()

    # ------------------------------------------------------------------ setup
    def setup(self, *, resume: bool = False, trust_checkpoint: bool = False) -> None:
        """``trust_checkpoint``: read a checkpoint that holds code or pickles (an earlier neggrad's, or a
        ``trust_remote_code`` model's), which is refused otherwise; only for runs the user made."""
        cfg = self.config
        self.dist = dist = Dist.from_env()  # one process, or this one's rank under a launcher
        self.run_dir = Path(dist.broadcast(str(self.run_dir)))  # rank 0's folder (a default name holds a time)
        checkpoint = state = None
        if not resume and ((self.run_dir / "metrics.jsonl").exists() or (self.run_dir / "checkpoints").exists()):
            raise FileExistsError(
                f"{self.run_dir} already holds a run: resume it with --resume {self.run_dir}, "
                "or choose another --run-dir"
            )
        total = cfg.max_steps * cfg.num_iterations * cfg.steps_per_generation  # optimizer steps
        schedule = lr_lambda(cfg, total)  # a bad schedule argument, like a missing tracker, stops before loading
        if dist.is_main:
            require(cfg.report_to)  # a missing tracker package stops the run before the model loads
        dist.barrier()  # every process has looked before rank 0 writes
        if dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            checkpoint, state = self._checkpoint_to_resume(trust_checkpoint)
        with dist.main_first():  # rank 0 fills the caches (SFT warm start, downloads) the others then read
            self.model, self.tokenizer, self.policy_info = load_policy(
                cfg,
                checkpoint=checkpoint / "model" if checkpoint else None,
                progress=lambda d: self.callback("sft", d),
            )
        if cfg.logprob_chunk or (cfg.nthr.enabled and cfg.nthr.scope == "batch"):
            try:
                linear_head(self.model, "logprob_chunk" if cfg.logprob_chunk else "nthr.scope 'batch'")
            except ValueError as err:
                raise ConfigError(str(err)) from None
        self.ref_model = reference_model(self.model, cfg, resumed=checkpoint is not None) if cfg.beta > 0 else None
        if cfg.remove_padding:
            self._decide_remove_padding(cfg)
        self.task = build_task(cfg, tokenizer=self.tokenizer)
        self.eval_set = self.task.eval_examples()
        self.engine = build_rollout(self.model, self.tokenizer, cfg)  # rollout.backend: hf or vllm
        if dist.seeded_sampling and isinstance(self.engine, HFRollout):  # completions independent of N
            self.engine = GroupSeededRollout(self.engine, cfg.seed)
        dist.seeded_sampling = isinstance(self.engine, GroupSeededRollout)
        self.optimizer = _adamw(self.model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.optimizer = dist.prepare(self.model, self.optimizer)  # DDP / FSDP / ZeRO under a launcher
        seed_everything(cfg.seed + dist.rank)  # after the (cached or fresh) warm start, so both paths sample alike
        self.state = {
            "step": 0,
            "cursor": 0,
            "nonfinite_streak": 0,
            "elapsed_s": 0.0,
            "accuracy_before": None,
            "best_accuracy": None,
            **dict.fromkeys(SPENT.values(), 0),
        }
        if checkpoint is not None:
            self._load_optimizer(checkpoint, state)
            self.scheduler.load_state_dict(state["scheduler"])
            self._replan_lr()
            self._set_rng(state)
            self.state = {**dict.fromkeys(SPENT.values(), 0), **state["trainer"]}  # older checkpoints lack spent_*
            logger.info("resumed from %s (step %d)", checkpoint, self.state["step"])
        self.metrics = None
        if dist.is_main:
            (self.run_dir / "config.yaml").write_text(dump_config(cfg))
            (self.run_dir / "samples").mkdir(exist_ok=True)
            self.metrics = MetricsWriter(self.run_dir / "metrics.jsonl", keep_through_step=self.state["step"])
            resumed_step = self.state["step"] if checkpoint is not None else None
            self.trackers = Trackers.open(cfg, self.run_dir, resumed_step=resumed_step)

    def _decide_remove_padding(self, cfg: Config) -> None:
        """``remove_padding: true`` runs the packed forward or stops with why not; ``auto`` runs it where it can and
        says which. ``self.config`` then holds the decision (true / false); config.yaml keeps what the user gave."""
        launched = self.dist.accelerator is not None
        if cfg.remove_padding is True:
            try:
                check_packed(self.model, self.ref_model, launched=launched)
            except ValueError as err:
                raise ConfigError(str(err)) from None
            return
        why = packed_refusal(self.model, self.ref_model, launched=launched)
        logger.info("remove_padding auto: %s", f"off, since {why}" if why else "on (the packed forward)")
        self.config = cfg.model_copy(update={"remove_padding": why is None})

    def _checkpoint_to_resume(self, trust_checkpoint: bool) -> tuple[Path, dict]:
        """The run's last checkpoint and its trainer state (hashes verified), after checking the resumed config
        against it; stale temporary folders of an interrupted save are removed first."""
        cfg, dist = self.config, self.dist
        if dist.is_main:  # a save killed midway left its temporary folder (and its disk space) behind
            for stale in remove_stale_tmp(self.run_dir / "checkpoints"):
                logger.warning("removed %s, left by a save that did not finish", stale)
        found = list_checkpoints(self.run_dir / "checkpoints")
        if not found:
            raise FileNotFoundError(f"nothing to resume in {self.run_dir}: it has no checkpoints/step-N")
        changes = self._resume_changes()
        checkpoint = found[-1]
        state = load_trainer_state(checkpoint, trust=trust_checkpoint)  # verifies every hash first
        resumed_at = state["trainer"]["step"]
        if cfg.max_steps < resumed_at:
            raise ConfigError(
                f"max_steps={cfg.max_steps} is below step {resumed_at}, where {self.run_dir} resumes: "
                f"give max_steps >= {resumed_at}"
            )
        if changes and dist.is_main:
            self._record_changes(resumed_at, changes)
        return checkpoint, state

    def _load_optimizer(self, checkpoint: Path, state: dict) -> None:
        """The optimizer state from the checkpoint: the trainer state's, or (FSDP) this process's shard, which also
        restores its shard of the model (saved by torch.distributed.checkpoint's state-dict API, see ``save``)."""
        dist, shards = self.dist, state.get("shards")
        if shards is None and not dist.sharded:
            self.optimizer.load_state_dict(state["optimizer"])
            return
        if shards is None or not dist.sharded or shards["world_size"] != dist.world_size:
            held = f"FSDP shards of {shards['world_size']} processes" if shards else "an unsharded optimizer state"
            now = f"FSDP with {dist.world_size} processes" if dist.sharded else "no FSDP"
            raise CheckpointError(
                f"{checkpoint} holds {held} and this run has {now}: resume it the way it was launched "
                "(the same accelerate config and number of processes)"
            )
        # load_trainer_state has verified every file of the checkpoint (its manifest lists the shards too)
        local = read_trainer_state(checkpoint / SHARDS, stem=shard_name(dist.rank, dist.world_size))
        dist.load_sharded_state(self.model, self.optimizer, local)

    def _resume_changes(self) -> dict[str, list]:
        """What this config changes in the run's saved ``config.yaml``; only ``RESUME_KEYS`` may change."""
        saved_path = self.run_dir / "config.yaml"
        if not saved_path.is_file():
            return {}
        saved = build_config(read_yaml(saved_path))
        changes = config_changes(saved, self.config)
        check_resume_changes(changes, saved, self.config)
        return changes

    def _record_changes(self, step: int, changes: dict[str, list]) -> None:
        """One line of ``config_history.jsonl`` (``config.yaml`` then holds the new values)."""
        line = {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changes": changes}
        with (self.run_dir / "config_history.jsonl").open("a") as fh:
            fh.write(json.dumps(line) + "\n")
        logger.info(
            "resuming at step %d with %s", step, ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in changes.items())
        )

    def _replan_lr(self) -> None:
        """The learning rate of the next optimizer step from this config's schedule, not the saved one.

        The saved optimizer holds the rate its own schedule set; with an unchanged ``max_steps`` this is the same
        number, and with a new one (``--resume RUN max_steps=N``) the run follows, from here on, the schedule of a
        run planned for N steps from the start (cosine: re-planned to reach 0 at the new end; constant: unchanged).
        """
        sched = self.scheduler
        for group, base, factor in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas, strict=True):
            group["lr"] = base * factor(sched.last_epoch)
        sched._last_lr = [group["lr"] for group in sched.optimizer.param_groups]

    def _set_rng(self, state: dict) -> None:
        """Every process's own RNG state from the checkpoint (rank 0's ``rng`` for one process)."""
        ranks = state.get("rng_ranks", [state["rng"]])
        if len(ranks) == self.dist.world_size:
            set_rng_state(ranks[self.dist.rank])
        else:
            logger.warning(
                "the checkpoint holds the RNG states of %d processes and this run has %d: random streams other "
                "than sampling restart from seed + rank",
                len(ranks),
                self.dist.world_size,
            )

    # ------------------------------------------------------------------ loop
    def train(self) -> dict:
        """Run the loop to ``max_steps`` (or an interrupt) and return the summary; out of GPU memory, stop with
        OutOfMemoryStop and save nothing of the failed step. The trackers are closed however it ends."""
        self._where = ("evaluation", self.state["step"])
        failed = True
        try:
            summary = self._train()
            failed = False
            return summary
        except CUDA_OOM:
            raise OutOfMemoryStop(self.out_of_memory_message()) from None
        finally:
            self.trackers.close(failed=failed)

    def out_of_memory_message(self) -> str:
        """One line: where memory ran out, what is intact, the settings to lower and how to continue."""
        cfg, (stage, step) = self.config, getattr(self, "_where", ("loading the model", 0))
        found = list_checkpoints(self.run_dir / "checkpoints")
        intact = f"{found[-1].name} is intact" if found else "no checkpoint is saved yet"
        micro, accum = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
        if stage == "generation":
            lower = (
                f"lower max_completion_length (now {cfg.max_completion_length}) or per_device_train_batch_size "
                f"(now {micro}; a step generates its {cfg.generation_batch_size} completions at once) in a new run"
            )
        else:
            lower = (
                f"lower per_device_train_batch_size (now {micro}; raise gradient_accumulation_steps to keep the "
                f"batch), max_completion_length (now {cfg.max_completion_length})"
                + ("" if cfg.model.gradient_checkpointing else ", or set model.gradient_checkpointing=true")
            )
        text = f"out of GPU memory in {stage} at step {step} (not saved; {intact}): {lower}"
        if found and stage != "generation" and micro > 1:
            text += (
                f"; continue with: neggrad train --resume {self.run_dir} per_device_train_batch_size={micro // 2} "
                f"gradient_accumulation_steps={accum * micro // (micro // 2)}"
            )
        return text

    def _train(self) -> dict:
        cfg, state = self.config, self.state
        self._start = start = clock() - state["elapsed_s"]
        if state["accuracy_before"] is None:
            state["accuracy_before"] = self._evaluate()["eval/accuracy"]
            self.callback("eval", {"step": 0, "eval/accuracy": state["accuracy_before"]})
        self.probe = None
        if cfg.lld.enabled and cfg.lld.probe_size:
            self.probe = ProbeSet.load(self.run_dir)
            if self.probe is None:  # every process builds the same probe (seeded, same weights); rank 0 saves it
                with full_parameters(self.model):
                    self.probe = ProbeSet.build(cfg, self.engine, self.task, self.eval_set)
                if self.dist.is_main:
                    self.probe.save(self.run_dir)
        status = "completed"
        with _StopFlag() as stop:
            while state["step"] < cfg.max_steps and not self.budget_reached():
                record = self._step()
                state["elapsed_s"] = clock() - start
                self.callback("step", record)
                if record["update/skipped"]:
                    state["nonfinite_streak"] += 1
                    if state["nonfinite_streak"] >= cfg.nonfinite.max_consecutive:
                        raise NonFiniteError(
                            f"{state['nonfinite_streak']} consecutive steps had a non-finite loss or gradient "
                            f"(last at step {state['step']}); updates were skipped and the last good checkpoint "
                            "is kept. Lower learning_rate or max_grad_norm, or check the reward function."
                        )
                else:
                    state["nonfinite_streak"] = 0
                    if cfg.save_steps and state["step"] % cfg.save_steps == 0:
                        self.save()
                if self.dist.any(stop.requested):  # every process stops after the same step
                    status = "interrupted"
                    if not record["update/skipped"]:
                        self.save()
                    break
        if status == "completed":
            final = self._evaluate()
            state["elapsed_s"] = clock() - start
            self.save()
            summary = self._summary(status, final["eval/accuracy"])
        else:
            summary = self._summary(status, None)
        if self.dist.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary

    def _step(self) -> dict:
        cfg, state = self.config, self.state
        t0 = time.perf_counter()
        dist = self.dist
        sampled: dict = {}  # the sampling stage's metrics, reduced over processes, also when nothing was kept
        self._where = ("generation", state["step"] + 1)
        with full_parameters(self.model):  # FSDP: whole parameters while generating (no-op otherwise)
            batch, state["cursor"] = collect_batch(
                cfg, self.engine, self.task, state["cursor"], dist=dist, step=state["step"] + 1, stats_out=sampled
            )
        state["step"] += 1
        record = {"step": state["step"], **sampled}
        if not any(dist.gather(batch is not None)):  # no process kept a group
            record.update({"update/skipped": 0, "batch/completions": 0})
        else:
            local = batch or self._empty_batch()  # a process without groups still joins the update's collectives
            record.update(self._batch_metrics(local))
            self._where = ("the update", state["step"])
            update = policy_update(
                cfg, self.model, self.optimizer, self.scheduler, local, ref_model=self.ref_model, dist=dist
            )
            if self.engine.separate_weights:  # vLLM samples the next batch with the updated weights
                with full_parameters(self.model):  # FSDP: it copies whole parameters (untested: needs GPUs)
                    self.engine.sync_weights(self.model)
            record.update(update.metrics)
            record.update(_update_time_by_kind(local, update.metrics, cfg.num_generations))
            if dist.is_main and batch is not None:
                self._write_samples(batch, update)
        before = self._spend(record)
        last = state["step"] >= cfg.max_steps or self.budget_reached()  # the final evaluation follows the loop
        if self._eval_due(before) and not last:
            record.update(self._evaluate())
        if self.probe is not None and (state["step"] % cfg.lld.probe_every == 0 or last):
            t1 = time.perf_counter()
            self._where = ("the LLD probe", state["step"])
            with full_parameters(self.model):
                record.update(self.probe.metrics(self.model, cfg))
            record["time/lld"] = record.get("time/lld", 0.0) + time.perf_counter() - t1
        for kind in KINDS:  # compute per kind of group: its generation (+ hints, judge) and its share of the update
            if f"time/gen_{kind}" in record:
                record[f"time/{kind}"] = record[f"time/gen_{kind}"] + record.pop(f"time/update_{kind}", 0.0)
        record["time/step"] = time.perf_counter() - t0
        device = next(self.model.parameters()).device
        if device.type == "cuda":  # this step's peak, then reset for the next
            record["memory/peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            torch.cuda.reset_peak_memory_stats(device)
        record.update(self._slowest_times(record))
        if self.metrics is not None:
            self.metrics.write(record)
            self.trackers.log(record)
        return record

    # ------------------------------------------------------------------ budget
    def _spend(self, record: dict) -> dict:
        """Add the step's generated completions and tokens, and the run's wall time so far, to the trainer state and
        to ``record`` (``budget/*``); return what had been spent before the step."""
        state = self.state
        before = {kind: state[key] for kind, key in SPENT.items()}
        state["spent_samples"] += int(record.get("batch/generated", 0))
        state["spent_tokens"] += int(record.get("batch/generated_tokens", 0))
        state["spent_seconds"] = self.dist.max([clock() - self._start])[0]  # one clock for every process's decision
        record.update({f"budget/{kind}": state[key] for kind, key in SPENT.items()})
        return before

    def budget_reached(self) -> bool:
        """Whether the run has spent its budget (``budget.samples`` / ``tokens`` / ``seconds``; False without one)."""
        budget = self.config.budget
        return budget.kind is not None and self.state[SPENT[budget.kind]] >= budget.limit

    def _eval_due(self, before: dict) -> bool:
        """Whether this step evaluates: another ``budget.eval_every`` of the budget spent during it, or (no budget,
        or eval_every null) a multiple of ``eval_steps``."""
        cfg, state = self.config, self.state
        budget = cfg.budget
        if budget.kind is None or budget.eval_every is None:
            return bool(cfg.eval_steps) and state["step"] % cfg.eval_steps == 0
        every = budget.eval_every * budget.limit
        return math.floor(state[SPENT[budget.kind]] / every) > math.floor(before[budget.kind] / every)

    # ------------------------------------------------------------------ pieces
    def _evaluate(self) -> dict:
        """Held-out evaluation, split over processes (every N-th example each) and weighted by their counts."""
        t0 = time.perf_counter()
        self._where = ("evaluation", self.state["step"])
        dist = self.dist
        share = list(self.eval_set)[dist.rank :: dist.world_size] if dist.world_size > 1 else self.eval_set
        with full_parameters(self.model):
            result = evaluate(self.engine, self.task, share, avg_k=self.config.eval_avg_k)
        if dist.world_size > 1:  # every eval metric is a mean over examples
            parts = [(n, r) for n, r in dist.gather((len(share), result)) if n]
            total = sum(n for n, _ in parts) or 1
            result = {k: sum(n * r[k] for n, r in parts) / total for k in result}
        acc = result["eval/accuracy"]
        if self.state["best_accuracy"] is None or acc > self.state["best_accuracy"]:
            self.state["best_accuracy"] = acc
        result["time/eval"] = time.perf_counter() - t0
        return result

    def _slowest_times(self, record: dict) -> dict:
        """``time/*`` of the slowest process (each key over the processes that report it)."""
        if self.dist.world_size == 1:
            return {}
        out: dict = {}
        for times in self.dist.gather({k: v for k, v in record.items() if k.startswith("time/")}):
            for k, v in times.items():
                out[k] = max(out.get(k, v), v)
        return out

    def _empty_batch(self) -> TrainBatch:
        """A batch of no completions: what a process that kept no group trains on while the others update."""
        none = torch.zeros(0, 1, dtype=torch.long)
        rollout = Rollout(none, none, none, none, torch.zeros(0, dtype=torch.bool), [])
        flags, values = torch.zeros(0, dtype=torch.bool), torch.zeros(0)
        return TrainBatch(rollout, [], [], flags, values, values, flags, stats={})

    def _batch_metrics(self, batch: TrainBatch) -> dict:
        """Statistics of the kept completions of every process (gathered, so std and min / max are exact)."""
        G = self.config.num_generations
        local = {
            "adv": batch.seq_adv[batch.rows],
            "rewards": batch.rewards,
            "lengths": batch.rollout.lengths.float().cpu(),
            "correct": batch.correct,
            "truncated": batch.rollout.truncated.cpu(),
            "group_sum": batch.seq_adv.view(-1, G).sum(dim=1),
        }
        rows = gather_rows(self.dist, local) if self.dist.world_size > 1 else local
        adv, rewards, lengths, correct = rows["adv"], rows["rewards"], rows["lengths"], rows["correct"]

        def mean(x: torch.Tensor) -> float:
            return float(x.mean()) if x.numel() else 0.0

        return {
            "reward/mean": mean(rewards),
            "reward/std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
            "adv/mean": mean(adv),
            "adv/std": float(adv.std()) if adv.numel() > 1 else 0.0,
            "adv/pos_mean": mean(adv[adv > 0]),
            "adv/neg_mean": mean(adv[adv < 0]),
            "adv/group_sum_mean": mean(rows["group_sum"]),
            "length/mean": mean(lengths),
            "length/min": float(lengths.min()),
            "length/max": float(lengths.max()),
            "length/correct_mean": mean(lengths[correct]),
            "length/wrong_mean": mean(lengths[~correct]),
            "length/truncated_frac": mean(rows["truncated"].float()),
        }

    def _write_samples(self, batch: TrainBatch, update: UpdateResult) -> None:
        """``samples/step-N.jsonl``: some completions with rewards; with NTHR, whole mixed groups with
        each token's score and whether its penalty was scaled (what ``neggrad inspect`` shows)."""
        n = min(self.config.num_samples_logged, len(batch.rollout.texts))
        if n == 0:
            return
        G = self.config.num_generations
        rows = list(range(n))
        if update.token_scores is not None:
            mixed = [g for g in range(len(batch.prompts)) if 0 < int(batch.correct[g * G : (g + 1) * G].sum()) < G]
            rows = [g * G + j for g in mixed[: max(1, math.ceil(n / G))] for j in range(G)]
        lines = []
        for i in rows:
            line = {
                "group": i // G,
                "prompt": batch.prompts[i // G],
                "answer": batch.answers[i // G],
                "completion": batch.rollout.texts[i],
                "correct": bool(batch.correct[i]),
                "reward": float(batch.rewards[i]),
                "advantage": float(batch.seq_adv[i]),
            }
            if update.token_scores is not None:
                length = int(batch.rollout.completion_mask[i].sum())
                ids = batch.rollout.completion_ids[i, :length].tolist()
                line["tokens"] = [self.tokenizer.decode([t]) for t in ids]
                line["scores"] = [round(float(x), 6) for x in update.token_scores[i, :length]]
                line["selected"] = [bool(x) for x in update.token_selected[i, :length]]
                line["tau"], line["eta"] = float(update.row_tau[i]), float(update.row_eta[i])
            lines.append(json.dumps(line))
        if lines:
            (self.run_dir / "samples" / f"step-{self.state['step']}.jsonl").write_text("\n".join(lines) + "\n")

    def save(self) -> Path | None:
        """A checkpoint written by rank 0 (every process calls this: full weights and RNG states are gathered)."""
        dist, root, step = self.dist, self.run_dir / "checkpoints", self.state["step"]
        state_dict = dist.model_state_dict(self.model)  # FSDP / ZeRO-3 only: a collective
        trainer_state = {"trainer": dict(self.state)}
        rngs = dist.gather(rng_state())
        if dist.world_size > 1:
            trainer_state["rng_ranks"] = rngs
        shards = dist.sharded_state(self.model, self.optimizer)  # FSDP: this process's model and optimizer shard
        if shards is not None:  # each process writes its own, then rank 0 finishes the checkpoint around them
            if dist.is_main:
                shard_folder(root, step, fresh=True)
            dist.barrier()
            folder = shard_folder(root, step, fresh=False)
            write_trainer_state(shards, folder, stem=shard_name(dist.rank, dist.world_size))
            dist.barrier()
            trainer_state["shards"] = {"world_size": dist.world_size}
        with full_parameters(self.model):  # FSDP: save_pretrained inspects the parameters (tied weights)
            if not dist.is_main:
                return None
            return save_checkpoint_or_explain(
                root,
                step,
                model=self.model,
                tokenizer=self.tokenizer,
                optimizer=None if shards is not None else self.optimizer,
                scheduler=self.scheduler,
                trainer_state=trainer_state,
                keep=self.config.save_total_limit,
                state_dict=state_dict,
                sharded=shards is not None,
            )

    def _summary(self, status: str, accuracy_after: float | None) -> dict:
        """``summary.json``: the result, and the budget with what was spent of each kind (``budget/*`` at the last
        step; ``stopped_by`` says whether the budget or max_steps ended a completed run)."""
        s, budget = self.state, self.config.budget
        stopped_by = None
        if status == "completed":
            stopped_by = "budget" if self.budget_reached() else "max_steps"
        return {
            "status": status,
            "method": self.config.method,
            "steps": s["step"],
            "accuracy_before": s["accuracy_before"],
            "accuracy_after": accuracy_after,
            "best_accuracy": s["best_accuracy"],
            "wall_time_s": round(s["elapsed_s"], 3),
            "budget": {budget.kind: budget.limit} if budget.kind else None,
            "stopped_by": stopped_by,
            "spent": {kind: s[key] for kind, key in SPENT.items()},
            **{f"policy/{k}": v for k, v in self.policy_info.items()},
            # what set this process's CPU speed (docs/troubleshooting.md): the `neggrad` command picks the policy
            "runtime": {
                "torch_threads": torch.get_num_threads(),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "libgomp default"),
                "remove_padding": self.config.remove_padding,  # auto: what set-up decided
            },
        }


def _adamw(model, cfg: Config) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        model.parameters(),
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        weight_decay=cfg.weight_decay,
        fused=next(model.parameters()).device.type in ("cpu", "cuda"),  # one kernel, not a loop per tensor
    )


def _update_time_by_kind(batch: TrainBatch, metrics: dict, group_size: int) -> dict:
    """``time/update_{kind}``: the update's time (and its old-policy passes) split over the kinds of the
    batch's groups in proportion to their completion tokens (docs/algorithms.md §5.4: compute per kind)."""
    if batch.kind is None or not len(batch.kind):
        return {}
    spent = metrics.get("time/update", 0.0) + metrics.get("time/old_logp", 0.0)
    tokens = (batch.rollout.lengths.float() * batch.rows.float()).view(-1, group_size).sum(dim=1)  # (P,)
    total = float(tokens.sum()) or 1.0
    return {f"time/update_{k}": spent * float(tokens[batch.kind == i].sum()) / total for i, k in enumerate(KINDS)}


def train(
    config: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    callback: Callback | None = None,
    trust_checkpoint: bool = False,
) -> dict:
    """Train (or resume) a run in ``run_dir``; return ``summary.json``'s content (``trust_checkpoint``: see
    :meth:`Trainer.setup`)."""
    trainer = Trainer(config, run_dir, callback=callback)
    finished = False
    try:
        try:
            trainer.setup(resume=resume, trust_checkpoint=trust_checkpoint)
        except CUDA_OOM:
            raise OutOfMemoryStop(trainer.out_of_memory_message()) from None
        summary = trainer.train()
        finished = True
        return summary
    finally:
        if hasattr(trainer, "task"):
            trainer.task.close()  # stops verifier worker processes, if any
        close_judges()  # the http judge's kept-alive connections, if a judge was used
        if hasattr(trainer, "dist"):
            trainer.dist.end(finished=finished)
