"""chunked_logprobs (issue 17 item 2): the full-logits path's values and gradients, without the logits."""

import pytest
import torch

from neggrad.core.logprobs import chunked_logprobs, token_logprobs
from neggrad.core.losses import token_entropy


def _inputs(dtype=torch.float64, bias=True, seed=0, B=3, T=5, H=7, V=11):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(V, H, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(V, generator=g, dtype=dtype, requires_grad=True) if bias else None
    ids = torch.randint(0, V, (B, T), generator=g)
    return hidden, weight, b, ids


def _full(hidden, weight, bias, ids, temperature):
    logits = torch.nn.functional.linear(hidden, weight, bias)
    return token_logprobs(logits, ids, temperature=temperature), token_entropy(logits / temperature)


@pytest.mark.parametrize("chunk", [1, 4, 15, 1000])
@pytest.mark.parametrize("bias", [True, False])
def test_values_and_gradients_equal_the_full_logits_path(chunk, bias):
    temperature = 0.7
    hidden, weight, b, ids = _inputs(bias=bias)
    g = torch.Generator().manual_seed(2)
    up_logp = torch.randn(ids.shape, dtype=torch.float64, generator=g)
    up_ent = torch.randn(ids.shape, dtype=torch.float64, generator=g)
    logp, ent = chunked_logprobs(hidden, weight, b, ids, temperature=temperature, chunk=chunk)
    ref_logp, ref_ent = _full(hidden, weight, b, ids, temperature)
    # token_logprobs computes in float32: compare at float32 rounding
    torch.testing.assert_close(logp, ref_logp.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent.double(), ref_ent, rtol=1e-5, atol=1e-5)
    params = [hidden, weight] + ([b] if bias else [])
    got = torch.autograd.grad((logp.double() * up_logp).sum() + (ent.double() * up_ent).sum(), params)
    # the reference gradient in float64 throughout (independent of token_logprobs' float32 cast)
    logits = torch.nn.functional.linear(hidden, weight, b) / temperature
    lsm = torch.log_softmax(logits, dim=-1)
    ref = lsm.gather(-1, ids[..., None]).squeeze(-1) * up_logp - (lsm.exp() * lsm).sum(-1) * up_ent
    want = torch.autograd.grad(ref.sum(), params)
    for a, w in zip(got, want, strict=True):  # the chunks compute in float32: float32 rounding of sums over V and N
        torch.testing.assert_close(a.double(), w, rtol=1e-3, atol=1e-4)


def test_banned_tokens_give_zero_probability_and_finite_gradients():
    hidden, weight, b, ids = _inputs()
    with torch.no_grad():
        b[3] = float("-inf")  # token 3 can never be sampled
    ids = torch.where(ids == 3, torch.zeros_like(ids), ids)
    logp, ent = chunked_logprobs(hidden, weight, b, ids, chunk=4)
    ref_logp, ref_ent = _full(hidden, weight, b, ids, 1.0)
    torch.testing.assert_close(logp, ref_logp.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent.double(), ref_ent, rtol=1e-5, atol=1e-5)
    (logp.sum() + ent.sum()).backward()
    assert torch.isfinite(hidden.grad).all() and torch.isfinite(weight.grad).all()


def test_no_grad_inputs_and_bad_chunk():
    hidden, weight, b, ids = _inputs()
    with torch.no_grad():
        logp, _ = chunked_logprobs(hidden, weight, b, ids, chunk=2)
    assert not logp.requires_grad
    with pytest.raises(ValueError, match="chunk"):
        chunked_logprobs(hidden, weight, b, ids, chunk=0)


def test_completion_hidden_with_chunked_logprobs_equals_the_full_forward():
    """On a tiny SmolLM2-shaped model: same log-probs, entropies and parameter gradients as the logits path,
    and the LM head computes no logits at all."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from neggrad.models.policy import completion_forward, completion_hidden, linear_head
    from neggrad.rollout.base import Rollout

    torch.manual_seed(0)
    V = 50
    shape = dict(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1
    )
    model = LlamaForCausalLM(LlamaConfig(vocab_size=V, tie_word_embeddings=True, **shape)).double()
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, V, (3, 4), generator=g)
    prompt_mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 1]])
    completion = torch.randint(0, V, (3, 5), generator=g)
    completion_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    rollout = Rollout(prompt, prompt_mask, completion, completion_mask, torch.zeros(3, dtype=torch.bool), [""] * 3)
    up = torch.randn(3, 5, dtype=torch.float64, generator=g)

    logits, _ = completion_forward(model, rollout)
    ref_logp = token_logprobs(logits, completion, temperature=0.8)
    ref_ent = token_entropy(logits / 0.8)
    ref = torch.autograd.grad((ref_logp.double() * up).sum() + ref_ent.sum(), list(model.parameters()))

    shapes = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, out: shapes.append(out.shape))
    hidden = completion_hidden(model, rollout)
    hook.remove()
    assert shapes == [torch.Size([3, 0, V])]  # the head ran on no position
    weight, bias = linear_head(model)
    logp, ent = chunked_logprobs(hidden, weight, bias, completion, temperature=0.8, chunk=4)
    torch.testing.assert_close(logp, ref_logp, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ent.double(), ref_ent.double(), rtol=1e-6, atol=1e-6)
    got = torch.autograd.grad((logp.double() * up).sum() + ent.sum(), list(model.parameters()))
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
