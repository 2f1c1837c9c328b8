"""Per-token log-probabilities and entropy of completions from a causal LM's logits."""

from __future__ import annotations

import torch
from torch import Tensor


def token_logprobs(
    logits: Tensor, token_ids: Tensor, *, temperature: float = 1.0, return_lse: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Log-probability of each given token under ``softmax(logits / temperature)``.

    The rollout temperature is applied (docs/algorithms.md §1.1), as TRL and verl do, so that the
    old-policy log-probs match the distribution the completions were sampled from.

    Args:
        logits: (B, T, V) logits at the positions that predict ``token_ids``.
        token_ids: (B, T) the tokens taken.
        temperature: sampling temperature.
        return_lse: also return the log-normaliser, which NTHR's scores need (neggrad.core.nthr): a full-vocabulary
            pass over the logits that would otherwise be made a second time.

    Returns:
        (B, T) log-probabilities (float32); with ``return_lse`` also the (B, T) detached float32
        ``logsumexp(logits / temperature)`` over V.
    """
    scaled = logits.float() / temperature  # (B, T, V)
    picked = scaled.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)  # (B, T)
    lse = torch.logsumexp(scaled, dim=-1)  # (B, T)
    return (picked - lse, lse.detach()) if return_lse else picked - lse


class _ChunkedHead(torch.autograd.Function):
    """Log-prob of the taken token and entropy at each position, through a linear LM head, a chunk of
    positions at a time; the backward recomputes each chunk's softmax instead of keeping the logits.

    For z = (h W^T + b) / T at one position, p = softmax(z), the taken token y:
        log p_y = z_y - logsumexp(z)                          d log p_y / dz = onehot(y) - p
        H = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v  dH / dz_v = -p_v (log p_v + H)
    and dL/dh = (dL/dz / T) W, dL/dW = sum over positions of (dL/dz / T)^T h, dL/db = sum of dL/dz / T.
    Only (N, H) hidden states, (N,) outputs and the (N,) log-normalisers are kept between the passes: one
    chunk's (c, V) float32 logits (and their gradient) exist at a time, in the forward and in the backward.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, token_ids, temperature, chunk):
        logp = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        entropy = torch.empty_like(logp)
        lse = torch.empty_like(logp)
        for s in range(0, hidden.shape[0], chunk):
            z = _chunk_logits(hidden[s : s + chunk], weight, bias, temperature)  # (c, V) float32
            lse[s : s + chunk] = torch.logsumexp(z, dim=-1)
            logp[s : s + chunk] = z.gather(-1, token_ids[s : s + chunk, None]).squeeze(-1) - lse[s : s + chunk]
            p = torch.exp(z - lse[s : s + chunk, None])
            entropy[s : s + chunk] = lse[s : s + chunk] - (p * z.nan_to_num(neginf=0.0)).sum(dim=-1)
        ctx.save_for_backward(hidden, weight, bias, token_ids, lse, entropy)
        ctx.temperature, ctx.chunk = temperature, chunk
        ctx.set_materialize_grads(False)  # an unused output (the entropy without a bonus) costs no backward work
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, bias, token_ids, lse, entropy = ctx.saved_tensors
        T, chunk = ctx.temperature, ctx.chunk
        grad_h = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_w = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if ctx.needs_input_grad[1] else None
        )
        grad_b = None
        if bias is not None and ctx.needs_input_grad[2]:
            grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
        for s in range(0, hidden.shape[0], chunk):
            h = hidden[s : s + chunk]
            z = _chunk_logits(h, weight, bias, T)  # (c, V)
            p = torch.exp(z - lse[s : s + chunk, None])
            g = torch.zeros_like(z)
            if grad_logp is not None:  # d log p_y / dz = onehot(y) - p
                g -= p * grad_logp[s : s + chunk, None]
                g.scatter_add_(-1, token_ids[s : s + chunk, None], grad_logp[s : s + chunk, None])
            if grad_entropy is not None:
                log_p = (z - lse[s : s + chunk, None]).nan_to_num(neginf=0.0)
                g -= p * (log_p + entropy[s : s + chunk, None]) * grad_entropy[s : s + chunk, None]
            g /= T  # dz / d(logits) = 1 / T
            if grad_h is not None:
                grad_h[s : s + chunk] = (g @ weight.float()).to(hidden.dtype)
            if grad_w is not None:
                grad_w.addmm_(g.t(), h.float())
            if grad_b is not None:
                grad_b += g.sum(dim=0)
        grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
        grad_b = grad_b.to(bias.dtype) if grad_b is not None else None
        return grad_h, grad_w, grad_b, None, None, None


def _chunk_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, temperature: float) -> Tensor:
    """(c, V) float32 temperature-scaled logits of (c, H) hidden states through the head ``(weight, bias)``."""
    z = torch.nn.functional.linear(hidden, weight, bias).float()
    return z / temperature


def chunked_logprobs(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    token_ids: Tensor,
    *,
    temperature: float = 1.0,
    chunk: int = 1024,
) -> tuple[Tensor, Tensor]:
    """``token_logprobs`` and ``token_entropy`` of ``softmax((h W^T + b) / temperature)``, without the logits.

    The same quantities as the full path (log-prob of the taken token, Sec. 2 of Shao et al. 2024,
    arXiv:2402.03300, at the rollout temperature; entropy over the full vocabulary), computed ``chunk``
    positions at a time by a custom backward (``_ChunkedHead``), so a micro-batch never holds its (B, T, V)
    logits: the largest temporary is one chunk's (chunk, V) float32 logits. Gradients flow to ``hidden``,
    ``weight`` and ``bias``, through both outputs (the entropy's is used only with an entropy bonus).

    Args:
        hidden: (B, T, H) LM-head inputs at the positions that predict ``token_ids``.
        weight: (V, H) LM-head weight; bias: (V,) or None.
        token_ids: (B, T) the tokens taken.
        temperature: sampling temperature.
        chunk: positions per chunk (rows x columns flattened).

    Returns:
        ``(logp, entropy)``: (B, T) float32 each.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    B, T, H = hidden.shape
    logp, entropy = _ChunkedHead.apply(
        hidden.reshape(B * T, H), weight, bias, token_ids.reshape(B * T), float(temperature), int(chunk)
    )
    return logp.view(B, T), entropy.view(B, T)
