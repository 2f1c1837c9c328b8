"""Rollouts with vLLM (Kwon et al. 2023, arXiv:2309.06180): the same interface and Rollout as ``hf.py``.

vLLM only samples. The log-probs of the loss (old, current, reference) always come from the training model, so a
vLLM kernel that rounds differently changes which tokens are drawn, never the gradient's arithmetic.

Two modes (``rollout.vllm.mode``):

- ``colocate``: a ``vllm.LLM`` in this process on the training GPU, taking ``gpu_memory_utilization`` of its
  memory (``distributed_executor_backend="external_launcher"``, as TRL's colocate mode, so its model lives in this
  process). After every update the trainer calls :meth:`VLLMRollout.sync_weights`, which hands the new weights to
  the vLLM model's ``load_weights``; LoRA adapters are merged for the copy and unmerged after. With
  ``rollout.vllm.sleep`` the engine sleeps (level 2: weights and KV cache freed) after each generation, and the
  current weights are loaded when it wakes for the next one.
- ``server``: a vLLM server on other GPUs, reached at ``base_url`` through its OpenAI-compatible
  ``/v1/completions`` endpoint with token-id prompts. Weights go to it after every update through TRL's
  ``VLLMClient`` (``init_communicator`` then ``update_named_param``), so start the server the way TRL's vLLM
  integration guide says for weight updates (``trl vllm-serve --model <name_or_path>``, or ``vllm serve`` with
  the flags of your TRL release). ``rollout.vllm.sync_weights: false`` leaves the server's weights alone.

Both stop at the tokenizer's EOS (``stop_token_ids``) as ``hf.py`` does, and draw one sampling seed per
completion from the torch RNG in colocate mode, so a run with a fixed seed samples the same completions again
(the server draws its own randomness). Nothing here imports vllm until an engine is built; without it, building
one raises a ConfigError that says ``pip install 'neggrad[vllm]'``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from neggrad.config import Config, ConfigError, VLLMConfig
from neggrad.rollout.base import Rollout

logger = logging.getLogger(__name__)

INSTALL = "pip install 'neggrad[vllm]'"


def import_vllm():
    """The vllm module, or a one-line ConfigError saying how to install it."""
    try:
        import vllm
    except ImportError:
        raise ConfigError(
            f"rollout.backend vllm needs the vllm package (CUDA GPUs only): {INSTALL}, or set rollout.backend: hf"
        ) from None
    return vllm


# ---------------------------------------------------------------------------------------------- conversion


def rollout_from_token_ids(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completions: Sequence[Sequence[int]],
    tokenizer,
) -> Rollout:
    """A :class:`Rollout` laid out exactly as ``HFRollout.generate`` lays it out, from engine token lists.

    Args:
        prompt_ids: (B, Tp) left-padded prompts, as the tokenizer pads them (``hf.py`` uses the same call).
        prompt_mask: (B, Tp) 1 for real prompt tokens.
        completions: B lists of generated token ids, each ending at its first EOS or at the length limit.
        tokenizer: gives ``eos_token_id``, ``pad_token_id`` and ``batch_decode``.

    Returns:
        The rollout: completion ids right-padded to the longest completion (T), ``pad_token_id`` after the first
        EOS, mask 1 up to and including it, ``truncated`` where no EOS was generated.
    """
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if len(completions) != prompt_ids.shape[0]:
        raise ValueError(f"{len(completions)} completions for {prompt_ids.shape[0]} prompts")
    kept, truncated = [], []
    for ids in completions:
        ids = list(ids)
        end = ids.index(eos) + 1 if eos in ids else len(ids)  # keep through the first EOS
        kept.append(ids[:end])
        truncated.append(eos not in ids)
    width = max(1, max(len(ids) for ids in kept))  # (T,) HF's width: the longest completion of the batch
    completion_ids = torch.full((len(kept), width), pad, dtype=torch.long)  # (B, T)
    completion_mask = torch.zeros((len(kept), width), dtype=torch.long)  # (B, T)
    for i, ids in enumerate(kept):
        completion_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        completion_mask[i, : len(ids)] = 1
    device = prompt_ids.device
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Rollout(
        prompt_ids,
        prompt_mask,
        completion_ids.to(device),
        completion_mask.to(device),
        torch.tensor(truncated, dtype=torch.bool, device=device),
        texts,
    )


@contextmanager
def hf_weights(model) -> Iterator[Iterator[tuple[str, torch.Tensor]]]:
    """The policy's weights under Hugging Face checkpoint names, as vLLM's ``load_weights`` reads them.

    A LoRA policy has its adapters merged into the base weights for the duration (W + alpha/r * B A) and
    unmerged after, and its names lose peft's ``base_model.model.`` prefix and ``.base_layer`` infix; the
    adapter matrices themselves are not sent. The tensors are the parameters themselves: copy them inside the
    ``with`` block (``load_weights`` does), since unmerging rewrites them.
    """
    lora = hasattr(model, "merge_adapter") and hasattr(model, "peft_config")
    if lora:
        model.merge_adapter()

    def items() -> Iterator[tuple[str, torch.Tensor]]:
        for name, param in model.named_parameters():
            if lora:
                if "lora_" in name:
                    continue
                name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            yield name, param.data

    try:
        yield items()
    finally:
        if lora:
            model.unmerge_adapter()


# ---------------------------------------------------------------------------------------------- engines


class _Colocated:
    """A ``vllm.LLM`` in this process (TRL's colocate layout)."""

    def __init__(self, source: str, vcfg: VLLMConfig, *, dtype: str, seed: int, trust_remote_code: bool):
        vllm = import_vllm()
        # external_launcher keeps vLLM's worker (and model) in this process; it reads torch.distributed's variables
        for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
            os.environ.setdefault(key, value)
        if "MASTER_PORT" not in os.environ:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                os.environ["MASTER_PORT"] = str(s.getsockname()[1])
        kwargs: dict = {
            "model": source,
            "dtype": dtype,
            "gpu_memory_utilization": vcfg.gpu_memory_utilization,
            "enable_sleep_mode": vcfg.sleep,
            "enable_prefix_caching": True,  # the G completions of a prompt share its prefix
            "distributed_executor_backend": "external_launcher",
            "seed": seed,
        }
        if vcfg.max_model_len is not None:
            kwargs["max_model_len"] = vcfg.max_model_len
        if trust_remote_code:
            kwargs["trust_remote_code"] = True
        self.vllm = vllm
        self.llm = vllm.LLM(**kwargs)

    def generate(self, prompts: list[list[int]], *, sampling: dict, seeds: list[int] | None) -> list[list[int]]:
        if seeds is None:
            params = [self.vllm.SamplingParams(**sampling)] * len(prompts)
        else:
            params = [self.vllm.SamplingParams(**sampling, seed=seed) for seed in seeds]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompts], params, use_tqdm=False)
        return [list(out.outputs[0].token_ids) for out in outputs]

    def load_weights(self, model) -> None:
        runner_model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        with hf_weights(model) as items:
            runner_model.load_weights(items)
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights

    def sleep(self) -> None:
        self.llm.sleep(level=2)

    def wake_up(self, tags: list[str]) -> None:
        torch.cuda.empty_cache()
        self.llm.wake_up(tags=tags)


def parse_completions(response: dict, num_prompts: int, n: int) -> list[list[int]]:
    """Token ids of each choice of a vLLM ``/v1/completions`` response, prompt-major (choice index i * n + j).

    Reads ``choices[k].token_ids`` (vLLM's ``return_token_ids``) or, from older servers, the ``token_id:<id>``
    strings of ``choices[k].logprobs.tokens`` (``return_tokens_as_token_ids``).
    """
    choices = sorted(response["choices"], key=lambda c: c["index"])
    if len(choices) != num_prompts * n:
        raise RuntimeError(f"the vLLM server returned {len(choices)} completions, expected {num_prompts * n}")
    out = []
    for choice in choices:
        if choice.get("token_ids") is not None:
            out.append([int(t) for t in choice["token_ids"]])
        elif choice.get("logprobs") and choice["logprobs"].get("tokens") is not None:
            out.append([int(str(t).removeprefix("token_id:")) for t in choice["logprobs"]["tokens"]])
        else:
            raise RuntimeError("the vLLM server's reply has no token ids (needs vLLM >= 0.8 with return_token_ids)")
    return out


class _Server:
    """A vLLM server: completions over HTTP, weight updates through TRL's client."""

    def __init__(self, vcfg: VLLMConfig):
        self.base_url = vcfg.base_url.rstrip("/")
        self.timeout = vcfg.timeout_s
        self.sync = vcfg.sync_weights
        models = self._request("GET", "/v1/models")
        self.model_name = models["data"][0]["id"]
        self.client = None

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                return json.loads(reply.read())
        except (urllib.error.URLError, TimeoutError) as exc:
            raise ConfigError(
                f"the vLLM server at {self.base_url} did not answer {method} {path} ({exc}): start it, or check "
                "rollout.vllm.base_url"
            ) from None

    def generate(self, prompts: list[list[int]], *, sampling: dict, seeds: list[int] | None) -> list[list[int]]:
        body = {
            "model": self.model_name,
            "prompt": prompts,
            "n": 1,
            "max_tokens": sampling["max_tokens"],
            "temperature": sampling["temperature"],
            "top_p": sampling["top_p"],
            "stop_token_ids": sampling["stop_token_ids"],
            "return_token_ids": True,
            "logprobs": 0,
            "return_tokens_as_token_ids": True,
        }
        return parse_completions(self._request("POST", "/v1/completions", body), len(prompts), 1)

    def load_weights(self, model) -> None:
        if not self.sync:
            return
        if self.client is None:
            try:
                from trl.generation.vllm_client import VLLMClient
            except ImportError:
                try:
                    from trl.extras.vllm_client import VLLMClient
                except ImportError:
                    raise ConfigError(
                        "rollout.vllm.mode server sends weights through TRL's VLLMClient: pip install trl, or set "
                        "rollout.vllm.sync_weights: false"
                    ) from None
            self.client = VLLMClient(base_url=self.base_url, connection_timeout=self.timeout)
            self.client.init_communicator(device=torch.cuda.current_device())
        with hf_weights(model) as items:
            for name, tensor in items:
                self.client.update_named_param(name, tensor)
        self.client.reset_prefix_cache()

    def sleep(self) -> None:
        """The server keeps its memory."""

    def wake_up(self, tags: list[str]) -> None:
        """The server keeps its memory."""


# ---------------------------------------------------------------------------------------------- the rollout engine


class VLLMRollout:
    """Sample completions with vLLM; same ``generate`` as ``HFRollout``, plus ``sync_weights`` after updates."""

    def __init__(
        self,
        model,
        tokenizer,
        engine,
        *,
        max_completion_length: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        sleep: bool = False,
        seeded: bool = True,
    ):
        if tokenizer.padding_side != "left":
            raise ValueError("the tokenizer must pad on the left (padding_side='left')")
        self.model = model
        self.tokenizer = tokenizer
        self.engine = engine
        self.max_completion_length = max_completion_length
        self.temperature = temperature
        self.top_p = top_p
        self.sleep = sleep
        self.seeded = seeded
        self.asleep = False
        self.engine.load_weights(model)  # the engine loaded name_or_path; the policy may differ (resume, LoRA)
        if sleep:
            self.engine.sleep()
            self.asleep = True

    @classmethod
    def from_config(cls, model, tokenizer, config: Config) -> VLLMRollout:
        """Start the engine ``config.rollout.vllm`` describes for ``model`` (a hub id or folder model)."""
        vcfg = config.rollout.vllm
        if config.model.name_or_path == "testbed":
            raise ConfigError("rollout.backend vllm needs a Hugging Face model (model.name_or_path), not the testbed")
        if config.model.gguf_file is not None:
            raise ConfigError(
                "rollout.backend vllm does not load model.gguf_file: save the model as a folder (save_pretrained) "
                "and point model.name_or_path at it"
            )
        if vcfg.mode == "server":
            engine = _Server(vcfg)
        else:
            import_vllm()
            dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
            from neggrad.config.paths import resolve_package_path  # noqa: PLC0415

            engine = _Colocated(
                resolve_package_path(config.model.name_or_path, key="model.name_or_path"),
                vcfg,
                dtype=dtype,
                seed=config.seed,
                trust_remote_code=config.model.trust_remote_code,
            )
        return cls(
            model,
            tokenizer,
            engine,
            max_completion_length=config.max_completion_length,
            temperature=config.temperature,
            top_p=config.top_p,
            sleep=vcfg.sleep and vcfg.mode == "colocate",
            seeded=vcfg.mode == "colocate",
        )

    separate_weights = True  # the engine holds its own copy: the loop syncs it after every update

    def generate_with_prefix(self, prompt: str, prefix: str, *, num_generations: int) -> Rollout:
        """Not offered: hinted re-generation needs the HF engines (``zero_variance.all_wrong: hint`` refuses vLLM)."""
        raise NotImplementedError("hinted re-generation (zero_variance.all_wrong: hint) needs rollout.backend hf")

    def sync_weights(self, model) -> None:
        """Copy the updated policy into the engine (asleep: done when it wakes for the next generation)."""
        self.model = model
        if not self.asleep:
            self.engine.load_weights(model)

    @torch.no_grad()
    def generate(self, prompts: list[str], *, num_generations: int = 1, greedy: bool = False) -> Rollout:
        """``num_generations`` completions of each prompt, groups contiguous: B = len(prompts) * G."""
        expanded = [p for p in prompts for _ in range(num_generations)]
        enc = self.tokenizer(expanded, return_tensors="pt", padding=True, add_special_tokens=False)
        prompt_ids, prompt_mask = enc["input_ids"], enc["attention_mask"]  # (B, Tp), on the CPU like every batch
        pairs = zip(enc["input_ids"], enc["attention_mask"], strict=True)
        unpadded = [row[mask.bool()].tolist() for row, mask in pairs]  # B lists: the prompts without padding
        sampling = {
            "max_tokens": self.max_completion_length,
            "temperature": 0.0 if greedy else self.temperature,
            "top_p": 1.0 if greedy else self.top_p,
            "stop_token_ids": [self.tokenizer.eos_token_id],
        }
        # one seed per completion, drawn from the torch RNG: the same run seed samples the same completions
        seeds = torch.randint(0, 2**31 - 1, (len(expanded),)).tolist() if self.seeded and not greedy else None
        if self.asleep:
            self.engine.wake_up(["weights"])
            self.engine.load_weights(self.model)
            self.engine.wake_up(["kv_cache"])
            self.asleep = False
        completions = self.engine.generate(unpadded, sampling=sampling, seeds=seeds)
        if self.sleep:
            self.engine.sleep()
            self.asleep = True
        return rollout_from_token_ids(prompt_ids, prompt_mask, completions, self.tokenizer)
