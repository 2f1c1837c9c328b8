"""A slim one-token decode step for Llama- and Qwen2-architecture models (``rollout.compact`` on ``hf_lean``).

On the CPU a small model's decode forward through transformers is overhead-bound: on the testbed model (1 M
parameters) one forward of 8 rows costs about 2 ms at one thread, of which the arithmetic is a small part; the
rest is some 70 tensor ops per layer and the Python around them (mask and position bookkeeping, kernel dispatch,
output capture). ``SlimDecodeStep`` computes the same function with fewer ops: the query, key and value
projections as one matrix product (their weights concatenated), the gate and up projections as one, the rotary
embedding applied to queries and keys together, and attention through ``scaled_dot_product_attention`` over the
filled slots of the static KV cache the prefill made (the transformers ``StaticCache``, written in place at the
step's slot).

It runs only where it was checked against the model's own forward (tests/test_lean_compact.py: logits equal to
float tolerance): the exact classes ``LlamaForCausalLM`` and ``Qwen2ForCausalLM``, the default rotary embedding,
no sliding window, SiLU MLP, every projection a plain ``torch.nn.Linear`` (no adapters), SDPA or eager attention,
float32 weights on the CPU. ``slim_decode_step`` returns None for anything else and the loop keeps the model's own
forward. On a GPU it is not used: there the fused weight copies (about two thirds of the layers' weights) would
cost memory, and its speed is unmeasured.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import StaticCache


def slim_decode_step(model) -> SlimDecodeStep | None:
    """A ``SlimDecodeStep`` over ``model``'s current weights, or None where the model is not one it supports."""
    return SlimDecodeStep(model) if supports(model) else None


def supports(model) -> bool:
    """Whether ``SlimDecodeStep`` computes ``model``'s forward (see the module docstring for the conditions)."""
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    if type(model) not in (LlamaForCausalLM, Qwen2ForCausalLM):
        return False
    if model.device.type != "cpu" or model.dtype != torch.float32:  # where it was measured and checked
        return False
    config = model.config
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default" or getattr(config, "use_sliding_window", False):
        return False
    if config.hidden_act != "silu" or config._attn_implementation not in ("sdpa", "eager"):
        return False
    if getattr(config, "pretraining_tp", 1) != 1:
        return False
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        linears = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        if any(type(m) is not torch.nn.Linear for m in linears) or getattr(attn, "sliding_window", None):
            return False
    return type(model.lm_head) is torch.nn.Linear


class SlimDecodeStep:
    """``step(token, position, allowed, slot, cache) -> (n, V) logits``: one decode forward of ``n`` rows.

    The fused weights are copies made when the step is built: build one per rollout (the weights change with
    every update), and do not train the model while it is in use."""

    def __init__(self, model):
        base = model.model
        self.embed, self.norm, self.head = base.embed_tokens, base.norm, model.lm_head
        self.rotary = base.rotary_emb
        config = model.config
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.layers = [fused_weights(layer) for layer in base.layers]

    @torch.no_grad()
    def __call__(self, token: Tensor, position: Tensor, allowed: Tensor, slot: int, cache: StaticCache) -> Tensor:
        """(n,) tokens at (n, 1) positions, (n, L) bool keys each may attend, written at cache ``slot``."""
        hidden = self.embed(token)[:, None, :]  # (n, 1, H)
        cos, sin = self.rotary(hidden, position)  # (n, 1, D)
        cos, sin = cos[:, None], sin[:, None]  # (n, 1, 1, D): over heads
        mask = allowed[:, None, None, :]  # (n, 1, 1, L)
        for weights, layer in zip(self.layers, cache.layers, strict=True):
            hidden = hidden + self._attention(weights, hidden, cos, sin, mask, slot, layer)
            hidden = hidden + mlp_block(weights, hidden)
        return self.head(rms_norm(hidden[:, 0], self.norm.weight, self.norm.variance_epsilon))

    def _attention(self, w: dict, hidden: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, slot: int, layer) -> Tensor:
        """The attention block of one layer for the step's rows; writes its keys and values into ``layer``."""
        n, d = hidden.shape[0], self.head_dim
        x = rms_norm(hidden, w["norm1"], w["eps"])
        qkv = F.linear(x, w["qkv"], w["qkv_bias"]).view(n, self.heads + 2 * self.kv_heads, d)
        qk = qkv[:, : self.heads + self.kv_heads, None, :]  # (n, h + kv, 1, D)
        qk = rotary(qk, cos, sin)
        q, k = qk[:, : self.heads], qk[:, self.heads :]  # (n, h, 1, D), (n, kv, 1, D)
        layer.keys[:, :, slot] = k[:, :, 0]
        layer.values[:, :, slot] = qkv[:, self.heads + self.kv_heads :]
        filled = slice(0, slot + 1)  # the slots after this one are empty (and masked): attend only the filled ones
        keys, values = layer.keys[:, :, filled], layer.values[:, :, filled]
        gqa = self.heads != self.kv_heads
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask[..., filled], enable_gqa=gqa)  # (n,h,1,D)
        return F.linear(out.reshape(n, 1, self.heads * d), w["o"], w["o_bias"])


def fused_weights(layer, *, detach: bool = True) -> dict:
    """One decoder layer's weights with q/k/v and gate/up concatenated, the rest as is. ``detach``: copies cut from
    the autograd graph (the decode step's); otherwise concatenated differentiably, so that gradients reach the
    model's own parameters (``neggrad.models.packed``, the training forward)."""
    attn, mlp = layer.self_attn, layer.mlp
    projections = (attn.q_proj, attn.k_proj, attn.v_proj)
    biases = [p.bias if p.bias is not None else p.weight.new_zeros(p.out_features) for p in projections]
    has_bias = any(p.bias is not None for p in projections)
    cut = (lambda t: t.detach()) if detach else (lambda t: t)
    return {
        "norm1": layer.input_layernorm.weight,
        "norm2": layer.post_attention_layernorm.weight,
        "eps": layer.input_layernorm.variance_epsilon,
        "qkv": cut(torch.cat([p.weight for p in projections])),
        "qkv_bias": cut(torch.cat(biases)) if has_bias else None,
        "o": attn.o_proj.weight,
        "o_bias": attn.o_proj.bias,
        "gate_up": cut(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])),
        "gate_up_bias": None if mlp.gate_proj.bias is None else cut(torch.cat([mlp.gate_proj.bias, mlp.up_proj.bias])),
        "down": mlp.down_proj.weight,
        "down_bias": mlp.down_proj.bias,
    }


def rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """The rotary embedding of ``x`` (..., D): ``x cos + rotate_half(x) sin``, as transformers' Llama / Qwen2."""
    d = x.shape[-1]
    return x * cos + torch.cat((-x[..., d // 2 :], x[..., : d // 2]), dim=-1) * sin


def mlp_block(w: dict, hidden: Tensor) -> Tensor:
    """The MLP block of one layer on ``hidden`` (..., H): down(silu(gate(x)) * up(x)) with gate and up as one
    product, x the post-attention RMSNorm of ``hidden``."""
    gate, up = F.linear(rms_norm(hidden, w["norm2"], w["eps"]), w["gate_up"], w["gate_up_bias"]).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, w["down"], w["down_bias"])


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """transformers' Llama / Qwen2 RMSNorm for float32 (``supports`` admits no other dtype), as one fused op."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps)
