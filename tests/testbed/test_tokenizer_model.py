import torch
from transformers import Qwen2ForCausalLM

from neggrad.config import TaskConfig, TestbedModelConfig
from neggrad.models.testbed.model import build_model
from neggrad.models.testbed.tokenizer import ALPHABET, build_tokenizer, load_tokenizer
from neggrad.tasks.testbed import train_problem


def test_one_token_per_character():
    tokenizer = build_tokenizer()
    ids = tokenizer(ALPHABET, add_special_tokens=False)["input_ids"]
    # 3 special tokens first, then the 20 characters in order
    assert ids == list(range(3, 23))
    assert len(tokenizer) == 23


def test_round_trip_is_exact():
    tokenizer = build_tokenizer()
    for cfg in (TaskConfig(digits=2, operators="+-"), TaskConfig(operators="+-*", min_operands=2, max_operands=5)):
        for i in range(200):
            problem = train_problem(cfg, i)
            text = problem.prompt + problem.solution
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert len(ids) == len(text)
            assert tokenizer.decode(ids) == text
            assert tokenizer.decode(ids + [tokenizer.eos_token_id], skip_special_tokens=True) == text


def test_special_tokens():
    tokenizer = build_tokenizer()
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1)
    assert tokenizer("Q: 1+2=", add_special_tokens=True)["input_ids"][-1] != tokenizer.eos_token_id  # none added
    assert tokenizer("#", add_special_tokens=False)["input_ids"] == [tokenizer.unk_token_id]


def test_left_padding_survives_save_and_reload(tmp_path):
    build_tokenizer().save_pretrained(tmp_path)
    tokenizer = load_tokenizer(tmp_path)
    assert tokenizer.padding_side == "left"
    batch = tokenizer(["Q: 1+2=", "Q: 11+22="], padding=True)
    # "Q: 1+2=" is 7 tokens, "Q: 11+22=" 9: the short one gets 2 pads in front
    assert batch["input_ids"][0][:2] == [tokenizer.pad_token_id] * 2
    assert batch["attention_mask"][0] == [0, 0] + [1] * 7
    assert tokenizer.decode(tokenizer("Q: 12-5=-7")["input_ids"]) == "Q: 12-5=-7"


def test_default_model_size_by_hand():
    # embeddings 23 * 128 = 2,944 (tied with the head); per layer q 128*128+128 = 16,512,
    # k and v 128*64+64 = 8,256 each, o 128*128 = 16,384, MLP 3*128*512 = 196,608, 2 norms 256
    # -> 246,272; 4 layers 985,088; final norm 128; total 988,160
    model = build_model(TestbedModelConfig(), build_tokenizer(), seed=0)
    assert sum(p.numel() for p in model.parameters()) == 988_160
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.dtype == torch.float32
    assert (model.config.pad_token_id, model.config.eos_token_id) == (0, 1)


def test_same_seed_same_weights_and_global_rng_untouched():
    cfg = TestbedModelConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1
    )
    tokenizer = build_tokenizer()
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = build_model(cfg, tokenizer, seed=0).state_dict()
    assert torch.equal(torch.rand(3), expected_draw)
    second = build_model(cfg, tokenizer, seed=0).state_dict()
    other = build_model(cfg, tokenizer, seed=1).state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.equal(first["model.embed_tokens.weight"], other["model.embed_tokens.weight"])


def test_save_and_reload_gives_the_same_logits(tmp_path):
    cfg = TestbedModelConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1
    )
    model = build_model(cfg, build_tokenizer(), seed=0)
    model.save_pretrained(tmp_path)
    reloaded = Qwen2ForCausalLM.from_pretrained(tmp_path)
    input_ids = torch.tensor([[21, 19, 22, 4, 13, 5, 16]])  # "Q: 1+2="
    torch.testing.assert_close(model(input_ids).logits, reloaded(input_ids).logits, rtol=0, atol=0)
