"""Reading prompt sets: JSONL / JSON / Parquet through a column map, filters, answer formats, clear errors."""

import json

import pytest

from neggrad.tasks.data.sources import Columns, keep, read_local, read_rows, to_examples

ROWS = [
    {"question": "1+1?", "final": 2, "level": 3, "worked": "1+1=2"},
    {"question": "Half of 1?", "final": "\\frac{1}{2}", "level": 5, "worked": "..."},
    {"question": "Easy", "final": "0", "level": 1, "worked": "..."},
]
COLUMNS = Columns(problem="question", answer="final", solution="worked")


def write(tmp_path, name, rows=ROWS):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    elif name.endswith(".json"):
        path.write_text(json.dumps(rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [{**r, "final": str(r["final"])} for r in rows]  # a Parquet column has one type
        pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


@pytest.mark.parametrize("name", ["set.jsonl", "set.json", "set.parquet"])
def test_every_file_type_reads_through_the_column_map(tmp_path, name):
    examples = to_examples(read_rows(write(tmp_path, name)), columns=COLUMNS, where=name)
    assert examples[0] == ("1+1?", "2", "1+1=2")  # the int answer becomes text
    assert [e[1] for e in examples] == ["2", "\\frac{1}{2}", "0"]


def test_json_shapes(tmp_path):
    (tmp_path / "wrapped.json").write_text(json.dumps({"version": 1, "data": ROWS}))
    (tmp_path / "keyed.json").write_text(json.dumps({"p1": ROWS[0], "p2": ROWS[1]}))
    assert len(read_local(tmp_path / "wrapped.json")) == 3
    assert [r["id"] for r in read_local(tmp_path / "keyed.json")] == ["p1", "p2"]


def test_missing_column_is_named_with_the_available_ones(tmp_path):
    path = write(tmp_path, "set.jsonl")
    with pytest.raises(ValueError) as info:
        to_examples(read_rows(path), columns=Columns(problem="question", answer="answer"), where=path)
    message = str(info.value)
    assert "\n" not in message
    assert "data.columns.answer = 'answer' is not a column of" in message
    assert "its columns are: question, final, level, worked" in message


def test_filters_keep_listed_values_and_explain_an_empty_result(tmp_path):
    rows = read_rows(write(tmp_path, "set.jsonl"))
    assert [r["level"] for r in keep(rows, {"level": [3, 4, 5]}, "set")] == [3, 5]
    assert [r["level"] for r in keep(rows, {"level": ["1"]}, "set")] == [1]  # compared as text
    with pytest.raises(
        ValueError, match=r"data.filters.level = \['Level 3'\] keeps none of the 3 rows of set; values"
    ):
        keep(rows, {"level": ["Level 3"]}, "set")
    with pytest.raises(ValueError, match="data.filters.subject = 'subject' is not a column"):
        keep(rows, {"subject": ["Algebra"]}, "set")


def test_answer_formats():
    rows = [
        {"q": "a", "a": "Janet has 3 * 24 = 72 dollars.\n#### 1,072"},
        {"q": "b", "a": "so the result is $\\boxed{\\frac{1}{2}}$."},
        {"q": "c", "a": [3, 4.0]},  # lists are joined, integral floats lose ".0"
    ]
    assert to_examples(rows[:1], columns=Columns("q", "a"), answer_format="gsm8k", where="x")[0][1] == "1072"
    assert to_examples(rows[1:2], columns=Columns("q", "a"), answer_format="boxed", where="x")[0][1] == "\\frac{1}{2}"
    assert to_examples(rows[2:], columns=Columns("q", "a"), where="x")[0][1] == "3, 4"


def test_rows_without_an_answer_are_skipped_but_not_all(caplog):
    rows = [{"q": "a", "a": None}, {"q": "b", "a": "2"}]
    assert to_examples(rows, columns=Columns("q", "a"), where="x") == [("b", "2", None)]
    with pytest.raises(ValueError, match="no row of x has both"):
        to_examples(rows[:1], columns=Columns("q", "a"), where="x")


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data file not found"):
        read_rows(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": 1}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl line 2 is not JSON"):
        read_rows(str(bad))


def test_a_hub_id_goes_to_datasets(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(hub_id, subset, split):
        calls.append((hub_id, subset, split))
        return [{"question": "q", "answer": "x #### 5"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert read_rows("openai/gsm8k", subset="main", split="test") == [{"question": "q", "answer": "x #### 5"}]
    assert calls == [("openai/gsm8k", "main", "test")]


def test_an_unreachable_hub_id_is_one_clear_error(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(hub_id, subset, split):
        raise ConnectionError("Couldn't reach 'nobody/nothing' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ValueError, match=r"cannot load 'nobody/nothing' \(subset None, split 'train'\) from the hub"):
        read_rows("nobody/nothing")
