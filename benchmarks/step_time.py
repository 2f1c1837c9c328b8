"""Wall time of one GRPO step in neggrad and in TRL's ``GRPOTrainer``, same model, prompts and batch, one run.

    python benchmarks/step_time.py                       # defaults: 8 prompts x G 8, 32 tokens, 5 timed steps
    python benchmarks/step_time.py --steps 10 --json runs/step_time.json

Needs TRL (``pip install -e '.[bench]'``). Nothing is downloaded: the testbed model and tokenizer are built in
code. The ratio neggrad / TRL is printed for the whole step and for the update part; <= 1.0 means neggrad is
at least as fast.

What both sides share:

- the weights: one randomly initialised testbed model (``seed 0``), deep-copied for each side. A random model
  samples EOS with probability about 1/V per token (V = 23): about a third of the completions run to
  ``--max-completion-length``, so every batch is padded to that width and both sides train on the same shape. The mean
  completion length each side produced is printed so that you can check it.
- the prompts: ``task.train_example(i)`` for i = 0, 1, ..., ``--prompts`` per step in the same order (TRL with
  ``shuffle_dataset=False``), G completions each, sampled at temperature 1 (top_p 1, top_k 0), scored by the same
  verifier (``task.score``), binary reward.
- the update: one optimizer step per generation batch over all B = P * G completions in one micro-batch
  (``per_device_train_batch_size = B``, no gradient accumulation, ``num_iterations = 1``, so neither side runs an
  old-policy pass), clipped surrogate with epsilon 0.2, ``loss_type="grpo"``, ``beta=0`` (no reference model),
  AdamW at the same learning rate, grad-norm clip 1.0, constant schedule, fp32, no gradient checkpointing, no
  evaluation, logging or checkpoints, and the same number of torch threads. Each side keeps its own optimizer
  implementation: neggrad's trainer's (``torch.optim.AdamW(fused=True)`` on the CPU) and TRL's default
  ``optim="adamw_torch_fused"``.

What is timed (``time.perf_counter``). The two sides alternate step by step, so a change in the load of a
shared machine hits both alike: TRL's ``Trainer.train`` runs, and a callback runs one neggrad step after each
TRL optimizer step, outside TRL's timed interval. The first ``--warmup`` steps of each side are discarded and
the median over the next ``--steps`` is reported. ``neggrad/TRL`` is median(neggrad) / median(TRL);
``paired`` is the median over steps of neggrad's step i / TRL's step i, which run back to back, so it is
steadier when the load drifts.

- neggrad, whole step: ``collect_batch`` (prompts, ``generate``, decode, score, advantages) plus
  ``policy_update`` (loss forward, backward, clip, optimizer and scheduler step, the step's metrics).
  Generate + score is ``collect_batch``; the update part is the ``policy_update`` call (its own
  ``time/old_logp + time/update`` are printed too, they miss only a few tensor selects).
- TRL, whole step: from the end of the previous ``on_step_end`` callback (after its neggrad step; the first
  from ``on_train_begin``) to the start of this step's ``on_step_end``. It holds everything the trainer does
  per optimizer step: fetching the prompts from the dataloader, ``_generate_and_score_completions``
  (tokenize, ``generate``, decode, reward function, advantages, its metric bookkeeping), the loss forward and
  backward (``compute_loss``), clip, optimizer and scheduler step, ``zero_grad``, and the (empty) log / save /
  evaluate check of the previous step. Generate + score is the time inside ``_generate_and_score_completions``
  (wrapped on the trainer instance); the update part is the whole step minus that.

Generation against its limit (issue 17): after each neggrad step, outside the timed step, the same batch's
forwards alone (``rollout_speed.forward_only``: one prefill and width - 1 one-token decode forwards into a static
cache, inputs made beforehand, no sampling) are timed. The line ``neggrad generation`` gives rows x decode steps
per second of ``time/generate`` (the engine's sampling of the batch), of that bound, and their ratio (the
engine's share of the bound). ``--rollout hf_lean`` runs neggrad's lean decode loop instead of ``generate``,
``--rollout hf_lean --compact`` its ``rollout.compact`` mode (one prefill per prompt, ended rows dropped: the
bound, which decodes every row to the batch's width, is then no longer a bound, and the share can exceed 1).

On a machine shared with other work the figures are noisy: run it twice and compare. With more torch threads
than free cores, OpenMP threads that spin-wait for a descheduled peer stall every parallel op (measured with 2
threads next to a busy process: a step 4-25x slower, AdamW's step 0.9 s instead of 7 ms); on an idle machine,
threads that sleep at once make every short op wait for a wake-up. The script chooses the policy as the
``neggrad`` command does (``neggrad.cli.omp_wait_policy``: ``PASSIVE`` unless every thread has a free core,
libgomp's spin-then-sleep otherwise), so it times what a user's run gets; both sides run under the same policy.
Set ``OMP_WAIT_POLICY`` in the environment to override it.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The OpenMP wait policy the `neggrad` command would choose; read when torch loads, so before the import.
importlib.import_module("neggrad.cli").choose_omp_wait_policy()  # as the `neggrad` command does, before torch loads

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rollout_speed import forward_only  # noqa: E402

LEARNING_RATE = 1e-5
EPSILON = 0.2
LOSS_TYPE = "grpo"
SEED = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per side before the timed ones")
    parser.add_argument("--prompts", type=int, default=8, help="P: prompts per step")
    parser.add_argument("--num-generations", type=int, default=8, help="G: completions per prompt")
    parser.add_argument("--max-completion-length", type=int, default=32, help="longest completion in tokens")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads for both sides")
    parser.add_argument(
        "--rollout", choices=("hf", "hf_lean"), default="hf", help="neggrad's rollout.backend (default hf: generate)"
    )
    parser.add_argument(
        "--compact", action="store_true", help="with --rollout hf_lean: rollout.compact (shared prefill, row dropping)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="more neggrad config overrides, e.g. share_prompt_forward=true (exact options only: both sides must "
        "still train on the same loss)",
    )
    args = parser.parse_args(argv)
    if args.compact and args.rollout != "hf_lean":
        parser.error("--compact is a mode of the lean loop: it needs --rollout hf_lean")
    for name in ("steps", "prompts", "max_completion_length", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.num_generations < 2:
        parser.error(
            f"--num-generations must be >= 2 (GRPO compares completions in a group), got {args.num_generations}"
        )
    return args


def require_trl() -> None:
    try:
        import datasets  # noqa: F401
        import trl  # noqa: F401
    except ImportError as err:
        sys.exit(f"this benchmark compares against TRL, which is not installed ({err}): pip install -e '.[bench]'")


def neggrad_config(args: argparse.Namespace):
    from neggrad.config import build_config

    batch = args.prompts * args.num_generations
    return build_config(
        {},
        [
            "method=grpo",
            f"seed={SEED}",
            "sft.enabled=false",
            f"num_generations={args.num_generations}",
            f"max_completion_length={args.max_completion_length}",
            "temperature=1.0",
            "top_p=1.0",
            f"per_device_train_batch_size={batch}",
            "gradient_accumulation_steps=1",
            "steps_per_generation=1",
            "num_iterations=1",
            f"loss_type={LOSS_TYPE}",
            f"epsilon={EPSILON}",
            f"epsilon_high={EPSILON}",
            "beta=0.0",
            f"learning_rate={LEARNING_RATE}",
            "max_grad_norm=1.0",
            "lr_scheduler_type=constant",
            "eval_steps=0",
            f"rollout.backend={args.rollout}",
            *(["rollout.compact=true"] if args.compact else []),
            *args.overrides,
        ],
    )


class NeggradSteps:
    """neggrad's training step as ``neggrad.trainer.loop`` runs it: ``collect_batch`` then ``policy_update``."""

    def __init__(self, cfg, model, tokenizer, task, total_steps: int):
        from neggrad.rollout import build_rollout
        from neggrad.trainer.loop import _adamw, lr_lambda

        self.cfg, self.model, self.task = cfg, model, task
        self.engine = build_rollout(model, tokenizer, cfg)  # --rollout: generate or the lean loop
        self.optimizer = _adamw(model, cfg)  # the trainer's own: fused AdamW on the CPU
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, total_steps))
        self.cursor = 0
        self.records: list[dict] = []
        model.train()

    def step(self) -> None:
        from neggrad.trainer.batch import collect_batch
        from neggrad.trainer.update import policy_update

        t0 = time.perf_counter()
        batch, self.cursor = collect_batch(self.cfg, self.engine, self.task, self.cursor)
        t1 = time.perf_counter()
        metrics = policy_update(self.cfg, self.model, self.optimizer, self.scheduler, batch).metrics
        t2 = time.perf_counter()
        rollout = batch.rollout
        rows, width = rollout.completion_ids.shape  # the engine ran `width` decode steps over `rows` rows
        self.model.eval()  # the bound, outside the timed step: the same batch's forwards alone
        bound = forward_only(self.model, rollout.prompt_ids, rollout.prompt_mask, width)
        self.model.train()
        update_bound = forward_backward_only(self.model, batch.rollout, self.cfg)
        self.records.append(
            {
                "step": t2 - t0,
                "generate_score": t1 - t0,
                "update": t2 - t1,
                "update_inner": metrics["time/old_logp"] + metrics["time/update"],
                "generate": batch.stats["time/generate"],
                "forward_bound": bound,
                "update_bound": update_bound,
                "decoded_tokens": rows * width,
                "mean_length": float(batch.rollout.lengths.float().mean()),
                "width": batch.rollout.completion_ids.shape[1],
            }
        )


def forward_backward_only(model, rollout, cfg) -> float:
    """Seconds of the batch's training forwards and backwards alone (log-probs of the completion tokens, their
    masked sum backward, micro-batch by micro-batch, with the run's forward options ``share_prompt_forward`` and
    ``remove_padding``), outside the timed step: the floor of the update, which adds the loss, the old-policy
    bookkeeping, clipping and the optimizer step. Gradients are cleared after."""
    from neggrad.core.logprobs import token_logprobs
    from neggrad.models.policy import completion_forward

    t0 = time.perf_counter()
    for idx in torch.arange(rollout.completion_ids.shape[0]).split(cfg.per_device_train_batch_size):
        mb = rollout.select(idx)
        logits, _ = completion_forward(model, mb, share_prompt=cfg.share_prompt_forward, packed=cfg.remove_padding)
        logp = token_logprobs(logits, mb.completion_ids, temperature=cfg.temperature)
        (logp * mb.completion_mask).sum().backward()
    seconds = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    return seconds


def run_interleaved(neggrad: NeggradSteps, model, tokenizer, task, args: argparse.Namespace, out_dir: str):
    """Run TRL's ``GRPOTrainer.train`` and one neggrad step after each TRL step; return both sides' records."""
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    total = args.warmup + args.steps
    batch = args.prompts * args.num_generations
    examples = [task.train_example(i) for i in range(total * args.prompts)]
    dataset = Dataset.from_dict({"prompt": [e.prompt for e in examples], "answer": [e.answer for e in examples]})

    def correctness(completions: list[str], answer: list[str], **_) -> list[float]:
        return [float(ok) for ok in task.score(completions, answer)]

    config = GRPOConfig(
        output_dir=out_dir,
        use_cpu=True,
        use_vllm=False,
        bf16=False,
        fp16=False,
        activation_checkpointing=False,
        gradient_checkpointing=False,
        seed=SEED,
        max_steps=total,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        num_iterations=1,
        loss_type=LOSS_TYPE,
        epsilon=EPSILON,
        beta=0.0,
        scale_rewards="group",
        learning_rate=LEARNING_RATE,
        weight_decay=0.0,
        max_grad_norm=1.0,
        lr_scheduler_type="constant",
        warmup_steps=0,
        shuffle_dataset=False,
        report_to="none",
        logging_steps=10**6,
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    steps: list[float] = []
    gen_times: list[float] = []
    lengths: list[float] = []
    widths: list[int] = []
    clock = {"start": 0.0}

    class Interleave(TrainerCallback):
        """Times TRL's optimizer steps and runs a neggrad step in between, outside TRL's timed interval."""

        def on_train_begin(self, *_, **__):
            clock["start"] = time.perf_counter()

        def on_step_end(self, *_, **__):
            steps.append(time.perf_counter() - clock["start"])
            neggrad.step()
            clock["start"] = time.perf_counter()

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=correctness,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Interleave()],
    )
    trainer.remove_callback(PrinterCallback)  # it would print the end-of-training summary
    generate_and_score = trainer._generate_and_score_completions

    def timed_generate_and_score(inputs):
        t0 = time.perf_counter()
        out = generate_and_score(inputs)
        gen_times.append(time.perf_counter() - t0)
        lengths.append(float(out["completion_mask"].sum(dim=1).float().mean()))
        widths.append(out["completion_ids"].shape[1])
        return out

    trainer._generate_and_score_completions = timed_generate_and_score
    trainer.train()
    if len(steps) != total or len(gen_times) != total or len(neggrad.records) != total:
        raise RuntimeError(
            f"TRL ran {len(steps)} optimizer steps and {len(gen_times)} generations, expected {total} of each: "
            "the timing hooks no longer match this TRL version"
        )
    keep = slice(args.warmup, None)
    theirs = [
        {"step": s, "generate_score": g, "update": s - g, "mean_length": n, "width": w}
        for s, g, n, w in zip(steps[keep], gen_times[keep], lengths[keep], widths[keep], strict=True)
    ]
    return neggrad.records[keep], theirs, str(getattr(config.optim, "value", config.optim))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    require_trl()
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    import trl

    from neggrad.models.testbed.model import build_model
    from neggrad.models.testbed.tokenizer import build_tokenizer
    from neggrad.tasks.build import build_task

    cfg = neggrad_config(args)
    tokenizer = build_tokenizer()
    task = build_task(cfg.task)
    base = build_model(cfg.model.testbed, tokenizer, seed=SEED)
    n_params = sum(p.numel() for p in base.parameters())

    neggrad = NeggradSteps(cfg, copy.deepcopy(base), tokenizer, task, args.warmup + args.steps)
    with tempfile.TemporaryDirectory(prefix="neggrad-bench-trl-") as out_dir:
        ours, theirs, trl_optim = run_interleaved(neggrad, copy.deepcopy(base), tokenizer, task, args, out_dir)

    def col(records: list[dict], key: str) -> list[float]:
        return [r[key] for r in records]

    rows = [("whole step", "step"), ("generate + score", "generate_score"), ("update", "update")]
    figures = {}
    for _, key in rows:
        a, b = statistics.median(col(ours, key)), statistics.median(col(theirs, key))
        paired = statistics.median(x[key] / y[key] for x, y in zip(ours, theirs, strict=True))
        figures[key] = {"neggrad_s": a, "trl_s": b, "ratio": a / b, "paired_ratio": paired}

    print(
        f"GRPO step, neggrad vs TRL {trl.__version__} (transformers {transformers.__version__}, torch "
        f"{torch.__version__}), {args.threads} torch thread(s)"
    )
    print(
        f"testbed model {n_params / 1e6:.2f} M params (random init), P={args.prompts} prompts x G="
        f"{args.num_generations} = {args.prompts * args.num_generations} completions per optimizer step, "
        f"max_completion_length={args.max_completion_length}, T=1.0, loss_type={LOSS_TYPE}, epsilon={EPSILON}, "
        f"beta=0, lr={LEARNING_RATE}, TRL optim={trl_optim}"
    )
    print(
        f"median of {args.steps} interleaved steps per side after {args.warmup} warm-up step(s), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'libgomp default')}, load average at the end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        + (f"; neggrad overrides: {' '.join(args.overrides)}" if args.overrides else "")
    )
    print(
        f"mean completion length: neggrad {statistics.fmean(col(ours, 'mean_length')):.1f}, TRL "
        f"{statistics.fmean(col(theirs, 'mean_length')):.1f} tokens; padded width neggrad "
        f"{max(col(ours, 'width'))}, TRL {max(col(theirs, 'width'))}"
    )
    print()
    print(f"{'part':<18}{'neggrad s/step':>16}{'TRL s/step':>12}{'neggrad/TRL':>13}{'paired':>8}")
    for label, key in rows:
        f = figures[key]
        print(f"{label:<18}{f['neggrad_s']:>16.3f}{f['trl_s']:>12.3f}{f['ratio']:>13.2f}{f['paired_ratio']:>8.2f}")
    print(f"(neggrad's own time/old_logp + time/update: {statistics.median(col(ours, 'update_inner')):.3f} s)")
    generation = {
        "engine_tokens_per_s": statistics.median(r["decoded_tokens"] / r["generate"] for r in ours),
        "bound_tokens_per_s": statistics.median(r["decoded_tokens"] / r["forward_bound"] for r in ours),
        "share_of_bound": statistics.median(r["forward_bound"] / r["generate"] for r in ours),
    }
    figures["generation"] = generation
    update = {
        "update_s": statistics.median(col(ours, "update")),
        "forward_backward_s": statistics.median(col(ours, "update_bound")),
        "share_of_bound": statistics.median(r["update_bound"] / r["update"] for r in ours),
    }
    figures["update"] = update
    print(
        f"neggrad update: {update['update_s']:.3f} s, the same micro-batches' forward + backward alone "
        f"{update['forward_backward_s']:.3f} s: {update['share_of_bound']:.2f} of the update is that bound"
    )
    print(
        f"neggrad generation ({args.rollout}{' compact' if args.compact else ''}): "
        f"{generation['engine_tokens_per_s']:.0f} tokens/s (rows x decode steps "
        f"/ time/generate), forward-only bound {generation['bound_tokens_per_s']:.0f} tokens/s (the same batches' "
        f"prefill + decode forwards alone): {generation['share_of_bound']:.2f} of the bound (target >= 0.70)"
    )

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        settings.update(
            omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "libgomp default"),
            loss_type=LOSS_TYPE,
            epsilon=EPSILON,
            beta=0.0,
            learning_rate=LEARNING_RATE,
            parameters=n_params,
            trl_optim=trl_optim,
            versions={"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
        )
        report = {"settings": settings, "median": figures, "per_step": {"neggrad": ours, "trl": theirs}}
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
