"""Loading the policy: the testbed (built locally, SFT warm start cached) or a Hugging Face model.

A Hugging Face model comes from a hub id or a local folder (or a GGUF file in either; ``pkg://PACKAGE`` names an
installed package's folder, :mod:`neggrad.config.paths`), in ``model.dtype``, on
``model.device``, optionally with gradient checkpointing and LoRA adapters (``model.lora``). With LoRA only the
adapters train, and the KL reference is the policy with its adapters switched off (:func:`reference_model`), so
no second copy of the weights exists. A LoRA checkpoint holds the adapters only; resuming rebuilds the base the
same way and loads them on top.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from neggrad.config import Config, ConfigError, LoraConfig, ModelConfig
from neggrad.config.paths import resolve_package_path

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""``model.dtype`` names; "auto" keeps the checkpoint's own dtype."""

_CUSTOM_TOKENIZER_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
"""Saved tokenizer classes that AutoTokenizer would swap for the architecture's own (Qwen2's regex pre-tokenizer
replaces a custom one, ENVIRONMENT.md), so they are loaded as they were saved."""


# ---------------------------------------------------------------------------------------------- where and how


def resolve_device(model_config: ModelConfig) -> torch.device:
    """``model.device`` as a torch device; "auto" picks this process's GPU for a Hugging Face model."""
    if model_config.device != "auto":
        try:
            device = torch.device(model_config.device)
        except RuntimeError:
            raise ConfigError(
                f"model.device {model_config.device!r} is not a device: use auto, cpu, cuda or cuda:N"
            ) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"model.device is {model_config.device!r} but CUDA is not available: use auto or cpu")
        return device
    if model_config.name_or_path == "testbed" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def _dtype_works(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether a matmul and its backward run in ``dtype`` on ``device`` (a CPU build may lack half kernels)."""
    try:
        x = torch.ones(4, 4, dtype=dtype, device=device, requires_grad=True)
        (x @ x).sum().backward()
    except RuntimeError:
        return False
    return True


def resolve_dtype(model_config: ModelConfig, device: torch.device) -> torch.dtype | str:
    """``model.dtype`` as a torch dtype ("auto" passes through); a dtype the device cannot train in is refused."""
    if model_config.dtype == "auto":
        return "auto"
    dtype = DTYPES[model_config.dtype]
    if dtype is torch.float32:
        return dtype
    if device.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"model.dtype bfloat16: {torch.cuda.get_device_name(device)} has no bfloat16 support; "
            "use model.dtype: float16 or float32"
        )
    if not _dtype_works(dtype, device):
        raise ConfigError(
            f"model.dtype {model_config.dtype}: this {device.type.upper()} (torch {torch.__version__}) cannot train "
            "in it; use model.dtype: float32"
        )
    return dtype


def _require_peft():
    try:
        import peft
    except ImportError:
        raise ConfigError("model.lora.enabled needs the peft package: pip install 'neggrad[lora]'") from None
    return peft


def local_folder(name_or_path: str) -> Path | None:
    """The folder ``name_or_path`` names, None for a hub id; a path that does not exist is a ConfigError."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ConfigError(f"model.name_or_path {name_or_path!r} is a file; give its folder (and model.gguf_file)")
    looks_local = name_or_path.startswith(("/", ".", "~")) or "\\" in name_or_path or name_or_path.count("/") > 1
    if looks_local:
        raise ConfigError(
            f"model folder {name_or_path!r} does not exist: check model.name_or_path (a local folder, or a hub id "
            "such as Qwen/Qwen2.5-Math-1.5B)"
        )
    return None


# ---------------------------------------------------------------------------------------------- loading


def _load_testbed_folder(path: Path):
    from transformers import Qwen2ForCausalLM

    from neggrad.models.testbed.tokenizer import load_tokenizer

    return Qwen2ForCausalLM.from_pretrained(path, dtype=torch.float32), load_tokenizer(path)


def _load_tokenizer(source: str | Path, model_config: ModelConfig, gguf_file: str | None):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    kwargs: dict = {"padding_side": "left"}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if model_config.trust_remote_code:
        kwargs["trust_remote_code"] = True
    saved = Path(source) / "tokenizer_config.json"
    custom = saved.is_file() and json.loads(saved.read_text()).get("tokenizer_class") in _CUSTOM_TOKENIZER_CLASSES
    tokenizer = (PreTrainedTokenizerFast if custom else AutoTokenizer).from_pretrained(str(source), **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_hf(source: str | Path, model_config: ModelConfig, *, dtype: torch.dtype | str, gguf_file: str | None):
    """Model and tokenizer from a hub id or folder; loading failures become one-line ConfigErrors."""
    from transformers import AutoModelForCausalLM

    folder = local_folder(str(source))
    if folder is not None and gguf_file is None and not (folder / "config.json").is_file():
        raise ConfigError(f"model folder {str(source)!r} has no config.json: it is not a saved Hugging Face model")
    if folder is not None and gguf_file is not None and not (folder / gguf_file).is_file():
        raise ConfigError(f"model.gguf_file {gguf_file!r} is not in {str(source)!r}")
    kwargs: dict = {"dtype": torch.float32 if gguf_file and dtype == "auto" else dtype}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if model_config.attn_implementation:
        kwargs["attn_implementation"] = model_config.attn_implementation
    if model_config.trust_remote_code:  # passed only when set, so transformers' own default (off) stands otherwise
        kwargs["trust_remote_code"] = True
    try:
        tokenizer = _load_tokenizer(source, model_config, gguf_file)
        model = AutoModelForCausalLM.from_pretrained(str(source), **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        offline = " (HF_HUB_OFFLINE is set: only cached hub models load)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ConfigError(f"could not load model {str(source)!r}{offline}: {first}") from exc
    if gguf_file:
        # dequantised to plain tensors on load; without this note save_pretrained refuses the model as quantised
        model.config.quantization_config = None
        model.hf_quantizer = None
        model.is_quantized = False
    return model, tokenizer


def _apply_lora(model, lora: LoraConfig, *, seed: int, adapter_dir: Path | None = None):
    """Wrap ``model`` in trainable LoRA adapters: fresh ones drawn from ``seed``, or those saved in ``adapter_dir``."""
    peft = _require_peft()
    if adapter_dir is not None:
        return peft.PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    target = lora.target_modules
    config = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=target if isinstance(target, str) else list(target),
        bias="none",
        task_type="CAUSAL_LM",
    )
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # A's random init: the same adapters whatever ran before in this process
        return peft.get_peft_model(model, config)


def _base_model(config: Config, device: torch.device, dtype, progress) -> tuple[torch.nn.Module, object, dict]:
    """The policy as a fresh run starts it, before adapters: testbed (with its warm start) or hub / folder."""
    mc = config.model
    if mc.name_or_path != "testbed":
        source = resolve_package_path(mc.name_or_path, key="model.name_or_path")  # pkg://PACKAGE: its folder
        model, tokenizer = _load_hf(source, mc, dtype=dtype, gguf_file=mc.gguf_file)
        return model, tokenizer, {}
    from neggrad.models.testbed.model import build_model
    from neggrad.models.testbed.sft import warm_start
    from neggrad.models.testbed.tokenizer import build_tokenizer

    if config.sft.enabled:
        sft_seed = config.seed if config.sft.seed is None else config.sft.seed
        ws = warm_start(mc.testbed, config.task, config.sft, seed=sft_seed, progress=progress)
        model, tokenizer = _load_testbed_folder(ws.path)
        return model, tokenizer, {"sft_accuracy": ws.accuracy, "sft_steps": ws.steps, "sft_cached": ws.cached}
    tokenizer = build_tokenizer()
    return build_model(mc.testbed, tokenizer, seed=config.seed), tokenizer, {}


def load_policy(
    config: Config, *, checkpoint: Path | None = None, progress: Callable[[dict], None] | None = None
) -> tuple[torch.nn.Module, object, dict]:
    """The policy to train and its tokenizer, plus facts for the summary (e.g. the SFT start's accuracy).

    ``checkpoint`` (a ``checkpoints/step-N/model`` folder) replaces the starting weights on resume: the whole model,
    or with ``model.lora.enabled`` the adapters, put on a base rebuilt exactly as the run first built it.
    """
    mc = config.model
    testbed = mc.name_or_path == "testbed"
    if mc.lora.enabled:
        _require_peft()  # before any loading, so a missing extra costs no time
    device = resolve_device(mc)
    dtype = resolve_dtype(mc, device)
    info: dict = {}
    if checkpoint is not None and not mc.lora.enabled:
        if testbed:
            model, tokenizer = _load_testbed_folder(checkpoint)
        else:
            model, tokenizer = _load_hf(checkpoint, mc, dtype=dtype, gguf_file=None)
    else:
        model, tokenizer, info = _base_model(config, device, dtype, progress)
    if testbed and dtype not in ("auto", torch.float32):
        model = model.to(dtype)
    model = model.to(device)
    if mc.gradient_checkpointing:
        # non-reentrant: gradients reach the adapters even when every input of a block is frozen. Newer transformers
        # name it activation checkpointing (the older name warns there); older ones have only the older name
        non_reentrant = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=non_reentrant)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=non_reentrant)
    if mc.lora.enabled:
        model = _apply_lora(model, mc.lora, seed=config.seed, adapter_dir=checkpoint)
    info["parameters"] = sum(p.numel() for p in model.parameters())
    info["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, tokenizer, info


# ---------------------------------------------------------------------------------------------- KL reference


def is_lora(model) -> bool:
    """Whether ``model`` carries peft adapters (then its reference is itself with adapters off)."""
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


class AdapterDisabledReference:
    """The frozen reference of a LoRA policy: the policy itself, run with its adapters switched off.

    It has what the reference pass uses (``__call__``, ``get_output_embeddings``, ``parameters``) and holds no
    weights of its own. It runs in eval mode (no adapter dropout) and restores the policy's mode after.
    """

    def __init__(self, model):
        if not is_lora(model):
            raise TypeError(f"{type(model).__name__} has no adapters to disable; use a frozen copy as reference")
        self.model = model

    def __call__(self, **kwargs):
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self.model.disable_adapter():
                return self.model(**kwargs)
        finally:
            self.model.train(was_training)

    def get_output_embeddings(self):
        return self.model.get_output_embeddings()

    @property
    def config(self):
        """The policy's model config (the shared-prompt forward builds its KV cache from it)."""
        return self.model.config

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.model.parameters()


def reference_model(model, config: Config, *, resumed: bool = False):
    """The KL reference: the policy's starting weights, frozen.

    LoRA: the policy with its adapters disabled (no copy, also after a resume). Otherwise a frozen deep copy of the
    fresh policy; on resume ``model`` holds trained weights, so the starting policy is loaded again instead.
    """
    if is_lora(model):
        return AdapterDisabledReference(model)
    start = load_policy(config)[0] if resumed else copy.deepcopy(model)
    return start.eval().requires_grad_(False)
