"""``neggrad judge``: a saved rollout file scored offline, resumably, with one-line errors."""

import json

import pytest
import torch

from neggrad.cli import main
from neggrad.config import build_config
from neggrad.core.partial_reward import partial_reward
from neggrad.feedback.offline import score_file
from neggrad.feedback.oracle import OracleJudge

ROWS = [
    {"prompt": "Q: 37+45-18=", "completion": "37+45=82, 82-18=64. A: 64", "correct": True, "step": 7},
    {"prompt": "Q: 37+45-18=", "completion": "37+45=82, 82-18=63. A: 63", "correct": False},  # k = 2 of 3
    {"prompt": "Q: 37+45-18=", "completion": "37+45=72, 72-18=54. A: 54", "answer": "64"},  # scored: wrong, k = 1
    {"prompt": "Q: 37+45-18=", "completion": "", "correct": False},  # no steps: a failure
]


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_fields_of_the_scored_file(tmp_path):
    _write(tmp_path / "in.jsonl", ROWS)
    cfg = build_config({}, ["feedback.step_split=testbed"]).feedback
    counts = score_file(
        OracleJudge(), cfg, reward_scheme="binary", source=tmp_path / "in.jsonl", out=tmp_path / "out.jsonl"
    )
    assert counts == {"lines": 4, "skipped": 0, "scored": 4, "judged": 2, "failed": 1}
    out = _read(tmp_path / "out.jsonl")
    assert [row["line"] for row in out] == [1, 2, 3, 4]
    assert out[0] == {**ROWS[0], "line": 1, "verdict": "correct", "first_wrong_step": None, "num_steps": 3,
                           "fraction": None, "reward": 1.0, "failure_reason": None}  # fmt: skip
    assert (out[1]["verdict"], out[1]["first_wrong_step"], out[1]["num_steps"]) == ("first_wrong", 2, 3)
    assert out[1]["fraction"] == pytest.approx(1 / 3)
    assert out[1]["reward"] == pytest.approx(partial_reward(torch.tensor(1 / 3, dtype=torch.float64)).item())
    assert (
        out[2]["correct"] is False
        and out[2]["first_wrong_step"] == 1
        and out[2]["reward"] == pytest.approx(0.003346, abs=1e-6)
    )
    assert out[3]["verdict"] == "failure" and out[3]["reward"] == 0.0 and out[3]["failure_reason"]


def test_resume_skips_scored_lines_and_drops_a_torn_one(tmp_path):
    _write(tmp_path / "in.jsonl", ROWS)
    cfg = build_config({}, ["feedback.step_split=testbed"]).feedback
    out = tmp_path / "out.jsonl"
    _write(tmp_path / "in2.jsonl", ROWS[:2])
    score_file(OracleJudge(), cfg, reward_scheme="binary", source=tmp_path / "in2.jsonl", out=out)
    out.write_text(out.read_text() + '{"line": 3, "verd')  # an interrupted write
    counts = score_file(OracleJudge(), cfg, reward_scheme="binary", source=tmp_path / "in.jsonl", out=out)
    assert (counts["skipped"], counts["scored"]) == (2, 2)
    assert [row["line"] for row in _read(out)] == [1, 2, 3, 4]


def test_cli_scores_and_resumes(tmp_path, capsys):
    _write(tmp_path / "in.jsonl", ROWS)
    args = ["judge", "--judge", "oracle", "--in", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl")]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["scored"] == 4
    assert main([*args, "feedback.noise.flip=1.0"]) == 0  # nothing left to do
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "lines": 4, "skipped": 4, "scored": 0, "judged": 0, "failed": 0
    }  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "extra", "message"),
    [
        (None, [], "rollout file not found"),
        (["{not json"], [], "line 1 is not valid JSON"),
        ([json.dumps({"prompt": "Q: 1+2="})], [], "line 1 needs a string 'completion'"),
        ([json.dumps({"prompt": "Q: 1+2=", "completion": "x"})], [], "needs 'correct' (true/false) or 'answer'"),
        ([], ["feedback.step_split=lines"], "needs feedback.step_split: testbed"),
        ([], ["--judge", "http", "feedback.http.model=m"], "NEGGRAD_JUDGE_API_KEY, which is not set"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys, monkeypatch, lines, extra, message):
    monkeypatch.delenv("NEGGRAD_JUDGE_API_KEY", raising=False)
    source = tmp_path / "in.jsonl"
    if lines is not None:
        source.write_text("\n".join(lines) + "\n")
    judge = [] if "--judge" in extra else ["--judge", "oracle"]
    code = main(["judge", *judge, "--in", str(source), "--out", str(tmp_path / "out.jsonl"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("neggrad: error: ") and message in err and "\n" not in err
