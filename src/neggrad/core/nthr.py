"""NTHR: Negative Token Hidden Reward, which keeps the penalty off wrong-answer tokens that hurt right answers.

Deng et al. 2025, "On the Effect of Negative Gradient in Group Relative Deep Reinforcement
Optimization", arXiv:2505.18830, Sec. 5, Alg. 1, App. 7.3-7.4; docs/algorithms.md §7.

Pushing down token t of a wrong response lowers the log-probability of token u of a correct
response by an amount proportional to ``<g_u, g_t> * <h_u, h_t>`` (Cor. 4.5), with

    g_t = e_{y_t} - q_t      q_t = pi_old(. | x, y_<t) at the sampling temperature
    h_t = last-layer hidden state at the position that predicts y_t (the LM-head input)

The score of a token sums this over every token of every correct response of its group (Eq. 7):

    s_t = sum_{correct u} <g_u, g_t> <h_u, h_t> = g_t^T M h_t,     M = sum_{correct u} g_u h_u^T  (V x H)

Threshold and selection (Eq. 8): tau = beta * min over correct responses i of mean_{u in y_i} s_u; the
tokens of wrong responses with s_t > tau have their advantage multiplied by eta (App. 7.3:
eta = 2|0.5 - p|, p the group's success rate).

Everything here is a pure function over one group's tensors. The trainer calls ``nthr_group`` inside
the old-policy pass while that micro-batch's logits and hidden states are in memory, so NTHR costs no
extra forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

ETA_RULES = ("2|0.5-p|", "1-p", "p")


@dataclass
class NTHRResult:
    """NTHR's outcome for one group of G completions of length T.

    Attributes:
        scores: (G, T) float32 token scores s_t; 0 at masked positions.
        selected: (G, T) bool, wrong-response tokens whose advantage is scaled by ``eta``.
        anchors: (N+,) the mean score of each correct response (s-bar), in row order.
        tau: the threshold (``-inf`` when ``beta`` is ``-inf``).
        eta: the factor applied to selected tokens.
    """

    scores: Tensor
    selected: Tensor
    anchors: Tensor
    tau: float
    eta: float


def eta_from_rule(rule: str | float, success_rate: float) -> float:
    """The advantage factor of selected tokens for a group with success rate p (App. 7.3).

    ``"2|0.5-p|"`` (the paper's default) scales the penalty down most for groups near p = 0.5;
    ``"1-p"``, ``"p"`` or a constant in [0, 1) are the alternatives docs/algorithms.md §7.2 allows.
    """
    if isinstance(rule, (int, float)):
        return float(rule)
    if rule == "2|0.5-p|":
        return 2.0 * abs(0.5 - success_rate)
    if rule == "1-p":
        return 1.0 - success_rate
    if rule == "p":
        return success_rate
    raise ValueError(f"unknown eta rule {rule!r}: use one of {', '.join(ETA_RULES)} or a number in [0, 1)")


def _gather(logits: Tensor, pos: Tensor, cols: Tensor, temperature: float) -> Tensor:
    """(n, c) float32 ``logits[pos, cols] / temperature`` for flat token positions into (G, T, V) logits.

    Indexes rows, columns and vocabulary at once, so only the (n, c) block is ever copied: neither the
    (G*T, V) reshape of a sliced logits tensor nor its float32 version is made.
    """
    length = logits.shape[1]
    block = logits[(pos // length)[:, None], (pos % length)[:, None], cols[None, :]]  # (n, c)
    return block.float() / temperature


def group_lse(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """(G, T) float32 logsumexp of ``logits / temperature`` over V, one completion at a time.

    A fallback: over the full vocabulary this is the costliest part of the scores (8 x 256 tokens at V = 151,936:
    about 4 of the 5 CPU seconds of ``nthr_group``, and a float32 copy of a completion's logits), and the forward
    that made the logits has it already (``token_logprobs(..., return_lse=True)``), so callers pass ``lse``.
    At temperature 1 the logits are not divided (``x / 1`` is ``x``: the same values, no copy of fp32 logits).
    """
    out = []
    for g in range(logits.shape[0]):
        x = logits[g].float()  # (T, V)
        out.append(torch.logsumexp(x if temperature == 1.0 else x / temperature, dim=-1))
    return torch.stack(out)


def influence_scores(
    logits: Tensor,
    hidden: Tensor,
    ids: Tensor,
    anchor: Tensor,
    query: Tensor,
    *,
    vocab: Tensor | None = None,
    lse: Tensor | None = None,
    temperature: float = 1.0,
    chunk_tokens: int = 1024,
    chunk_vocab: int = 8192,
) -> Tensor:
    """``s_t = g_t^T M h_t`` with ``M = sum_{u in anchor} g_u h_u^T``, for every query token t.

    Cor. 4.5 / Eq. 7 of arXiv:2505.18830, computed without the (anchor x query) pair matrix
    (docs/algorithms.md §7.3): for each block of vocabulary columns c, ``M_c = onehot_c(y_a)^T H_a - Q_ac^T H_a``
    over anchor tokens, then ``s_t += M_c[y_t] . h_t - q_tc . (M_c h_t)`` over query tokens. ``q`` is
    sliced to ``vocab``, never renormalised, so ``vocab`` = the group's token ids is the paper's
    approximation (App. 7.4) and ``vocab = None`` (all V columns) is the exact form.

    Peak extra memory, fp32, with c_T = ``chunk_tokens`` and c_V = min(``chunk_vocab``, |vocab|):
    about ``4 * (2*c_V*H + 2*c_T*c_V + c_T*H + N)`` bytes (M block and its update, the q block and
    M h, one block of h, the N scores). Nothing grows with V, with G*T or with anchor x query.

    Args:
        logits: (G, T, V) old-policy logits (any float dtype, unscaled), predicting each token.
        hidden: (G, T, H) last-layer hidden states at the same positions.
        ids: (G, T) the token each position emitted.
        anchor: (Na,) flat positions (row * T + col) of the tokens summed into M (correct responses).
        query: (Nq,) flat positions of the tokens to score.
        vocab: (K,) vocabulary ids the gradient g is restricted to, or None for all V. A token whose
            id is not in ``vocab`` only loses its one-hot term.
        lse: (G, T) logsumexp of ``logits / temperature`` over V, if already known.
        temperature: sampling temperature (docs/algorithms.md §1.1: q at the rollout temperature).
        chunk_tokens: token block size c_T.
        chunk_vocab: vocabulary block size c_V.

    Returns:
        (Nq,) float32 scores.
    """
    num_gen, length, num_vocab = logits.shape
    device = logits.device
    if lse is None:
        lse = group_lse(logits, temperature)
    lse = lse.float().reshape(-1)  # (G*T,)
    flat_ids = ids.reshape(-1)
    flat_hidden = hidden.reshape(num_gen * length, -1)  # a view: hidden is contiguous per row block
    cols = torch.arange(num_vocab, device=device) if vocab is None else vocab.to(device)
    # position of each vocabulary id in ``cols`` (-1 when the id is outside the restriction)
    where = torch.full((num_vocab,), -1, dtype=torch.long, device=device)
    where[cols] = torch.arange(len(cols), device=device)
    scores = torch.zeros(len(query), dtype=torch.float32, device=device)  # (Nq,)
    for c0 in range(0, len(cols), chunk_vocab):
        block = cols[c0 : c0 + chunk_vocab]  # (c,)
        m = torch.zeros(len(block), flat_hidden.shape[-1], dtype=torch.float32, device=device)  # (c, H)
        for a0 in range(0, len(anchor), chunk_tokens):
            pos = anchor[a0 : a0 + chunk_tokens]
            h = flat_hidden[pos].float()  # (ca, H)
            q = torch.exp(_gather(logits, pos, block, temperature) - lse[pos, None])  # (ca, c)
            m -= q.T @ h
            at = where[flat_ids[pos]] - c0  # (ca,) column of y_u inside this block
            inside = (at >= 0) & (at < len(block))
            m.index_add_(0, at[inside], h[inside])
        for t0 in range(0, len(query), chunk_tokens):
            pos = query[t0 : t0 + chunk_tokens]
            h = flat_hidden[pos].float()  # (ct, H)
            mh = h @ m.T  # (ct, c): M_c h_t
            q = torch.exp(_gather(logits, pos, block, temperature) - lse[pos, None])  # (ct, c)
            part = -(q * mh).sum(dim=-1)  # (ct,)
            at = where[flat_ids[pos]] - c0
            inside = (at >= 0) & (at < len(block))
            part[inside] += mh[inside.nonzero().squeeze(1), at[inside]]
            scores[t0 : t0 + len(pos)] += part
    return scores


def nthr_group(
    logits: Tensor,
    hidden: Tensor,
    ids: Tensor,
    mask: Tensor,
    correct: Tensor,
    *,
    beta: float = 1.0,
    eta: str | float = "2|0.5-p|",
    vocab: str = "response",
    anchor_include_self: bool = True,
    temperature: float = 1.0,
    lse: Tensor | None = None,
    chunk_tokens: int = 1024,
    chunk_vocab: int = 8192,
) -> NTHRResult | None:
    """Scores, threshold and selected tokens of one group (arXiv:2505.18830 Eq. 7-8, Alg. 1).

    tau = beta * min_{correct i} mean_{u in y_i} s_u. A wrong-response token is selected iff
    s_t > tau (strict). ``beta = -inf`` selects every wrong token. With ``anchor_include_self=False``,
    response i's own tokens leave M when its mean is taken (docs/algorithms.md §7.2). Groups with no
    correct or no wrong response are left untouched (None) [neggrad choice].

    Args:
        logits: (G, T, V) old-policy logits predicting each completion token (unscaled; a slice of
            the model output is fine, it is never copied whole).
        hidden: (G, T, H) last-layer hidden states at those positions.
        ids: (G, T) completion token ids.
        mask: (G, T) bool/0-1, the tokens of each completion that enter the loss.
        correct: (G,) bool binary correctness (never a shaped reward).
        beta: threshold scale (paper: 1.0; 0 keeps every s_t > 0).
        eta: ``"2|0.5-p|"``, ``"1-p"``, ``"p"`` or a constant; p = (number correct) / G.
        vocab: ``"response"`` (the group's token ids, App. 7.4) or ``"full"`` (exact).
        anchor_include_self: keep response i's own tokens in M for its anchor mean.
        temperature: the rollout temperature; q = softmax(logits / temperature).
        lse: (G, T) logsumexp of ``logits / temperature``, if already known.
        chunk_tokens, chunk_vocab: block sizes bounding memory (see ``influence_scores``).

    Returns:
        ``NTHRResult`` (tensors on ``logits.device``) or None for a group that is not mixed.
    """
    if vocab not in ("response", "full"):
        raise ValueError(f'vocab must be "response" or "full", got {vocab!r}')
    num_gen, length = ids.shape
    device = logits.device
    correct = correct.bool().to(device)
    if bool(correct.all()) or not bool(correct.any()):
        return None
    flat = mask.bool().reshape(-1).to(device).nonzero().squeeze(1)  # (N,) real tokens in the (G*T) grid
    row_of = flat // length  # (N,)
    ids = ids.to(device)
    cols = torch.unique(ids.reshape(-1)[flat]) if vocab == "response" else None
    is_correct = correct[row_of]  # (N,)
    opts = {
        "vocab": cols,
        "lse": lse,
        "temperature": temperature,
        "chunk_tokens": chunk_tokens,
        "chunk_vocab": chunk_vocab,
    }
    if lse is None:
        opts["lse"] = group_lse(logits, temperature)
    s = influence_scores(logits, hidden, ids, flat[is_correct], flat, **opts)  # (N,)

    means = []
    for i in correct.nonzero().squeeze(1).tolist():
        own = (row_of == i).nonzero().squeeze(1)  # indices into the N tokens
        s_own = s[own]
        if not anchor_include_self:
            s_own = s_own - influence_scores(logits, hidden, ids, flat[own], flat[own], **opts)
        means.append(s_own.mean() if len(own) else s_own.new_zeros(()))
    anchors = torch.stack(means)  # (N+,)
    tau = -math.inf if beta == -math.inf else beta * float(anchors.min())
    selected_flat = (~is_correct) & (s > tau)  # (N,)

    scores = torch.zeros(num_gen * length, dtype=torch.float32, device=device)
    scores[flat] = s
    selected = torch.zeros(num_gen * length, dtype=torch.bool, device=device)
    selected[flat] = selected_flat
    p = float(correct.float().mean())
    return NTHRResult(
        scores=scores.view(num_gen, length),
        selected=selected.view(num_gen, length),
        anchors=anchors,
        tau=tau,
        eta=eta_from_rule(eta, p),
    )


def scale_token_advantages(token_adv: Tensor, selected: Tensor, eta: float) -> Tensor:
    """A_{j,t} <- eta * A_{j,t} on the selected tokens (Alg. 1); the rest unchanged.

    Args:
        token_adv: (G, T) token advantages of one group.
        selected: (G, T) bool from ``nthr_group``.
        eta: the group's factor.

    Returns:
        (G, T) new token advantages.
    """
    return torch.where(selected, token_adv * eta, token_adv)


# ---------------------------------------------------------------------- cross-group NTHR (nthr.scope: batch)
@dataclass
class NTHRBatchResult:
    """Cross-group NTHR over the N real tokens of a batch (flattened, in the order given).

    Attributes:
        scores: (N,) float32 s_t against every correct response of the batch.
        selected: (N,) bool, wrong-response tokens of mixed groups whose advantage is scaled by their group's eta.
        anchors: (R+,) mean score of each correct response, in row order.
        tau: the batch's threshold.
        eta: (P,) the factor of each group (nan for groups that are not mixed).
    """

    scores: Tensor
    selected: Tensor
    anchors: Tensor
    tau: float
    eta: Tensor


def _head_block(hidden: Tensor, weight: Tensor, bias: Tensor | None, cols: Tensor, lse: Tensor, temperature: float):
    """(n, c) q restricted to ``cols``: softmax(h W^T + b) / temperature) at those columns, from the LM head."""
    logits = hidden @ weight[cols].float().T  # (n, c)
    if bias is not None:
        logits = logits + bias[cols].float()
    return torch.exp(logits / temperature - lse[:, None])


def nthr_batch(
    hidden: Tensor,
    ids: Tensor,
    lse: Tensor,
    head_weight: Tensor,
    rows: Tensor,
    groups: Tensor,
    correct_rows: Tensor,
    *,
    head_bias: Tensor | None = None,
    beta: float = 1.0,
    eta: str | float = "2|0.5-p|",
    vocab: str = "response",
    temperature: float = 1.0,
    chunk_tokens: int = 1024,
    chunk_vocab: int = 8192,
) -> NTHRBatchResult:
    """Cross-group NTHR: every wrong-answer token scored against the correct answers of the whole batch.

    The score is the paper's (arXiv:2505.18830 Cor. 4.5, Eq. 7) with the sum over correct responses taken over
    every group of the batch instead of the token's own group: ``s_t = g_t^T M h_t``, ``M = sum_u g_u h_u^T``
    over all correct tokens u of the batch, so s_t measures how much pushing token t down also pushes down
    correct answers to *other* prompts (the displacement per-group NTHR cannot see). The threshold is Eq. 8 over
    the batch's correct responses, tau = beta * min_i mean_{u in y_i} s_u; selected are the wrong tokens of mixed
    groups with s_t > tau, and each keeps eta of its penalty, eta from its own group's success rate (App. 7.3).
    Groups without a correct or without a wrong answer are not scored as queries (as in :func:`nthr_group`); their
    correct answers still anchor M [neggrad choice].

    Memory stays bounded without the batch's logits: ``q`` is recomputed block by block from the LM head,
    ``softmax((h W^T + b) / T)`` with the stored log-normaliser ``lse`` (exact for a linear head, the case of
    Llama, Qwen and SmolLM2 models; the trainer refuses other heads). Peak extra memory, fp32: the (N, H) hidden
    states plus about ``4 * (2*c_V*H + 2*c_T*c_V + c_T*H)`` bytes, as in :func:`influence_scores`.

    Args:
        hidden: (N, H) last-layer hidden states (LM-head inputs) at the positions predicting each real token.
        ids: (N,) the tokens.
        lse: (N,) logsumexp over the full vocabulary of ``logits / temperature`` at those positions.
        head_weight: (V, H) LM-head weight; ``head_bias`` (V,) its bias, if any.
        rows: (N,) the response (row of the batch) of each token.
        groups: (R,) group index of each row.
        correct_rows: (R,) bool binary correctness of each row.
        beta, eta, vocab, temperature, chunk_tokens, chunk_vocab: as in :func:`nthr_group`; ``vocab="response"``
            restricts g to the token ids present in the batch.

    Returns:
        :class:`NTHRBatchResult` (tensors on ``hidden.device``).
    """
    if vocab not in ("response", "full"):
        raise ValueError(f'vocab must be "response" or "full", got {vocab!r}')
    device = hidden.device
    hidden, lse = hidden.float(), lse.float().to(device)
    ids, rows = ids.to(device), rows.to(device)
    groups, correct_rows = groups.to(device), correct_rows.bool().to(device)
    num_vocab = head_weight.shape[0]
    num_groups = int(groups.max()) + 1 if len(groups) else 0
    hits = torch.zeros(num_groups, device=device).index_add_(0, groups, correct_rows.float())
    sizes = torch.zeros(num_groups, device=device).index_add_(
        0, groups, torch.ones_like(correct_rows, dtype=torch.float)
    )
    mixed = (hits > 0) & (hits < sizes)  # (P,)
    is_correct = correct_rows[rows]  # (N,)
    cols = torch.unique(ids) if vocab == "response" else torch.arange(num_vocab, device=device)
    where = torch.full((num_vocab,), -1, dtype=torch.long, device=device)
    where[cols] = torch.arange(len(cols), device=device)
    anchor = is_correct.nonzero().squeeze(1)  # (Na,) token indices
    scores = torch.zeros(len(ids), dtype=torch.float32, device=device)
    for c0 in range(0, len(cols), chunk_vocab):
        block = cols[c0 : c0 + chunk_vocab]
        m = torch.zeros(len(block), hidden.shape[1], dtype=torch.float32, device=device)  # (c, H)
        for a0 in range(0, len(anchor), chunk_tokens):
            pos = anchor[a0 : a0 + chunk_tokens]
            h = hidden[pos]
            m -= _head_block(h, head_weight, head_bias, block, lse[pos], temperature).T @ h
            at = where[ids[pos]] - c0
            inside = (at >= 0) & (at < len(block))
            m.index_add_(0, at[inside], h[inside])
        for t0 in range(0, len(ids), chunk_tokens):
            h = hidden[t0 : t0 + chunk_tokens]
            mh = h @ m.T  # (ct, c)
            part = -(_head_block(h, head_weight, head_bias, block, lse[t0 : t0 + chunk_tokens], temperature) * mh).sum(
                -1
            )
            at = where[ids[t0 : t0 + chunk_tokens]] - c0
            inside = (at >= 0) & (at < len(block))
            part[inside] += mh[inside.nonzero().squeeze(1), at[inside]]
            scores[t0 : t0 + len(h)] += part
    correct_ids = correct_rows.nonzero().squeeze(1)
    sums = torch.zeros(len(groups), device=device).index_add_(0, rows, scores)
    counts = torch.zeros(len(groups), device=device).index_add_(0, rows, torch.ones_like(scores))
    anchors = sums[correct_ids] / counts[correct_ids].clamp(min=1.0)  # (R+,)
    if beta == -math.inf:
        tau = -math.inf
    else:
        tau = beta * float(anchors.min()) if len(anchors) else math.inf  # no correct answer: nothing to protect
    selected = (~is_correct) & mixed[groups[rows]] & (scores > tau)
    p = hits / sizes.clamp(min=1.0)
    etas = torch.tensor([eta_from_rule(eta, float(x)) for x in p.tolist()], device=device)
    etas[~mixed] = float("nan")
    return NTHRBatchResult(scores=scores, selected=selected, anchors=anchors, tau=tau, eta=etas)
