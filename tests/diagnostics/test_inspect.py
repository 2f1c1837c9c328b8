"""neggrad inspect: the HTML page of NTHR's token choices, from samples the trainer writes."""

import json
import re

import pytest
import torch

from neggrad.analysis.inspect import InspectError, inspect_run, render, steps_with_tokens
from neggrad.cli import main
from neggrad.config import build_config
from neggrad.trainer.loop import Trainer
from neggrad.trainer.probe import group_batch, one_step, rollout_from_ids
from tests.test_nthr_update import SMALL as NTHR_SMALL

SMALL = [
    *NTHR_SMALL,
    "task.min_operands=2",
    "task.max_operands=2",
    "task.eval_size=8",
    "method=nthr",
    "num_samples_logged=4",
    "lld.probe_size=0",
]


def test_trainer_writes_token_samples_and_inspect_renders_them(tmp_path):
    cfg = build_config({}, SMALL)
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.setup()
    tok = trainer.tokenizer
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    completions = ["3+4=7. A: 7", "3+4=8. A: 8", "3+4=7. A: 8", "3+4=9. A: 9"]
    rollout = rollout_from_ids(
        [enc("Q: 3+4=")] * 4, [enc(c) + [tok.eos_token_id] for c in completions], tok.pad_token_id
    )
    rollout.texts = completions
    correct = torch.tensor([True, False, False, False])
    update = one_step(cfg, trainer.model, rollout, correct, "nthr")
    batch = group_batch(cfg, rollout, correct, prompts=["Q: 3+4="])
    batch.answers = ["7"]
    trainer.state["step"] = 3
    trainer._write_samples(batch, update)

    lines = [json.loads(x) for x in (tmp_path / "run" / "samples" / "step-3.jsonl").read_text().splitlines()]
    assert len(lines) == 4  # the whole mixed group
    assert lines[0]["tokens"][:3] == ["3", "+", "4"] and lines[0]["tokens"][-1] == "<eos>"
    assert all(len(x["tokens"]) == len(x["scores"]) == len(x["selected"]) for x in lines)
    assert not any(lines[0]["selected"])  # the correct answer is never selected
    assert sum(sum(x["selected"]) for x in lines[1:]) == int(update.token_selected.sum()) > 0
    assert steps_with_tokens(tmp_path / "run") == [3]

    path = inspect_run(tmp_path / "run")
    page = path.read_text()
    assert path.name == "step-3.html"
    assert page.count("class='row'") == 4 and "Q: 3+4=" in page
    assert page.count("#f4a340;border-bottom") == int(update.token_selected.sum())  # one highlight per selection
    assert 'title="s = ' in page


def test_inspect_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "step-1.jsonl").write_text(
        json.dumps({"group": 0, "prompt": "p", "completion": "c"}) + "\n"
    )
    with pytest.raises(InspectError, match="no samples with NTHR token scores"):
        inspect_run(tmp_path)
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_completion_rows_wrap_instead_of_scrolling():
    line = {"group": 0, "prompt": "Q", "answer": "1", "correct": False, "advantage": -1.0, "tau": 0.1, "eta": 0.5}
    page = render("run", 1, [{**line, "tokens": ["x"] * 400, "scores": [0.0] * 400, "selected": [False] * 400}])
    row_rule = re.search(r"\.row\{([^}]*)\}", page).group(1)
    assert not re.search(r"overflow(-x|-y)?:", row_rule) and "nowrap" not in row_rule  # no scroll widget on a row
    assert "overflow-wrap:anywhere" in row_rule  # a long completion breaks between tokens instead
