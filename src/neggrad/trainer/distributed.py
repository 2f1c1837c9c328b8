"""Several processes, one run: data parallelism through ``accelerate`` (DDP, or FSDP2 through an accelerate config).

Launch (the run directory must be one folder all processes can read; only rank 0 writes it; docs/multiprocess.md
has the commands as run on CPU):

    torchrun --nproc_per_node 4 -m neggrad.cli train --config run.yaml --run-dir runs/x
    accelerate launch --num_processes 4 -m neggrad.cli train --config run.yaml --run-dir runs/x
    # CPU (gloo): accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no
    #             --dynamo_backend no -m neggrad.cli train ...   (``--cpu`` starts only one process)
    accelerate launch --config_file configs/accelerate/fsdp2.yaml -m neggrad.cli train ...      # FSDP2, GPUs
    accelerate launch --config_file configs/accelerate/fsdp2_cpu.yaml -m neggrad.cli train ...  # FSDP2, 2 CPUs

A launcher is detected by ``WORLD_SIZE`` in the environment; without one nothing here is used and a run
is exactly the single-process loop.

**Global batch.** As in TRL, ``per_device_train_batch_size`` is per process. Each process generates
``per_device_train_batch_size * gradient_accumulation_steps * steps_per_generation`` completions per
step, i.e. ``config.num_prompts`` whole groups, so with N processes a step trains on
P = N * config.num_prompts prompts (N * G * config.num_prompts completions). To keep the global batch
of a 1-process run, divide ``gradient_accumulation_steps`` (or ``per_device_train_batch_size``) by N.

**Who owns what.** A generation round reads P consecutive prompts of the deterministic prompt stream
starting at the cursor; process r takes prompts ``cursor + r * P/N ...`` and generates and scores those
groups alone, so groups stay whole on one process (group statistics and NTHR need no communication).
The cursor advances by P per round on every process and stays one global number (resumable, also
with another N). With ``refill``, every process refills its own share: rounds continue while any
process is short; a process already full skips its slice of that round (those prompts are not used).

**Sampling noise.** Under a launcher each completion's sampling noise is seeded from (seed, global
prompt index, completion index) (``GroupSeededRollout``), so which completions a prompt gets does not
depend on N or on which process generates it: N processes reproduce a 1-process launcher run up to
floating-point reduction order. The other random streams (shuffles of ``steps_per_generation`` > 1,
sampled evaluation) are seeded ``seed + rank``; every process starts from the same weights.

**Exact loss.** The loss denominators of an optimizer step (completions S and tokens,
docs/algorithms.md §4) are summed over processes before the first backward, each process adds its token-loss sums over
these global denominators, and DDP (like FSDP and ZeRO) *averages* gradients over processes, so the
local loss is multiplied by N before backward: the gradient equals the 1-process gradient.

**Metrics, evaluation, files.** Batch statistics are computed on the rows gathered from all processes;
sums are summed and means weighted by their counts; ``time/*`` is the slowest process's. Greedy
evaluation is split (process r takes every N-th held-out example) and its accuracies are weighted by
the examples each process scored. Only rank 0 writes ``config.yaml``, ``metrics.jsonl``, ``samples/``
(its own groups), checkpoints and ``summary.json``; each checkpoint keeps every rank's RNG state.

**FSDP2** comes from an accelerate config with ``distributed_type: FSDP`` and ``fsdp_version: 2``
(configs/accelerate/fsdp2.yaml for GPUs, fsdp2_cpu.yaml for 2 CPU processes): the model and optimizer go
through ``accelerator.prepare`` (``fully_shard`` per decoder layer), gradients through ``accelerator.backward``,
``no_sync`` and ``clip_grad_norm_``. accelerate 1.15 enables FSDP only on accelerator backends and would run
DDP on the CPU without a word; ``_fsdp_accelerator`` sets its state to FSDP there, so the CPU tests take the
same accelerate code path as a GPU run. What sharding changes:

- Generation, evaluation, the LLD probe, the update's no-grad passes (old policy, LLD) and a checkpoint's
  ``save_pretrained`` run inside ``full_parameters``: every FSDP module unsharded once (an all-gather entered
  by every process), no collective in the forwards inside (each process runs as many as its own rows need),
  resharded after. A process holds the whole weights during those stages.
- In the training forward each FSDP forward/backward is a collective, so a process with fewer micro-batches
  in an optimizer step adds empty ones (``missing_micro_batches``, a zero-loss backward).
- Checkpoints: rank 0 writes the full weights (``model/``, gathered with torch.distributed.checkpoint's
  ``get_model_state_dict``), and every process writes its shard of the model and optimizer state
  (``sharded/rank-R-of-N.json`` + ``.safetensors``, from ``get_model_state_dict`` /
  ``get_optimizer_state_dict``, restored with the ``set_*`` functions). No pickle: accelerate's own
  ``save_state`` writes pickles (``random_states_R.pkl``, ``scheduler.bin``, and for FSDP a DCP folder
  whose ``.metadata`` is a pickle), which neggrad's checkpoints refuse to load. A sharded checkpoint resumes
  only with the same number of processes and the same FSDP config; its ``model/`` loads anywhere.

Tested with 2 CPU processes (tests/test_distributed.py): interrupted and resumed equals uninterrupted (metrics
without ``time/*``, final weights, bitwise), and FSDP equals DDP up to float reduction order. Not tested (no GPU
here): the GPU config itself, mixed precision, CPU offload, vLLM under FSDP (its weight sync runs inside
``full_parameters``), LoRA under FSDP, FSDP version 1 (refused) and DeepSpeed ZeRO (would run without
``full_parameters``: ZeRO-3 would not gather for generation).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor

logger = logging.getLogger(__name__)


def launched() -> bool:
    """Whether a launcher (torchrun, accelerate launch) started this process."""
    return "WORLD_SIZE" in os.environ


class Dist:
    """This process's place in the run and the few collectives the loop needs (no-ops for one process)."""

    def __init__(self, accelerator=None):
        self.accelerator = accelerator
        self.rank = accelerator.process_index if accelerator else 0
        self.world_size = accelerator.num_processes if accelerator else 1
        self.seeded_sampling = accelerator is not None
        self.wrapped = None  # the prepared (DDP / FSDP / DeepSpeed) module, set by ``prepare``

    @classmethod
    def from_env(cls) -> Dist:
        """One process unless a launcher set ``WORLD_SIZE``; then an ``accelerate.Accelerator``."""
        if not launched():
            return cls()
        try:
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs
        except ImportError:
            raise ImportError(
                "multi-process training needs accelerate: pip install accelerate (or neggrad[bench])"
            ) from None
        # broadcast_buffers=False: DDP would otherwise broadcast buffers at every forward, a collective that
        # hangs when processes run different numbers of micro-batches (they do: groups are filtered locally)
        ddp = DistributedDataParallelKwargs(broadcast_buffers=False)
        cpu = not torch.cuda.is_available()
        if not _fsdp_requested():
            return cls(Accelerator(cpu=cpu, kwargs_handlers=[ddp]))
        return cls(_fsdp_accelerator(cpu, ddp))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """Whether the model holds only a shard of its parameters on this process (FSDP2)."""
        return self.accelerator is not None and self.accelerator.distributed_type.value == "FSDP"

    @property
    def device(self) -> torch.device | None:
        return self.accelerator.device if self.accelerator else None

    # ------------------------------------------------------------------ engine
    def prepare(self, model, optimizer):
        """Wrap model and optimizer for the configured engine; returns the optimizer to step."""
        if self.accelerator is None:
            return optimizer
        with warnings.catch_warnings():  # torch >= 2.13 renames it; accelerate's DDP kwargs know the old name only
            warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
            self.wrapped, optimizer = self.accelerator.prepare(model, optimizer)
        return optimizer

    def train_forward(self, model):
        """What the training forward calls: the prepared module (gradient sync), or ``model`` itself."""
        return model if self.wrapped is None else _Prepared(self.wrapped, model)

    def no_sync(self, sync: bool):
        """Context for one micro-batch: gradients are synchronised only when ``sync`` (the step's last)."""
        if self.wrapped is None or sync:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(self.wrapped)

    def backward(self, loss: Tensor) -> None:
        """Backward of a local loss share, scaled by N because DDP / FSDP / ZeRO average gradients."""
        if self.accelerator is None:
            loss.backward()
        else:
            self.accelerator.backward(loss * self.world_size)

    def clip_grad_norm_(self, model, max_norm: float) -> float:
        if self.accelerator is None:
            return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
        return float(self.accelerator.clip_grad_norm_(self.wrapped.parameters(), max_norm))

    def missing_micro_batches(self, count: int) -> int:
        """How many empty micro-batches this process adds to its ``count`` in an optimizer step (FSDP only).

        Every FSDP forward and backward all-gathers the parameters of each sharded layer, a collective: every
        process must run as many of them as the others, also when it kept fewer groups. DDP synchronises only
        the step's last backward, so it needs none (0: DDP and one process run exactly as before)."""
        if not self.sharded:
            return 0
        return int(self.max([count])[0]) - count

    def sharded_state(self, model, optimizer) -> dict | None:
        """This process's shard of the model and optimizer state as plain tensors (FSDP), else None.

        Through torch.distributed.checkpoint's state-dict API (keys are parameter names, optimizer state by
        parameter name); each DTensor becomes its local shard, which ``load_sharded_state`` puts back on a
        model sharded the same way (same number of processes, same FSDP config)."""
        if not self.sharded:
            return None
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the torch one
        state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, inner)}
        return _map_tensors(state, lambda t: t.to_local().detach().cpu().clone() if _is_dtensor(t) else t)

    def load_sharded_state(self, model, optimizer, state: dict) -> None:
        """Put back the shards ``sharded_state`` returned, on a model and optimizer prepared the same way."""
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        params = dict(model.named_parameters(remove_duplicate=False))  # tied weights under each name
        inner = getattr(optimizer, "optimizer", optimizer)

        def as_dtensor(name: str, local: Tensor) -> Tensor:
            from torch.distributed.tensor import DTensor

            p = params[name]
            if not _is_dtensor(p) or local.shape != p.to_local().shape:
                return local  # a scalar (Adam's step) or an unsharded tensor
            local = local.to(device=p.to_local().device, dtype=p.dtype if local.is_floating_point() else local.dtype)
            return DTensor.from_local(local, p.device_mesh, p.placements, shape=p.shape, stride=p.stride())

        set_model_state_dict(model, {k: as_dtensor(k, v) for k, v in state["model"].items()})
        saved = state["optimizer"]
        per_param = {k: {key: as_dtensor(k, v) for key, v in s.items()} for k, s in saved["state"].items()}
        set_optimizer_state_dict(model, inner, {"state": per_param, "param_groups": saved["param_groups"]})

    def model_state_dict(self, model) -> dict | None:
        """Full weights for saving when ``model`` holds a shard (FSDP, DeepSpeed: a collective), else None."""
        if self.accelerator is None or self.accelerator.distributed_type.value not in ("FSDP", "DEEPSPEED"):
            return None
        if self.sharded:  # whatever the config's fsdp_state_dict_type (accelerate follows it): full, on rank 0
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self.accelerator.get_state_dict(model if self.wrapped is None else self.wrapped)

    # ------------------------------------------------------------------ collectives
    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over processes."""
        if self.world_size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        torch.distributed.all_reduce(t)
        return t.tolist()

    def max(self, values: list[float]) -> list[float]:
        """Element-wise maximum over processes."""
        if self.world_size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        return self.max([float(flag)])[0] > 0

    def gather(self, obj) -> list:
        """Every process's ``obj`` (picklable), in rank order, on every process."""
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every process."""
        if self.world_size == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the body first (it fills caches: warm start, hub downloads), then the others."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def end(self, *, finished: bool = False) -> None:
        """Tear the process group down. ``finished``: every process ended the run normally, so they first meet at
        a barrier: a process that destroyed its gloo group while another still wrote its last files aborted at
        exit on a loaded machine ("terminate called without an active exception"). After an error there is no
        barrier (the other processes may never reach it)."""
        if self.accelerator is not None:
            if finished and torch.distributed.is_initialized():
                torch.distributed.barrier()
            self.accelerator.end_training()  # without it rank 0 aborted at exit
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()

    def _comm_device(self) -> torch.device:
        backend = torch.distributed.get_backend()
        return self.accelerator.device if backend == "nccl" else torch.device("cpu")


SINGLE = Dist()
"""The one-process default: every collective is the identity."""


def _fsdp_requested() -> bool:
    """Whether ``accelerate launch`` was given an FSDP config (it sets ``ACCELERATE_USE_FSDP``)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def _fsdp_accelerator(cpu: bool, *handlers):
    """An Accelerator for the launcher's FSDP config (``FSDP_*`` variables), FSDP2 only, also on the CPU.

    accelerate 1.15 turns FSDP on only for accelerator backends: on the CPU (gloo) it silently makes the run
    ``MULTI_CPU`` (DDP) and ignores the plugin (``accelerate/state.py``: the FSDP branch is inside the
    multi-GPU case). torch's FSDP2 (``fully_shard``) runs on gloo, so on the CPU the state is set to FSDP with
    the launcher's plugin: ``prepare``, ``backward``, ``no_sync``, ``clip_grad_norm_`` and ``get_state_dict``
    then take accelerate's own FSDP2 code path, the one a GPU run takes (what the CPU tests exercise).
    """
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()  # reads the launcher's FSDP_* variables
    if plugin.fsdp_version != 2:
        raise ValueError(
            f"neggrad supports FSDP version 2 only (fully_shard; this config has fsdp_version {plugin.fsdp_version}): "
            "set fsdp_version: 2 in the accelerate config (configs/accelerate/fsdp2.yaml)"
        )
    accelerator = Accelerator(cpu=cpu, fsdp_plugin=plugin, kwargs_handlers=list(handlers))
    if accelerator.distributed_type == DistributedType.MULTI_CPU:
        # both shared states: an AcceleratorState() made later (transformers makes some) copies PartialState's
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = plugin
    if accelerator.distributed_type != DistributedType.FSDP:
        raise RuntimeError(f"the FSDP config gave accelerate distributed_type {accelerator.distributed_type}")
    return accelerator


def _is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def _map_tensors(obj, fn):
    """``obj`` (dicts, lists, tuples) with ``fn`` applied to each tensor in it."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


@contextlib.contextmanager
def full_parameters(model) -> Iterator[None]:
    """Every parameter of ``model`` whole on this process for the duration, when FSDP2 shards it; else nothing.

    For generation and the no-grad passes (old policy, LLD, probe): each process runs as many forwards as its
    own rows need (``generate`` stops when its own completions end), so the per-forward all-gathers of FSDP
    would not match across processes. Here every FSDP module is unsharded once (``FSDPModule.unshard``, one
    all-gather per module on every process) with ``reshard_after_forward`` off, so forwards inside issue no
    collective, and resharded at the end (``reshard``) with its setting restored. Use it only outside
    autograd (no backward inside) and around code every process enters the same number of times (the unshard
    is a collective): the trainer wraps whole stages (collect_batch, evaluation, the probe, the update's
    no-grad passes), never a per-process call such as one ``generate``.
    """
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without FSDP2: nothing can be sharded
        yield
        return
    modules = [m for m in model.modules() if isinstance(m, FSDPModule)] if model is not None else []
    if not modules:
        yield
        return
    saved = []
    for module in modules:  # FSDP2 has no getter for reshard_after_forward: keep its fields to restore them
        state = module._get_fsdp_state()
        saved.append((state._auto_reshard_after_forward, [g.post_forward_mesh_info for g in state._fsdp_param_groups]))
        module.set_reshard_after_forward(False, recurse=False)
    for module in modules:
        module.unshard()
    try:
        yield
    finally:
        for module, (auto, infos) in zip(modules, saved, strict=True):
            module.reshard()
            state = module._get_fsdp_state()
            state._auto_reshard_after_forward = auto
            for group, info in zip(state._fsdp_param_groups, infos, strict=True):
                group.post_forward_mesh_info = info


class _Prepared:
    """The prepared module for forward calls, the plain model for everything else (``get_output_embeddings``)."""

    def __init__(self, wrapped, plain):
        self._wrapped, self._plain = wrapped, plain

    def __call__(self, *args, **kwargs):
        return self._wrapped(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._plain, name)


def gather_rows(dist: Dist, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Concatenate each (n_r, ...) tensor over processes in rank order (dim 1 right-padded with 0 if needed)."""
    parts = dist.gather({k: v.detach().cpu() for k, v in tensors.items()})
    out = {}
    for key in tensors:
        pieces = [p[key] for p in parts]
        if pieces[0].ndim == 2:
            width = max(p.shape[1] for p in pieces)
            pieces = [torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in pieces]
        out[key] = torch.cat(pieces)
    return out


# ---------------------------------------------------------------------- N-independent sampling
_M32 = 0xFFFFFFFF


def _hash32(x: Tensor) -> Tensor:
    """An integer hash of int64 values in [0, 2^32) (two multiply-xorshift rounds; products stay < 2^59)."""
    x = x & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    return (x >> 16) ^ x


def row_keys(seed: int, prompt_index: list[int], num_generations: int) -> Tensor:
    """(len(prompt_index) * G,) sampling keys: one per (prompt index in the stream, completion), groups contiguous."""
    prompts = torch.tensor(prompt_index, dtype=torch.int64).repeat_interleave(num_generations)  # (B,)
    completions = torch.arange(num_generations, dtype=torch.int64).repeat(len(prompt_index))  # (B,)
    k = _hash32(torch.full_like(prompts, seed & _M32))
    k = _hash32(k ^ _hash32(prompts))
    return _hash32(k ^ _hash32(completions + 0x51ED27))


def gumbel_noise(keys: Tensor, step: int, vocab: int) -> Tensor:
    """(B, V) standard Gumbel noise, a pure function of (row key, decoding step, token id).

    Args:
        keys: (B,) int64 row keys from ``row_keys``.
    """
    base = _hash32(keys ^ int(_hash32(torch.tensor([step]))))  # (B,)
    tokens = torch.arange(vocab, device=keys.device, dtype=torch.int64) * 0x9E3779B9  # (V,)
    bits = _hash32(base[:, None] + tokens[None, :]) >> 8  # (B, V), 24 random bits
    u = (bits.float() + 0.5) / float(1 << 24)  # (B, V) in (0, 1), exact in float32
    return -torch.log(-torch.log(u))


class GroupSeededSampler:
    """A ``generate`` logits processor that samples each row with its own key (Gumbel-max).

    It applies the engine's temperature and top-p itself, draws the token as argmax(log p + Gumbel noise)
    (Gumbel 1954; the Gumbel-max trick samples exactly from softmax), and returns scores that allow only
    that token, so ``generate``'s own warpers and multinomial draw keep it. A row's completion then
    depends on its key and the model, not on the batch it is generated in.
    """

    def __init__(self, keys: Tensor, *, temperature: float, top_p: float):
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.keys, self.step = keys, 0
        self.warpers = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=top_p))

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        logp = torch.log_softmax(scores.float(), dim=-1)  # (B, V)
        noise = gumbel_noise(self.keys.to(scores.device), self.step, scores.shape[1])  # (B, V)
        self.step += 1
        choice = (logp + noise).argmax(dim=-1, keepdim=True)  # (B, 1)
        return torch.full_like(scores, float("-inf")).scatter_(1, choice, 0.0)


class GroupSeededRollout:
    """An HF rollout engine whose sampled completions depend on (seed, prompt index, completion index) only.

    ``generate(..., prompt_index=[...])`` seeds every row; without ``prompt_index`` (or greedy) it is the
    wrapped engine unchanged. Everything else (``model``, ``tokenizer``, ...) is the wrapped engine's.
    """

    def __init__(self, engine, seed: int):
        self.engine, self.seed = engine, seed

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, prompts: list[str], *, num_generations: int = 1, greedy: bool = False, prompt_index=None):
        if greedy or prompt_index is None:
            return self.engine.generate(prompts, num_generations=num_generations, greedy=greedy)
        keys = row_keys(self.seed, list(prompt_index), num_generations)  # (B,)
        sampler = GroupSeededSampler(keys, temperature=self.engine.temperature, top_p=self.engine.top_p)
        with _generate_kwargs(self.engine.model, logits_processor=[sampler]):
            return self.engine.generate(prompts, num_generations=num_generations)


@contextlib.contextmanager
def _generate_kwargs(model, **kwargs) -> Iterator[None]:
    """Add keyword arguments to ``model.generate`` calls for the duration (an instance attribute, removed after)."""
    from transformers import LogitsProcessorList

    if "logits_processor" in kwargs:
        kwargs["logits_processor"] = LogitsProcessorList(kwargs["logits_processor"])
    model.generate = functools.partial(type(model).generate, model, **kwargs)
    try:
        yield
    finally:
        del model.generate
