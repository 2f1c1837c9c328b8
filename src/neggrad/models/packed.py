"""The training forward without padding (``remove_padding``): Llama / Qwen2 over the real tokens only.

A GRPO micro-batch is padded twice: prompts on the left to the longest prompt, completions on the right to the
longest completion. Through a transformers model every padding position costs what a real token costs: the
projections and the MLP, most of the work, run on the whole (B, L) grid. Here the per-token work (norms,
projections, MLP, LM head) runs on the real tokens only, packed into one (N, H) matrix, and only attention sees
the padded grid: the queries, keys and values are scattered into it, attention runs with the padding masked, and
the outputs are gathered back. It is the idea of verl's ``use_remove_padding`` without a variable-length
attention kernel (none on the CPU), which on short sequences costs little.

The pass also runs only the positions that predict a completion token: each prompt's positions (its last one
predicts the first completion token) and completion position t where token t + 1 exists; with ``share_prompt``,
each distinct prompt once (``distinct_rows``), its keys and values gathered to the completions of its group, as
``neggrad.models.policy.shared_prompt_pass`` does through the KV cache (Prefix Grouper, arXiv:2506.05433).
Layers compute what transformers' ``LlamaDecoderLayer`` / ``Qwen2DecoderLayer`` compute (RMSNorm, rotary
embedding at the positions ``cumsum(mask) - 1`` that generation used, grouped-query SDPA attention with the
softmax scale 1 / sqrt(head dim), SiLU-gated MLP), with the query/key/value and gate/up products each as one
matrix product over concatenated weights. Logits, hidden states and gradients equal the model's own forward to
float rounding (tests/test_packed_forward.py).

It runs where it was checked: ``neggrad.rollout.slim.supports`` (exactly ``LlamaForCausalLM`` or
``Qwen2ForCausalLM``, default rotary embedding, no sliding window, SiLU, plain ``Linear`` projections, float32
on the CPU), no attention dropout, and the model itself, not a DDP / FSDP / PEFT wrapper (whose forward hooks
this pass would bypass). ``check`` says why not otherwise.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from neggrad.rollout.base import Rollout, distinct_rows
from neggrad.rollout.slim import fused_weights, mlp_block, rms_norm, rotary, supports


def refusal(model, reference=None, *, launched: bool = False) -> str | None:
    """Why ``remove_padding`` cannot run ``model`` (and the KL ``reference``, when there is one), or None when it
    can; ``launched``: under a distributed launcher (accelerate / torchrun)."""
    if launched:
        return (
            "remove_padding runs its own forward, past the DDP / FSDP wrapper that synchronises gradients under "
            "accelerate or torchrun"
        )
    for what, m in (("model", model), ("KL reference model", reference)):
        if m is None:
            continue
        if not supports(m):
            return (
                f"remove_padding runs its own Llama / Qwen2 forward, checked for LlamaForCausalLM and "
                f"Qwen2ForCausalLM in float32 on the CPU with plain Linear layers (no LoRA adapters); the {what} is "
                f"{type(m).__name__} ({getattr(m, 'dtype', '?')}, {getattr(m, 'device', '?')})"
            )
        if getattr(m.config, "attention_dropout", 0.0):
            return (
                f"remove_padding computes attention without dropout; the {what}'s attention_dropout is "
                f"{m.config.attention_dropout}"
            )
        if checkpointing_on(m):
            return f"remove_padding runs its own forward, without the {what}'s gradient checkpointing"
    return None


def checkpointing_on(model) -> bool:
    """Whether ``model`` has (transformers') gradient checkpointing on, asked by the property's newer name
    ``is_activation_checkpointing`` where the class has it (the older name warns there), else the older one."""
    newer = hasattr(type(model), "is_activation_checkpointing")
    return bool(getattr(model, "is_activation_checkpointing" if newer else "is_gradient_checkpointing", False))


def check(model, reference=None, *, launched: bool = False) -> None:
    """Raise ValueError saying why ``remove_padding`` cannot run ``model`` (``refusal``); return None when it can."""
    why = refusal(model, reference, launched=launched)
    if why:
        raise ValueError(f"{why}: set remove_padding to false, or to auto to use it only where it runs")


def packed_pass(model, rollout: Rollout, *, share_prompt: bool, logits: bool) -> tuple[Tensor | None, Tensor]:
    """``(logits, hidden)`` as ``completion_forward`` returns them: (B, T, V) or None, and (B, T, H) LM-head
    inputs at the positions that predict each completion token; zeros at the positions of padding (masked).

    ``share_prompt``: each distinct prompt runs once. ``logits``: False skips the LM head (``completion_hidden``).
    """
    check(model)
    base = model.model
    rollout = rollout.to(next(model.parameters()).device)
    first = int(rollout.prompt_mask.any(dim=0).int().argmax())  # columns left of it are padding in every row
    p_ids, p_mask = rollout.prompt_ids[:, first:], rollout.prompt_mask[:, first:].bool()  # (B, Tp)
    c_ids, c_mask = rollout.completion_ids, rollout.completion_mask.bool()  # (B, T)
    batch, tp, t = p_ids.shape[0], p_ids.shape[1], c_ids.shape[1]
    if share_prompt:
        rows, inverse = distinct_rows(p_ids, p_mask.long())  # (U,), (B,)
    else:
        rows = inverse = torch.arange(batch, device=p_ids.device)
    layers = [fused_weights(layer, detach=False) for layer in base.layers]
    config = model.config
    shape = _Shape(
        heads=config.num_attention_heads,
        kv_heads=config.num_key_value_heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
    )

    # The prompts: every real position of each distinct prompt; the last column (a real token: prompts are
    # left padded) predicts the first completion token.
    u_mask = p_mask[rows]  # (U, Tp)
    u_pos = (u_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    causal = torch.ones(tp, tp, dtype=torch.bool, device=u_mask.device).tril()
    prompt_attn = (causal & u_mask[:, None, :]) | torch.eye(tp, dtype=torch.bool, device=u_mask.device)
    x, prompt_kv = _run(base, layers, shape, p_ids[rows], u_mask, u_pos, prompt_attn[:, None], None)
    hidden_first = x.view(len(rows), tp, -1)[:, -1][inverse]  # (B, H)

    # The completions: position j runs when token j + 1 exists (it predicts it), on top of its prompt's keys.
    width = t - 1
    chunks = [hidden_first[:, None]] if t else []
    if width > 0:
        run = c_mask[:, 1:]  # (B, T - 1); contiguous from column 0, so every key a run query needs is run
        pos = (p_mask.sum(dim=1, keepdim=True) + torch.arange(width, device=run.device)).masked_fill(~run, 0)
        causal = torch.ones(width, width, dtype=torch.bool, device=run.device).tril()
        own = (causal & run[:, None, :]) | torch.eye(width, dtype=torch.bool, device=run.device)
        attn = torch.cat([p_mask[:, None, :].expand(batch, width, tp), own], dim=2)  # (B, T-1, Tp + T-1)
        prefix = [(k[inverse], v[inverse]) for k, v in prompt_kv]
        x, _ = _run(base, layers, shape, c_ids[:, :width], run, pos, attn[:, None], prefix)
        chunks.append(x.view(batch, width, -1))
    hidden = torch.cat(chunks, dim=1) if chunks else c_ids.new_zeros(batch, 0, config.hidden_size).float()
    if not logits:
        return None, hidden
    keep = c_mask.reshape(-1).nonzero().squeeze(1)  # the positions whose logits are read
    flat = F.linear(hidden.reshape(batch * t, -1)[keep], model.lm_head.weight, model.lm_head.bias)  # (N, V)
    out = flat.new_zeros(batch * t, flat.shape[1]).index_copy(0, keep, flat)
    return out.view(batch, t, -1), hidden


class _Shape(NamedTuple):
    """Attention heads: query heads, key-value heads, the width of one head."""

    heads: int
    kv_heads: int
    head_dim: int


def _run(base, layers, shape: _Shape, ids: Tensor, run: Tensor, pos: Tensor, attn: Tensor, prefix):
    """Run the decoder over the ``run`` positions of (R, L) ``ids``: returns the final-normed hidden states as an
    (R * L, H) matrix (zeros where not run) and each layer's post-rotary keys and values, (R, kv, L, D) each.

    ``attn``: (R, 1, L, P + L) bool, which keys each query sees, the P keys of ``prefix`` (one (keys, values)
    per layer, (R, kv, P, D)) first; every row must allow at least one key (padding rows see themselves)."""
    r, length = ids.shape
    flat = run.reshape(-1).nonzero().squeeze(1)  # (N,) the run positions in the (R * L) grid
    x = base.embed_tokens(ids.reshape(-1)[flat])  # (N, H)
    cos, sin = base.rotary_emb(x[None], pos.reshape(-1)[flat][None])  # (1, N, D) each
    cos, sin = cos[0, :, None], sin[0, :, None]  # (N, 1, D): over heads
    h, kv, d = shape.heads, shape.kv_heads, shape.head_dim
    kept = []
    for i, w in enumerate(layers):
        y = rms_norm(x, w["norm1"], w["eps"])
        qkv = F.linear(y, w["qkv"], w["qkv_bias"]).view(-1, h + 2 * kv, d)  # (N, h + 2kv, D)
        qk = rotary(qkv[:, : h + kv], cos, sin)  # queries and keys rotated together
        grid = qkv.new_zeros(r * length, h + 2 * kv, d).index_copy(0, flat, torch.cat([qk, qkv[:, h + kv :]], 1))
        grid = grid.view(r, length, h + 2 * kv, d).transpose(1, 2)  # (R, h + 2kv, L, D)
        q, k, v = grid[:, :h], grid[:, h : h + kv], grid[:, h + kv :]
        kept.append((k, v))
        if prefix is not None:
            k, v = torch.cat([prefix[i][0], k], dim=2), torch.cat([prefix[i][1], v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn, enable_gqa=h != kv)  # (R, h, L, D)
        out = out.transpose(1, 2).reshape(r * length, h * d)[flat]  # (N, h * D)
        x = x + F.linear(out, w["o"], w["o_bias"])
        x = x + mlp_block(w, x)
    x = rms_norm(x, base.norm.weight, base.norm.variance_epsilon)
    return x.new_zeros(r * length, x.shape[1]).index_copy(0, flat, x), kept
