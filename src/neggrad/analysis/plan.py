"""``neggrad train --dry-run``: the resolved plan of a run, without loading any weights.

It reads only what is cheap: the model's ``config.json`` (a local folder, or a hub model already in the Hugging
Face cache; nothing is downloaded), a GGUF file's header, and local data files. The parameter count is exact: the
model class built from its config on the meta device (shapes only, no memory; any architecture, its own
``head_dim``, tied embeddings, MoE experts), or a GGUF file's tensor shapes; a config transformers cannot build
falls back to a dense-Llama estimate. From it come the memory of weights, gradients and AdamW states per GPU.
Activations, the KV cache during generation, vLLM's share of the GPU, the CUDA context and allocator fragmentation
are not included.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from neggrad.config import Config

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_TORCH_DTYPE_NAMES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "fp32": "float32"}
_LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Shape:
    """What the parameter estimate needs from a model config."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    torch_dtype: str | None = None
    source: str = "config.json"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder block (Llama / Qwen2 / Mistral layout)."""
        h, kv = self.hidden_size, self.num_key_value_heads * self.head_dim
        i, q = self.intermediate_size, self.num_attention_heads * self.head_dim
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def parameters(self) -> int:
        """Estimated parameter count: embeddings, blocks (attention, gated MLP, 2 norms), final norm, LM head."""
        block = sum(a * b for a, b in self.linears().values()) + 2 * self.hidden_size
        if self.qkv_bias:
            block += sum(self.linears()[n][1] for n in ("q_proj", "k_proj", "v_proj"))
        embed = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else embed
        return embed + self.num_hidden_layers * block + self.hidden_size + head

    def lora_parameters(self, r: int, target: list[str] | str) -> int:
        """Adapter parameters: r * (in + out) per targeted linear layer ("all-linear": every block linear)."""
        names = _LINEAR_NAMES if target == "all-linear" else [n for n in _LINEAR_NAMES if n in target]
        per_block = sum(r * (a + b) for n, (a, b) in self.linears().items() if n in names)
        return self.num_hidden_layers * per_block


@dataclass
class Architecture:
    """A model class built from its config on the meta device: its exact parameter count and linear layers."""

    name: str
    parameters: int
    linears: list[tuple[str, int, int]]
    """(module name, in features, out features) of every ``nn.Linear`` but the output layer (LM head)."""

    def lora_parameters(self, r: int, target: list[str] | str) -> int:
        """Adapter parameters as peft adds them: r * (in + out) per targeted linear ("all-linear": every linear
        but the output layer; a list: modules whose name is, or ends with ``.`` and, one of its entries)."""

        def targeted(name: str) -> bool:
            return target == "all-linear" or any(name == t or name.endswith("." + t) for t in target)

        return sum(r * (a + b) for name, a, b in self.linears if targeted(name))


def _meta_architecture(model_config, *, trust_remote_code: bool = False) -> Architecture | None:
    """Build the causal-LM class of a transformers config on the meta device (no memory, no weights read) and
    count its parameters (shared ones, such as tied embeddings, once); None if transformers cannot build it."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(model_config, trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 (an architecture this transformers lacks: the dense estimate instead)
        return None
    output = model.get_output_embeddings()
    linears = [
        (name, module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not output
    ]
    return Architecture(type(model).__name__, sum(p.numel() for p in model.parameters()), linears)


def _folder_architecture(folder: Path, *, trust_remote_code: bool) -> Architecture | None:
    """The architecture of the ``config.json`` in ``folder`` (read locally; nothing is downloaded)."""
    from transformers import AutoConfig

    try:
        model_config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 (an unknown model_type, remote code not allowed: the dense estimate)
        return None
    return _meta_architecture(model_config, trust_remote_code=trust_remote_code)


@dataclass
class Plan:
    """The facts ``neggrad train --dry-run`` prints, as data (tests read it)."""

    model: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    schedule: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- model shape


def _shape_from_config_json(cfg: dict, source: str) -> Shape | None:
    cfg = cfg.get("text_config", cfg)  # multimodal configs nest the language model's
    try:
        hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        return Shape(
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            num_hidden_layers=int(cfg["num_hidden_layers"]),
            intermediate_size=int(cfg.get("intermediate_size") or 4 * hidden),
            num_attention_heads=heads,
            num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=bool(cfg.get("attention_bias", False)) or cfg.get("model_type") == "qwen2",
            torch_dtype=cfg.get("torch_dtype") or cfg.get("dtype"),
            source=source,
        )
    except (KeyError, TypeError, ValueError):
        return None


def _shape_from_gguf(path: Path) -> tuple[Shape | None, int | None]:
    """Shape from a GGUF header, and the exact parameter count from its tensor shapes (memory-mapped, not read)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None, None
    try:
        reader = GGUFReader(str(path))
    except Exception:  # noqa: BLE001 (a damaged file: the dry run just lacks the count)
        return None, None
    exact = sum(int(t.n_elements) for t in reader.tensors)
    fields = {}
    arch = None
    for name, f in reader.fields.items():
        if name == "general.architecture":
            arch = bytes(f.parts[f.data[0]]).decode()
        elif f.types and len(f.data) == 1 and f.types[0].name.startswith(("UINT", "INT")):
            fields[name] = int(f.parts[f.data[0]][0])
    if arch is None:
        return None, exact
    vocab = reader.fields.get("tokenizer.ggml.tokens")

    def get(key: str) -> int | None:
        return fields.get(f"{arch}.{key}")

    heads = get("attention.head_count")
    if not (heads and get("embedding_length") and get("block_count") and vocab is not None):
        return None, exact
    shape = Shape(
        vocab_size=len(vocab.data),
        hidden_size=get("embedding_length"),
        num_hidden_layers=get("block_count"),
        intermediate_size=get("feed_forward_length") or 4 * get("embedding_length"),
        num_attention_heads=heads,
        num_key_value_heads=get("attention.head_count_kv") or heads,
        tie_word_embeddings=not any(t.name == "output.weight" for t in reader.tensors),
        source=f"GGUF header of {path.name}",
    )
    return shape, exact


def _cached_config_json(repo_id: str) -> Path | None:
    """A hub model's config.json if the Hugging Face cache has it (no download)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 (an id the hub would reject: nothing cached)
        return None
    return Path(found) if isinstance(found, str) else None


def _testbed_shape(config: Config) -> Shape:
    from neggrad.models.testbed.tokenizer import ALPHABET, SPECIAL_TOKENS

    t = config.model.testbed
    return Shape(
        vocab_size=len(SPECIAL_TOKENS) + len(ALPHABET),
        hidden_size=t.hidden_size,
        num_hidden_layers=t.num_hidden_layers,
        intermediate_size=t.intermediate_size,
        num_attention_heads=t.num_attention_heads,
        num_key_value_heads=t.num_key_value_heads,
        tie_word_embeddings=True,
        qkv_bias=True,
        torch_dtype="float32",
        source="model.testbed",
    )


def _model_plan(config: Config, plan: Plan) -> tuple[Shape | None, Architecture | None]:
    from neggrad.config.paths import is_package_path, resolve_package_path

    mc = config.model
    m = plan.model
    m["name_or_path"] = mc.name_or_path
    shape, exact, arch = None, None, None
    if mc.name_or_path == "testbed":
        from neggrad.models.testbed.model import build_config as testbed_config
        from neggrad.models.testbed.tokenizer import build_tokenizer

        shape = _testbed_shape(config)
        arch = _meta_architecture(testbed_config(mc.testbed, build_tokenizer()))
        m["kind"] = "testbed (built locally" + (", SFT warm start cached)" if config.sft.enabled else ")")
    else:
        path = resolve_package_path(mc.name_or_path, key="model.name_or_path")
        if is_package_path(mc.name_or_path):
            m["resolved_path"] = path
        folder = Path(path).expanduser()
        if folder.is_dir():
            m["kind"] = "local folder"
            if mc.gguf_file:
                gguf = folder / mc.gguf_file
                if not gguf.is_file():
                    plan.notes.append(f"model.gguf_file {mc.gguf_file!r} is not in {path}: loading will fail")
                else:
                    m["gguf_size_mb"] = round(gguf.stat().st_size / 2**20, 1)
                    shape, exact = _shape_from_gguf(gguf)
            elif (folder / "config.json").is_file():
                shape = _shape_from_config_json(json.loads((folder / "config.json").read_text()), "config.json")
                arch = _folder_architecture(folder, trust_remote_code=mc.trust_remote_code)
            else:
                plan.notes.append(f"{path} has no config.json: loading will fail")
        else:
            from neggrad.models.load import local_folder

            local_folder(path)  # a path that looks local and does not exist: the ConfigError training would raise
            m["kind"] = "hub id"
            cached = None if mc.gguf_file else _cached_config_json(path)
            if cached is not None:
                m["kind"] = "hub id (config.json in the Hugging Face cache)"
                shape = _shape_from_config_json(json.loads(cached.read_text()), "cached config.json")
                arch = _folder_architecture(cached.parent, trust_remote_code=mc.trust_remote_code)
            else:
                m["kind"] = "hub id (not in the local cache: downloaded when training starts)"
    _describe_model(config, m, shape, arch, exact)
    return shape, arch


def _describe_model(
    config: Config, m: dict, shape: Shape | None, arch: Architecture | None, exact: int | None
) -> None:
    """The plan's model lines past where the weights come from: dtype, device, LoRA, rollout, parameters, shape."""
    mc = config.model
    if mc.gguf_file:
        m["gguf_file"] = f"{mc.gguf_file} (dequantised on load)"
    dtype = mc.dtype
    if dtype == "auto":
        checkpoint_dtype = _TORCH_DTYPE_NAMES.get(str(shape.torch_dtype)) if shape else None
        dtype = "float32" if mc.gguf_file else checkpoint_dtype
        m["dtype"] = f"auto ({dtype or 'unknown: assumed float32'})"
        dtype = dtype or "float32"
    else:
        m["dtype"] = dtype
    m["device"] = mc.device
    m["gradient_checkpointing"] = mc.gradient_checkpointing
    lora = mc.lora
    m["lora"] = (
        f"r={lora.r}, alpha={lora.alpha:g}, dropout={lora.dropout:g}, targets={lora.target_modules}"
        if lora.enabled
        else "off (full fine-tuning)"
    )
    m["rollout"] = config.rollout.backend + (
        f" ({config.rollout.vllm.mode}, gpu_memory_utilization {config.rollout.vllm.gpu_memory_utilization:g})"
        if config.rollout.backend == "vllm"
        else ""
    )
    if exact is not None:
        m["parameters"] = exact
        m["parameters_how"] = "exact, from the GGUF tensor shapes"
    elif arch is not None:
        m["parameters"] = arch.parameters
        m["parameters_how"] = (
            f"exact, {arch.name} built on the meta device from {shape.source if shape else 'its config'}"
        )
    elif shape is not None:
        m["parameters"] = shape.parameters()
        m["parameters_how"] = f"estimate from {shape.source}"
    if shape is not None:
        m["shape"] = (
            f"hidden {shape.hidden_size}, layers {shape.num_hidden_layers}, vocab {shape.vocab_size}, "
            f"MLP {shape.intermediate_size}, heads {shape.num_attention_heads}/{shape.num_key_value_heads} (q/kv)"
        )
    m["_dtype"] = dtype


# ---------------------------------------------------------------------------------------------- data


def _count_source(source: str, *, subset, split, columns, answer_format, filters) -> tuple[int | None, str]:
    from neggrad.tasks.data.registry import EVAL_SETS, eval_set
    from neggrad.tasks.data.sets import load_rows
    from neggrad.tasks.data.sources import is_local

    if source.lower() in EVAL_SETS and not is_local(source):
        entry = eval_set(source)
        size = f"{entry.size} problems per the registry"
        return None, f"{source} = hub {entry.hub_id} split {entry.split!r} ({size}; not loaded in dry-run)"
    if not is_local(source):
        where = source + (f" ({subset})" if subset else "") + f" split {split!r}"
        return None, f"hub {where} (not loaded in dry-run)"
    rows = load_rows(source, subset=subset, split=split, columns=columns, answer_format=answer_format, filters=filters)
    return len(rows), f"local file {source}"


def _data_plan(config: Config, plan: Plan) -> None:
    from neggrad.tasks.data.sets import MAX_DEFAULT_HOLDOUT
    from neggrad.tasks.data.sources import Columns

    def _columns(c) -> Columns:
        return Columns(c.problem, c.answer, c.solution)

    data, d = config.data, plan.data
    if data.source is None:
        d["source"] = "arithmetic testbed (task section)"
        d["train_prompts"] = "unbounded stream"
        d["eval_prompts"] = config.task.eval_size
        d["reward"] = config.reward.kind
        return
    n, desc = _count_source(
        data.source,
        subset=data.subset,
        split=data.split,
        columns=_columns(data.columns),
        answer_format=data.answer_format,
        filters=data.filters,
    )
    d["source"] = desc
    if data.filters:
        d["filters"] = data.filters
    if data.eval_source is None:
        if n is None:
            d["train_prompts"] = "not loaded in dry-run"
            d["eval_prompts"] = (
                f"{data.eval_size} held out of source" if data.eval_size else "a tenth of source (at most 500)"
            )
        else:
            n_eval = data.eval_size or min(MAX_DEFAULT_HOLDOUT, max(1, n // 10))
            d["train_prompts"] = n - n_eval
            d["eval_prompts"] = f"{n_eval} held out of source"
            if n_eval >= n:
                plan.notes.append(f"data.source has {n} usable rows, too few to hold out {n_eval}")
    else:
        d["train_prompts"] = n if n is not None else "not loaded in dry-run"
        m, eval_desc = _count_source(
            data.eval_source,
            subset=data.eval_subset,
            split=data.eval_split,
            columns=_columns(data.eval_columns or data.columns),
            answer_format=data.eval_answer_format or data.answer_format,
            filters=None,
        )
        d["eval_source"] = eval_desc
        if m is not None:
            d["eval_prompts"] = min(m, data.eval_size or m)
        elif data.eval_size:
            d["eval_prompts"] = f"first {data.eval_size}"
    d["prompt_format"] = (
        "chat template" + (" + system prompt" if data.system_prompt else "")
        if data.chat_template
        else ("plain template")
    )
    d["reward"] = config.reward.kind + (
        f" + format {config.reward.format_weight:g}" if config.reward.format_weight else ""
    )


# ---------------------------------------------------------------------------------------------- schedule, memory


def _schedule_plan(config: Config, plan: Plan) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    s = plan.schedule
    s["method"] = config.method
    s["steps"] = config.max_steps
    if config.budget.kind:
        s["budget"] = {config.budget.kind: config.budget.limit}
    s["processes"] = world
    s["prompts_per_step"] = config.num_prompts * world
    s["completions_per_step"] = config.generation_batch_size * world
    s["group_size"] = config.num_generations
    s["max_completion_length"] = config.max_completion_length
    per_step = config.num_iterations * config.steps_per_generation
    s["optimizer_steps_per_step"] = per_step
    s["optimizer_steps"] = per_step * config.max_steps
    s["micro_batch"] = config.per_device_train_batch_size
    s["gradient_accumulation_steps"] = config.gradient_accumulation_steps


def _memory_plan(config: Config, plan: Plan, shape: Shape | None, arch: Architecture | None) -> None:
    mem = plan.memory
    params = plan.model.get("parameters")
    dtype = plan.model.pop("_dtype")
    excluded = "activations, KV cache during generation, CUDA context, allocator fragmentation"
    if config.rollout.backend == "vllm" and config.rollout.vllm.mode == "colocate":
        excluded += f"; vLLM (colocated: it takes {config.rollout.vllm.gpu_memory_utilization:g} of the GPU)"
    elif config.rollout.backend == "vllm":
        excluded += "; vLLM (server mode: its own GPUs)"
    mem["not_included"] = excluded
    if params is None:
        mem["note"] = "unknown: the model's config.json is not readable without loading or downloading"
        return
    b = BYTES[dtype]
    gib = 2**30
    lora = config.model.lora
    weights = params * b
    if lora.enabled and (arch is not None or shape is not None):
        trainable = (arch or shape).lora_parameters(lora.r, lora.target_modules)
        # peft keeps adapters in float32 (autocast_adapter_dtype) whatever the base dtype: 4 B each
        adapter = trainable * 4
        grads, adam = trainable * 4, trainable * 8
        how = "exact" if arch is not None else "estimate"
        mem["trainable_parameters"] = f"{trainable} (LoRA adapters, {how}; float32)"
        mem["weights"] = weights + adapter
        reference = 0
        mem["reference"] = "none (adapters disabled)" if config.beta > 0 else "none (beta = 0)"
    else:
        if lora.enabled:
            mem["note"] = "LoRA size unknown without the model's layer shapes; full fine-tuning figures shown"
        trainable = params
        grads, adam = params * b, 2 * params * b
        mem["trainable_parameters"] = f"{params} (all)"
        mem["weights"] = weights
        reference = weights if config.beta > 0 else 0
        mem["reference"] = f"frozen copy ({dtype})" if config.beta > 0 else "none (beta = 0)"
    mem["gradients"] = grads
    mem["adamw_states"] = adam
    mem["reference_bytes"] = reference
    mem["total"] = mem["weights"] + grads + adam + reference
    mem["per_gpu_gib"] = round(mem["total"] / gib, 2)
    mem["dtype"] = dtype
    if shape is not None:  # completion positions only: the prompt adds its share on top
        mem["logits_fp32"] = config.per_device_train_batch_size * config.max_completion_length * shape.vocab_size * 4


def build_plan(config: Config) -> Plan:
    """The plan of ``config``: model, data, schedule and a memory estimate, without loading weights."""
    plan = Plan()
    shape, arch = _model_plan(config, plan)
    _data_plan(config, plan)
    _schedule_plan(config, plan)
    _memory_plan(config, plan, shape, arch)
    return plan


# ---------------------------------------------------------------------------------------------- text


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,}"


def format_plan(plan: Plan, *, title: str = "neggrad train --dry-run") -> str:
    """The plan as aligned text lines."""
    m, d, s, mem = plan.model, plan.data, plan.schedule, plan.memory
    lines = [f"{title}: resolved plan (no weights loaded)", "", "model"]

    def row(key: str, value) -> None:
        lines.append(f"  {key:<28}{value}")

    row("name_or_path", m["name_or_path"])
    for key in ("resolved_path", "kind", "gguf_file", "gguf_size_mb", "dtype", "device", "gradient_checkpointing"):
        if key in m:
            row(key, m[key])
    row("lora", m["lora"])
    row("rollout", m["rollout"])
    if "parameters" in m:
        row("parameters", f"{_count(m['parameters'])} ({m['parameters_how']})")
    else:
        row("parameters", "unknown (config.json not readable without loading or downloading)")
    if "shape" in m:
        row("shape", m["shape"])
    lines += ["", "data"]
    for key in ("source", "filters", "train_prompts", "eval_source", "eval_prompts", "prompt_format", "reward"):
        if key in d:
            row(key, d[key])
    lines += ["", "schedule"]
    row("method", s["method"])
    row("steps", s["steps"])
    for kind, limit in s.get("budget", {}).items():
        row("budget", f"{limit:,} {kind}: ends at the first step that reaches it, at most the steps above")
    if s["processes"] > 1:
        row("processes", f"{s['processes']} (WORLD_SIZE; figures below are global)")
    row("prompts per step", f"{s['prompts_per_step']} x {s['group_size']} completions (group size)")
    row("completions per step", s["completions_per_step"])
    row("max completion length", s["max_completion_length"])
    row("micro-batch x accumulation", f"{s['micro_batch']} x {s['gradient_accumulation_steps']}")
    row("optimizer steps", f"{s['optimizer_steps']} ({s['optimizer_steps_per_step']} per step)")
    lines += ["", "memory per GPU (estimate)"]
    if "total" not in mem:
        row("estimate", mem.get("note", "unknown"))
        row("not included either way", mem["not_included"])
    else:
        row("trainable parameters", mem["trainable_parameters"])
        row(f"weights ({mem['dtype']})", _gib(mem["weights"]))
        row("gradients", _gib(mem["gradients"]))
        row("AdamW states (2 per param)", _gib(mem["adamw_states"]))
        row(
            "KL reference",
            f"{mem['reference']}" + (f": {_gib(mem['reference_bytes'])}" if mem["reference_bytes"] else ""),
        )
        row("total", _gib(mem["total"]))
        if "logits_fp32" in mem:  # measured on an H200 (benchmarks/README.md): the update's peak was ~15 of these
            row(
                "logits, one micro-batch",
                f"{_gib(mem['logits_fp32'])} in float32 at full length; the update holds several such tensors "
                "(an H200 run peaked at about 15 of them above the total): lower per_device_train_batch_size "
                "if it runs out of memory",
            )
        row("not included", mem["not_included"])
        if "note" in mem:
            row("note", mem["note"])
    if plan.notes:
        lines += ["", "warnings"] + [f"  {note}" for note in plan.notes]
    return "\n".join(lines) + "\n"
