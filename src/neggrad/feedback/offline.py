"""``neggrad judge``: partial rewards for a saved rollout file (JSONL), resumable (docs/algorithms.md §10.3).

Input, one JSON object per line:

- ``prompt`` (str, required): the problem as the policy saw it (``Q: 37+45-18=`` on the testbed).
- ``completion`` (str, required): the policy's answer.
- ``correct`` (bool, optional): the verifier's verdict. When absent, ``answer`` is required and the
  arithmetic testbed's verifier scores the completion.
- ``answer`` (str, optional): the gold final answer.
- ``reference`` (str, optional): the reference solution shown to a language-model judge; default
  ``answer``. The oracle ignores it (it derives the reference from the prompt).
- any other key (``step``, ``group``, ...) is copied through unchanged.

Output, one object per input line, in input order: the input's keys plus

- ``line`` (int): the 1-based input line it scores; resuming skips every line already in the output.
- ``correct`` (bool): as given or as scored.
- ``verdict``: ``correct`` (not judged), ``first_wrong``, ``none_wrong`` or ``failure``.
- ``first_wrong_step`` (int or null): k; ``num_steps`` (int): n under ``feedback.step_split``.
- ``fraction`` (float or null): f = (k - 1) / n, with k = n for ``none_wrong``.
- ``reward`` (float): 1 for a correct answer (the reward scheme's maximum), else the partial reward
  of ``core.partial_reward.judged_rewards`` (0, or -1 under pm1, on failure).
- ``failure_reason`` (str or null).

Every wrong answer is judged, whatever its group: the file need not hold whole groups. Lines are
written in chunks and flushed, so an interrupted run loses at most the chunk in flight; a torn last
line is dropped on resume.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from neggrad.config import FeedbackConfig
from neggrad.core.partial_reward import judged_rewards, step_fraction
from neggrad.core.shaping import REWARD_MAX
from neggrad.feedback.judge import Judge, JudgeRequest
from neggrad.feedback.repair import safe_judge
from neggrad.feedback.steps import split_response
from neggrad.tasks.verifiers.arithmetic import score

CHUNK = 64
"""Lines judged (and written) together."""


class OfflineError(ValueError):
    """A rollout file that cannot be scored: the message names the file and line."""


def read_rollouts(path: Path) -> list[dict]:
    """Every line of a rollout file, checked; raises OfflineError naming the first bad line."""
    if not path.is_file():
        raise OfflineError(f"rollout file not found: {path}")
    rows = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except ValueError:
            raise OfflineError(f"{path} line {number} is not valid JSON") from None
        if not isinstance(row, dict):
            raise OfflineError(f"{path} line {number} must be a JSON object")
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), str):
                raise OfflineError(f"{path} line {number} needs a string {key!r}")
        if not isinstance(row.get("correct"), bool):
            if "correct" in row:
                raise OfflineError(f"{path} line {number}: 'correct' must be true or false")
            if "answer" not in row:
                raise OfflineError(f"{path} line {number} needs 'correct' (true/false) or 'answer' to score against")
        row["line"] = number
        rows.append(row)
    return rows


def _done_lines(out: Path) -> set[int]:
    """Input line numbers already scored in ``out``; a torn last line (an interrupted write) is removed."""
    if not out.exists():
        return set()
    good, done = [], set()
    for text in out.read_text().splitlines(keepends=True):
        try:
            row = json.loads(text)
            done.add(int(row["line"]))
        except (ValueError, KeyError, TypeError):
            break
        good.append(text if text.endswith("\n") else text + "\n")
    out.write_text("".join(good))
    return done


def _score_chunk(judge: Judge, cfg: FeedbackConfig, reward_scheme: str, rows: list[dict]) -> list[dict]:
    for row in rows:
        if not isinstance(row.get("correct"), bool):
            row["correct"] = score([row["completion"]], [str(row["answer"])])[0]
    wrong = [row for row in rows if not row["correct"]]
    requests = [
        JudgeRequest(
            row["prompt"],
            str(row.get("reference", row.get("answer", ""))),
            tuple(split_response(row["completion"], cfg.step_split)),
        )
        for row in wrong
    ]
    verdicts = safe_judge(judge, requests)
    for row in rows:
        if row["correct"]:
            row.update(verdict="correct", first_wrong_step=None, fraction=None, failure_reason=None)
            row["num_steps"] = len(split_response(row["completion"], cfg.step_split))
            row["reward"] = REWARD_MAX[reward_scheme]
    for row, verdict in zip(wrong, verdicts, strict=True):
        fraction = None
        if not verdict.failed:
            k = verdict.first_wrong_or_last
            fraction = step_fraction(torch.tensor([k]), torch.tensor([verdict.num_steps])).item()
        reward = judged_rewards(
            torch.tensor([fraction or 0.0], dtype=torch.float64),
            torch.tensor([verdict.failed]),
            beta=cfg.beta,
            gamma=cfg.gamma,
            scale=cfg.scale,
            reward_scheme=reward_scheme,
        ).item()
        row.update(
            verdict=verdict.kind,
            first_wrong_step=verdict.step,
            num_steps=verdict.num_steps,
            fraction=fraction,
            reward=reward,
            failure_reason=verdict.reason,
        )
    return rows


def score_file(judge: Judge, cfg: FeedbackConfig, *, reward_scheme: str, source: Path, out: Path) -> dict[str, int]:
    """Score ``source`` into ``out`` (see the module docstring), skipping lines ``out`` already holds.

    Returns counts: ``lines`` in the input, ``skipped`` (already scored), ``scored`` now, ``judged``
    and ``failed`` among the wrong answers scored now.
    """
    if source.resolve() == out.resolve():
        raise OfflineError("--out must differ from --in: the input file is never rewritten")
    rows = read_rollouts(source)
    done = _done_lines(out)
    pending = [row for row in rows if row["line"] not in done]
    counts = {"lines": len(rows), "skipped": len(rows) - len(pending), "scored": 0, "judged": 0, "failed": 0}
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as fh:
        for start in range(0, len(pending), CHUNK):
            chunk = _score_chunk(judge, cfg, reward_scheme, pending[start : start + CHUNK])
            fh.write("".join(json.dumps(row) + "\n" for row in chunk))
            fh.flush()
            counts["scored"] += len(chunk)
            counts["judged"] += sum(row["verdict"] in ("first_wrong", "none_wrong") for row in chunk)
            counts["failed"] += sum(row["verdict"] == "failure" for row in chunk)
    return counts
