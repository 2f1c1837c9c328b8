"""``remove_padding`` (issue 17): the training forward over real tokens only (neggrad.models.packed) gives the
model's own log-probs, hidden states and gradients to float rounding, runs only the tokens it needs, refuses what
it does not compute, and whole runs with it equal runs without."""

import pytest
import torch

from neggrad.config import ConfigError, build_config
from neggrad.models.packed import check, packed_pass
from neggrad.models.policy import completion_forward, completion_hidden
from tests.test_frontier_train import PARITY, run
from tests.test_shared_prompt import TESTBED_PROMPTS, _logp, _rollout, chat, padded_case, testbed  # noqa: F401


def _grads(model, rollout, **how) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    logits, hidden = completion_forward(model, rollout, return_hidden=True, **how)
    mask = rollout.completion_mask
    # through both outputs, each read at real positions only (the packed pass leaves zeros at padding)
    loss = (_logp(logits, rollout.completion_ids) * mask).sum() + (hidden.pow(2).mean(-1) * mask).sum()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("share", [False, True], ids=["own-prompts", "shared-prompts"])
@pytest.mark.parametrize("which", ["testbed", "chat-sdpa", "chat-eager"])
def test_packed_forward_equals_the_models_forward(testbed, chat, which, share):  # noqa: F811
    model, rollout = padded_case(testbed, chat, which)
    plain, h_plain = completion_forward(model, rollout, return_hidden=True)
    packed, h_packed = completion_forward(model, rollout, return_hidden=True, share_prompt=share, packed=True)
    assert packed.shape == plain.shape and h_packed.shape == h_plain.shape
    mask = rollout.completion_mask.bool()
    torch.testing.assert_close(packed[mask], plain[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_packed[mask], h_plain[mask], rtol=1e-5, atol=1e-5)
    assert packed[~mask].eq(0).all() and h_packed[~mask].eq(0).all()  # padding: zeros, never read
    hidden_only = completion_hidden(model, rollout, share_prompt=share, packed=True)
    torch.testing.assert_close(hidden_only[mask], h_plain[mask], rtol=1e-5, atol=1e-5)
    packed_grads = _grads(model, rollout, share_prompt=share, packed=True)
    for g_plain, g_packed in zip(_grads(model, rollout), packed_grads, strict=True):
        torch.testing.assert_close(g_packed, g_plain, rtol=1e-4, atol=1e-5 * float(g_plain.abs().max()))


def test_only_the_needed_tokens_run(testbed):  # noqa: F811
    model, tokenizer = testbed
    rollout = _rollout(model, tokenizer, TESTBED_PROMPTS, G=4)
    seen: list[tuple[int, ...]] = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    try:
        packed_pass(model, rollout, share_prompt=True, logits=True)
        packed_pass(model, rollout, share_prompt=False, logits=True)
    finally:
        hook.remove()
    prompt_tokens = rollout.prompt_mask.sum(dim=1)  # (B,) real tokens of each row's prompt
    lengths = rollout.completion_mask.sum(dim=1)
    needed = int((lengths - 1).sum())  # completion token t runs when token t + 1 exists
    distinct = int(prompt_tokens[::4].sum())  # rows come in groups of G = 4 of one prompt
    assert seen == [(distinct,), (needed,), (int(prompt_tokens.sum()),), (needed,)]


def test_one_token_completions(testbed):  # noqa: F811
    model, tokenizer = testbed
    rollout = _rollout(model, tokenizer, TESTBED_PROMPTS, G=2, length=1)
    plain, h_plain = completion_forward(model, rollout, return_hidden=True)
    packed, h_packed = completion_forward(model, rollout, return_hidden=True, share_prompt=True, packed=True)
    torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_packed, h_plain, rtol=1e-5, atol=1e-5)


def test_it_refuses_what_it_does_not_compute(testbed, chat):  # noqa: F811
    model, _ = testbed
    check(model)  # the testbed (Qwen2, float32, CPU) is one it computes
    with pytest.raises(ValueError, match="torchrun"):
        check(model, launched=True)
    with pytest.raises(ValueError, match="bfloat16"):
        check(model.to(torch.bfloat16))
    model.to(torch.float32)
    with pytest.raises(ValueError, match="KL reference model is Wrapper"):

        class Wrapper(torch.nn.Module):  # what a PEFT or DDP wrapper looks like to it: not the model's class
            dtype, device = torch.float32, torch.device("cpu")

        check(model, Wrapper())
    new_names = hasattr(model, "activation_checkpointing_enable")  # transformers renamed these
    (model.activation_checkpointing_enable if new_names else model.gradient_checkpointing_enable)()
    try:
        with pytest.raises(ValueError, match="gradient checkpointing"):
            check(model)
    finally:
        (model.activation_checkpointing_disable if new_names else model.gradient_checkpointing_disable)()
    check(model)
    chat_model, _ = chat
    chat_model.config.attention_dropout = 0.1
    try:
        with pytest.raises(ValueError, match="attention_dropout"):
            check(chat_model)
    finally:
        chat_model.config.attention_dropout = 0.0


def test_gradient_checkpointing_refuses_it():
    with pytest.raises(ConfigError, match="gradient checkpointing"):
        build_config({}, ["remove_padding=true", "model.gradient_checkpointing=true"])


@pytest.mark.parametrize(
    "extra",
    [
        [PARITY, "loss_type=dapo", "share_prompt_forward=true"],
        [PARITY, "method=nthr"],  # hidden states and logits for NTHR's token scores
        [PARITY, "method=nthr", "nthr.scope=batch"],  # every row's hidden states against the whole batch
        [PARITY, "num_iterations=2", "beta=0.04", "share_prompt_forward=true"],  # old-policy and reference passes
        [PARITY, "logprob_chunk=5", "lld.enabled=true"],  # the hidden-state path and LLD's after-pass
        # micro-batches of 4 sorted by length and trimmed, then packed
        [PARITY, "group_by_length=true", "per_device_train_batch_size=4", "gradient_accumulation_steps=2"],
    ],
    ids=["dapo+shared", "nthr", "nthr-batch", "2iter+kl+shared", "chunk+lld", "grouped"],
)
def test_training_without_padding_equals_training_with(tmp_path, extra):
    plain, _, w_plain = run(tmp_path / "plain", *extra, steps=2)
    packed, _, w_packed = run(tmp_path / "packed", *extra, "remove_padding=true", steps=2)
    for a, b in zip(plain, packed, strict=True):
        assert a["accuracy"] == b["accuracy"]  # the same completions were sampled
        for key in ("loss/total", "grad/norm", "policy/ppo_kl", "kl/ref", "policy/entropy"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
        for key in [k for k in a if k.startswith(("nthr/", "lld/"))]:
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-5), key
    for key in w_plain:  # see test_logprob_chunk: AdamW turns gradient rounding into ~1e-5 moves
        torch.testing.assert_close(w_packed[key], w_plain[key], rtol=1e-4, atol=5e-5)


def test_a_lora_run_is_refused_before_training(tmp_path):
    from neggrad.trainer.loop import Trainer
    from tests.test_models import _save_tiny, cfg

    folder = _save_tiny(tmp_path / "tiny-llama")
    trainer = Trainer(cfg(folder, "model.lora.enabled=true", "model.lora.r=4", "remove_padding=true"), tmp_path / "r")
    with pytest.raises(ConfigError, match="remove_padding"):
        trainer.setup()


def test_auto_runs_it_where_it_computes_and_says_so(tmp_path):
    import json

    auto, _, w_auto = run(tmp_path / "auto", PARITY, "remove_padding=auto", steps=2)
    on, _, w_on = run(tmp_path / "on", PARITY, "remove_padding=true", steps=2)
    assert [r["loss/total"] for r in auto] == [r["loss/total"] for r in on]  # the same forward ran
    assert all(torch.equal(w_auto[k], w_on[k]) for k in w_on)
    assert json.loads((tmp_path / "auto" / "summary.json").read_text())["runtime"]["remove_padding"] is True
    assert "remove_padding: auto" in (tmp_path / "auto" / "config.yaml").read_text()  # what the user gave, kept


def test_auto_turns_it_off_where_true_is_refused(tmp_path, caplog):
    from neggrad.trainer.loop import Trainer
    from tests.test_models import _save_tiny, cfg

    assert build_config({}, ["remove_padding=auto", "model.gradient_checkpointing=true"]).remove_padding == "auto"
    folder = _save_tiny(tmp_path / "tiny-llama")
    trainer = Trainer(cfg(folder, "model.lora.enabled=true", "model.lora.r=4", "remove_padding=auto"), tmp_path / "r")
    with caplog.at_level("INFO", logger="neggrad"):
        trainer.setup()
    assert trainer.config.remove_padding is False
    assert any("remove_padding auto: off" in r.getMessage() and "LoRA" in r.getMessage() for r in caplog.records)
    assert "remove_padding: auto" in (tmp_path / "r" / "config.yaml").read_text()
