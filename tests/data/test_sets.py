"""Training and eval prompt sets from a data config: hold-out split, eval sources, registry, prompt formatting."""

import json

import pytest

from neggrad.config import build_config
from neggrad.tasks.data import EVAL_SETS, eval_set, load_prompt_sets
from neggrad.tasks.data.prompts import format_prompt

CHAT = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def write_jsonl(path, n, *, problem="problem", answer="answer"):
    path.write_text(
        "\n".join(json.dumps({problem: f"What is {i}+{i}?", answer: 2 * i, "level": i % 5 + 1}) for i in range(n))
    )
    return str(path)


def data_config(**data):
    return build_config({"data": data}).data


def test_without_eval_source_a_seeded_tenth_is_held_out(tmp_path):
    data = data_config(source=write_jsonl(tmp_path / "t.jsonl", 40), prompt_template="Q: {problem}\nA:")
    train, held_out = load_prompt_sets(data)
    assert (len(train), len(held_out)) == (36, 4)
    assert not {e.problem for e in train} & {e.problem for e in held_out}
    assert held_out[0].prompt == f"Q: {held_out[0].problem}\nA:"
    again = load_prompt_sets(data)[1]
    assert [e.problem for e in again] == [e.problem for e in held_out]  # same seed, same split


def test_filters_apply_to_training_only_and_eval_source_has_its_own_columns(tmp_path):
    data = data_config(
        source=write_jsonl(tmp_path / "t.jsonl", 20),
        filters={"level": [3, 4, 5]},
        eval_source=write_jsonl(tmp_path / "e.jsonl", 7, problem="question", answer="gold"),
        eval_columns={"problem": "question", "answer": "gold"},
        eval_size=5,
    )
    train, evaluation = load_prompt_sets(data)
    assert len(train) == 12  # levels 3, 4, 5 of 1..5, four rows each
    assert len(evaluation) == 5 and evaluation[0].answer == "0"


def test_eval_source_columns_default_to_the_training_columns(tmp_path):
    data = data_config(
        source=write_jsonl(tmp_path / "t.jsonl", 5),
        eval_source=write_jsonl(tmp_path / "e.jsonl", 3, answer="gold"),
    )
    with pytest.raises(ValueError, match="data.columns.answer = 'answer' is not a column of .*e.jsonl"):
        load_prompt_sets(data)


def test_too_small_to_hold_out(tmp_path):
    data = data_config(source=write_jsonl(tmp_path / "t.jsonl", 1))
    with pytest.raises(ValueError, match="too few to hold out 1 for evaluation: set data.eval_source"):
        load_prompt_sets(data)


def test_registry_names_bring_hub_id_split_and_columns(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(hub_id, subset, split):
        calls.append((hub_id, subset, split))
        return [{"question": "Janet...", "answer": "3 * 24 = 72\n#### 72"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = data_config(source=write_jsonl(tmp_path / "t.jsonl", 5), eval_source="GSM8K")
    evaluation = load_prompt_sets(data)[1]
    assert calls == [("openai/gsm8k", "main", "test")]
    assert (evaluation[0].problem, evaluation[0].answer) == ("Janet...", "72")


def test_registry_entries():
    assert set(EVAL_SETS) == {"math500", "aime24", "aime25", "amc23", "minerva", "olympiadbench", "gsm8k"}
    assert eval_set("MATH500").hub_id == "HuggingFaceH4/MATH-500"
    assert all(entry.checked in ("card", "docs", "code") for entry in EVAL_SETS.values())
    with pytest.raises(KeyError, match="unknown eval set 'math5000'; choose one of math500"):
        eval_set("math5000")


@pytest.fixture
def chat_tokenizer():
    from neggrad.models.testbed.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHAT
    return tokenizer


def test_chat_template_with_system_prompt(chat_tokenizer):
    prompt = format_prompt(
        "1+1?",
        template="{problem} Put it in \\boxed{}.",
        tokenizer=chat_tokenizer,
        chat_template=True,
        system_prompt="Be brief.",
    )
    assert prompt == "<|system|>Be brief.\n<|user|>1+1? Put it in \\boxed{}.\n<|assistant|>"


def test_chat_template_errors(chat_tokenizer):
    with pytest.raises(ValueError, match="no tokenizer was given"):
        format_prompt("x", chat_template=True)
    chat_tokenizer.chat_template = None
    with pytest.raises(ValueError, match="has no chat template: set data.chat_template: false"):
        format_prompt("x", tokenizer=chat_tokenizer, chat_template=True)


def test_prompt_sets_through_the_chat_template(tmp_path, chat_tokenizer):
    data = data_config(
        source=write_jsonl(tmp_path / "t.jsonl", 10),
        chat_template=True,
        system_prompt="S",
        prompt_template="{problem}",
    )
    train, _ = load_prompt_sets(data, tokenizer=chat_tokenizer)
    assert train[0].prompt.startswith("<|system|>S\n<|user|>What is") and train[0].prompt.endswith("<|assistant|>")
