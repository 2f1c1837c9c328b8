"""The synthetic multi-step arithmetic task: ``Q: 37+45-18=`` answered ``37+45=82, 82-18=64. A: 64``.

A problem is a chain of numbers and operators applied left to right (no precedence: ``2+3*4`` is
``(2+3)*4 = 20``). The solution writes one equation per operation, each starting from the previous
result, then the answer line. Intermediate results may be negative (``12-45=-33, -33+7=-26``).

Streams are index-addressable: problem ``i`` of a stream depends only on ``(cfg, stream, i)``, so a
training data cursor is a plain int and a resumed run sees the same prompts.

Splits are a function of the prompt, not of the stream: a hash of ``(cfg.seed, prompt)`` puts every
possible prompt in one of three buckets (held-out evaluation, SFT check, training). The eval stream
draws only eval-bucket prompts, the SFT check stream only check-bucket prompts, and the training and
SFT streams only training-bucket prompts (a draw from the wrong bucket is skipped deterministically).
So no eval or SFT-check prompt ever appears in training or SFT data, whatever eval_size or the SFT
check size is, and checking a prompt's split costs one hash.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from itertools import count

from neggrad.config import ConfigError, TaskConfig

_SPLIT_BUCKETS = 16
"""Prompts hash into this many buckets: bucket 0 is eval, bucket 1 SFT check, the rest training (7/8)."""
_EVAL_BUCKET, _CHECK_BUCKET = 0, 1
_MAX_ATTEMPTS_PER_PROBLEM = 1000
"""A stream that draws this many times without finding a usable prompt is out of prompts (tiny task space)."""

_STEP_BOUNDARY = re.compile(r"[,.] ")
_PROMPT = re.compile(r"Q: (\d+(?:[-+*]\d+)+)=")


@dataclass(frozen=True)
class Problem:
    """One task instance; ``prompt + solution`` is the text a perfect model writes (eos not included)."""

    prompt: str
    """``Q: 37+45-18=``, no trailing space."""
    answer: str
    """The final integer as text: ``64``."""
    solution: str
    """The worked completion: ``37+45=82, 82-18=64. A: 64``."""
    steps: tuple[str, ...]
    """The solution cut by :func:`split_steps`: ``("37+45=82", "82-18=64", "A: 64")``."""


def apply(left: int, op: str, right: int) -> int:
    """One operation of the chain: ``apply(82, "-", 18) == 64``."""
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    raise ValueError(f'unknown operator {op!r}: the task uses "+", "-" and "*"')


def solve(operands: list[int], operators: list[str]) -> Problem:
    """Build the problem for numbers and operators: ``solve([37, 45, 18], ["+", "-"])`` gives the doc's example."""
    if len(operators) != len(operands) - 1 or not operators:
        raise ValueError(f"need n >= 2 operands and n - 1 operators, got {operands} and {operators}")
    prompt = (
        "Q: " + str(operands[0]) + "".join(op + str(x) for op, x in zip(operators, operands[1:], strict=True)) + "="
    )
    equations = []
    value = operands[0]
    for op, x in zip(operators, operands[1:], strict=True):
        result = apply(value, op, x)
        equations.append(f"{value}{op}{x}={result}")
        value = result
    answer = str(value)
    solution = ", ".join(equations) + ". A: " + answer
    return Problem(prompt=prompt, answer=answer, solution=solution, steps=(*equations, "A: " + answer))


def parse_prompt(prompt: str) -> tuple[list[int], list[str]]:
    """``"Q: 37+45-18="`` -> ``([37, 45, 18], ["+", "-"])``; a prompt not in the task's format raises ValueError."""
    match = _PROMPT.fullmatch(prompt.strip())
    if match is None:
        raise ValueError(f"{prompt!r} is not an arithmetic prompt like 'Q: 37+45-18='")
    parts = re.split(r"([-+*])", match.group(1))
    return [int(x) for x in parts[0::2]], parts[1::2]


def split_steps(completion: str) -> list[str]:
    """Cut a completion into its steps: the equations and the final ``A: n`` line.

    The rule: a step ends at ``", "`` or ``". "`` (a comma or full stop followed by a space). A minus
    sign never follows a space, so negative numbers stay whole. Empty pieces are dropped.
    ``"37+45=82, 82-18=64. A: 64"`` -> ``["37+45=82", "82-18=64", "A: 64"]``.
    """
    return [piece.strip() for piece in _STEP_BOUNDARY.split(completion.strip()) if piece.strip()]


def _bucket(cfg: TaskConfig, prompt: str) -> int:
    digest = hashlib.blake2b(f"{cfg.seed}|{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _SPLIT_BUCKETS


def _draw(cfg: TaskConfig, stream: str, index: int, attempt: int) -> Problem:
    # random.Random seeded with a str hashes it with SHA-512: stable across runs and PYTHONHASHSEED.
    rng = random.Random(f"neggrad-arithmetic|{cfg.seed}|{stream}|{index}|{attempt}")
    n = rng.randint(cfg.min_operands, cfg.max_operands)
    operands = [rng.randint(0, 10**cfg.digits - 1) for _ in range(n)]
    operators = [rng.choice(cfg.operators) for _ in range(n - 1)]
    return solve(operands, operators)


def _problem_in(cfg: TaskConfig, stream: str, index: int, buckets: range | tuple[int, ...]) -> Problem:
    for attempt in range(_MAX_ATTEMPTS_PER_PROBLEM):
        problem = _draw(cfg, stream, index, attempt)
        if _bucket(cfg, problem.prompt) in buckets:
            return problem
    raise ConfigError(
        f"the {stream} stream found no prompt of its split in {_MAX_ATTEMPTS_PER_PROBLEM} draws: the task is "
        "too small, enlarge it (task.digits, task.max_operands, task.operators)"
    )


def _distinct(cfg: TaskConfig, stream: str, n: int, bucket: int) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    misses = 0
    for index in count():
        problem = _draw(cfg, stream, index, 0)
        if _bucket(cfg, problem.prompt) == bucket and problem.prompt not in seen:
            seen.add(problem.prompt)
            problems.append(problem)
            misses = 0
            if len(problems) == n:
                return problems
        else:
            misses += 1
            if misses > _MAX_ATTEMPTS_PER_PROBLEM * _SPLIT_BUCKETS:
                raise ConfigError(
                    f"the task has only about {len(problems)} distinct {stream} prompts, fewer than the {n} asked: "
                    "lower the set size (task.eval_size or sft.eval_size) or enlarge the task "
                    "(task.digits, task.max_operands)"
                )
    raise AssertionError("unreachable")


def train_problem(cfg: TaskConfig, index: int) -> Problem:
    """Problem ``index`` of the RL training stream (never an eval or SFT-check prompt)."""
    return _problem_in(cfg, "train", index, range(2, _SPLIT_BUCKETS))


def sft_problem(cfg: TaskConfig, index: int) -> Problem:
    """Problem ``index`` of the SFT warm-start stream (training prompts, drawn separately from RL's stream)."""
    return _problem_in(cfg, "sft", index, range(2, _SPLIT_BUCKETS))


def eval_problems(cfg: TaskConfig) -> list[Problem]:
    """The held-out RL evaluation set: ``cfg.eval_size`` distinct prompts, the same for every run with this cfg."""
    return _distinct(cfg, "eval", cfg.eval_size, _EVAL_BUCKET)


def sft_check_problems(cfg: TaskConfig, n: int) -> list[Problem]:
    """``n`` distinct prompts on which the SFT warm start measures greedy accuracy (disjoint from eval)."""
    return _distinct(cfg, "sft_check", n, _CHECK_BUCKET)


def max_solution_chars(cfg: TaskConfig) -> int:
    """Upper bound on ``len(solution)`` over the task (one token per character with the testbed tokenizer).

    Bounds |value| after k operations by (k + 1) * m for ``+-`` and m ** (k + 1) with ``*``
    (m = largest operand), and writes every number with a minus sign.
    """
    m = 10**cfg.digits - 1
    n = cfg.max_operands

    def widest(k: int) -> int:  # characters of the widest value after k operations
        bound = max(m, 2) ** (k + 1) if "*" in cfg.operators else (k + 1) * m
        return len(str(-bound))

    equations = sum(widest(k - 1) + 1 + len(str(m)) + 1 + widest(k) for k in range(1, n))
    return equations + 2 * (n - 2) + len(". A: ") + widest(n - 1)
