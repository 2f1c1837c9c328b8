"""``share_prompt_forward`` (issue 17): each distinct prompt runs once in the training forward, the completions on
its KV cache; log-probs, hidden states, gradients and whole runs equal the plain forward's to float rounding."""

import json

import pytest
import torch

from neggrad.config import ConfigError, build_config
from neggrad.models.policy import completion_forward, completion_hidden, shared_prompt_pass
from neggrad.models.testbed.model import build_model
from neggrad.models.testbed.tokenizer import build_tokenizer
from neggrad.rollout.base import Rollout
from neggrad.rollout.hf import HFRollout
from tests.test_frontier_train import PARITY, run
from tests.test_lean_rollout import eos_biased_tiny_model


@pytest.fixture(scope="module")
def testbed():
    tokenizer = build_tokenizer()
    return build_model(build_config({}, ["sft.enabled=false"]).model.testbed, tokenizer, seed=0), tokenizer


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    """The tiny SmolLM2-shaped chat model, its head biased towards EOS so that rows end at different steps."""
    return eos_biased_tiny_model(tmp_path_factory.mktemp("tiny-chat"))


def _rollout(model, tokenizer, prompts, *, G=3, length=12, seed=0) -> Rollout:
    torch.manual_seed(seed)
    return HFRollout(model, tokenizer, max_completion_length=length).generate(prompts, num_generations=G)


TESTBED_PROMPTS = ["Q: 12+3=", "Q: 7*8-1=", "Q: 5="]  # three prompt lengths: left padding of two widths
CHAT_PROMPTS = ["Tom has 3 apples and buys 4 more.", "What is 12 + 7?", "A"]


def _logp(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return logits.log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1)


def _grads(model, rollout, share: bool) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    logits, hidden = completion_forward(model, rollout, return_hidden=True, share_prompt=share)
    # a loss through both outputs: the log-probs of the sampled tokens and the hidden states NTHR reads
    loss = (_logp(logits, rollout.completion_ids) * rollout.completion_mask).sum() + hidden.pow(2).mean()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def padded_case(testbed, chat, which: str):
    """(model in train mode, rollout) for ``which`` of "testbed", "chat-sdpa", "chat-eager": prompts left padded to
    two widths, completions of different lengths."""
    model, tokenizer = testbed if which == "testbed" else chat
    if which != "testbed":
        model.set_attn_implementation(which.split("-")[1])
    rollout = _rollout(model, tokenizer, TESTBED_PROMPTS if which == "testbed" else CHAT_PROMPTS)
    assert rollout.prompt_mask.eq(0).any() and len(set(rollout.lengths.tolist())) > 1  # padding, ragged ends
    return model.train(), rollout


@pytest.mark.parametrize("which", ["testbed", "chat-sdpa", "chat-eager"])
def test_shared_forward_equals_the_plain_forward(testbed, chat, which):
    model, rollout = padded_case(testbed, chat, which)
    plain, h_plain = completion_forward(model, rollout, return_hidden=True)
    shared, h_shared = completion_forward(model, rollout, return_hidden=True, share_prompt=True)
    assert shared.shape == plain.shape and h_shared.shape == h_plain.shape
    mask = rollout.completion_mask.bool()
    torch.testing.assert_close(shared[mask], plain[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_shared[mask], h_plain[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(completion_hidden(model, rollout, share_prompt=True)[mask], h_plain[mask])
    for g_plain, g_shared in zip(_grads(model, rollout, False), _grads(model, rollout, True), strict=True):
        # summed in another order: float rounding relative to the tensor's scale, not to each element
        torch.testing.assert_close(g_shared, g_plain, rtol=1e-4, atol=1e-5 * float(g_plain.abs().max()))


def test_each_distinct_prompt_runs_once(testbed):
    model, tokenizer = testbed
    rollout = _rollout(model, tokenizer, TESTBED_PROMPTS, G=4)
    seen: list[tuple[int, int]] = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    try:
        completion_forward(model, rollout, share_prompt=True)
    finally:
        hook.remove()
    B, T = rollout.completion_ids.shape
    width = int(rollout.prompt_mask.sum(dim=1).max())  # the longest prompt: no column of padding in every row
    assert seen == [(3, width), (B, T - 1)]  # 3 prompts once each, then the completions but their last token


def test_nothing_to_share_falls_back_to_the_plain_forward(testbed):
    model, tokenizer = testbed
    rollout = _rollout(model, tokenizer, TESTBED_PROMPTS, G=1)
    assert shared_prompt_pass(model, rollout, starve=False, return_hidden=False) is None
    plain, _ = completion_forward(model, rollout)
    torch.testing.assert_close(completion_forward(model, rollout, share_prompt=True)[0], plain, rtol=0, atol=0)


def test_one_token_completions(testbed):
    model, tokenizer = testbed
    rollout = _rollout(model, tokenizer, TESTBED_PROMPTS, G=2, length=1)
    assert rollout.completion_ids.shape[1] == 1
    plain, h_plain = completion_forward(model, rollout, return_hidden=True)
    shared, h_shared = completion_forward(model, rollout, return_hidden=True, share_prompt=True)
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_shared, h_plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "extra",
    [
        [PARITY, "loss_type=dapo"],  # on-policy: the training forward is the old policy
        [PARITY, "method=nthr"],  # hidden states and logits for NTHR's token scores
        [PARITY, "num_iterations=2", "beta=0.04"],  # the old-policy and reference passes
        [PARITY, "logprob_chunk=5", "lld.enabled=true"],  # the hidden-state path and LLD's after-pass
    ],
    ids=["grpo", "nthr", "2iter+kl", "chunk+lld"],
)
def test_training_with_a_shared_prompt_equals_training_without(tmp_path, extra):
    plain, _, w_plain = run(tmp_path / "plain", *extra, steps=2)
    shared, _, w_shared = run(tmp_path / "shared", *extra, "share_prompt_forward=true", steps=2)
    for a, b in zip(plain, shared, strict=True):
        assert a["accuracy"] == b["accuracy"]  # the same completions were sampled
        for key in ("loss/total", "grad/norm", "policy/ppo_kl", "kl/ref"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
        for key in [k for k in a if k.startswith(("nthr/", "lld/"))]:
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-5), key
    for key in w_plain:  # see test_logprob_chunk: AdamW turns gradient rounding into ~1e-5 moves
        torch.testing.assert_close(w_shared[key], w_plain[key], rtol=1e-4, atol=5e-5)


def test_gradient_checkpointing_refuses_it():
    with pytest.raises(ConfigError, match="gradient checkpointing"):
        build_config({}, ["share_prompt_forward=true", "model.gradient_checkpointing=true"])


def test_a_lora_run_with_a_shared_prompt_equals_one_without(tmp_path):
    # PEFT wraps the model: the cache keyword and the LM-head hook must reach through it (a KL pass as well)
    from neggrad.trainer.loop import Trainer
    from tests.test_models import _save_tiny, cfg

    folder = _save_tiny(tmp_path / "tiny-llama")
    lora = ["model.lora.enabled=true", "model.lora.r=4", "beta=0.1", "max_steps=2", "save_steps=0", "method=nthr"]
    metrics = {}
    for share in ("false", "true"):
        trainer = Trainer(cfg(folder, *lora, f"share_prompt_forward={share}"), tmp_path / share)
        trainer.setup()
        trainer.train()
        metrics[share] = [json.loads(line) for line in (tmp_path / share / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(metrics["false"], metrics["true"], strict=True):
        for key in ("loss/total", "grad/norm", "kl/ref"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert metrics["true"][1]["kl/ref"] > 0  # the adapters moved, and the shared forward saw them
