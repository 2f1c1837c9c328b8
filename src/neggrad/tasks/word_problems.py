"""Multi-step arithmetic word problems for pretrained chat models, with a worked solution and a ``\\boxed{}`` answer.

``task.name: word_problems`` turns the testbed's difficulty knobs into natural-language problems::

    Mia has 14 marbles. She buys 5 more. Then she gives away 3. After that, she buys 2 bags with 4 marbles in
    each. How many marbles does Mia have now?

with the reference solution, one step per line (the steps the oracle judge and the hint ladder read)::

    14 + 5 = 19
    19 - 3 = 16
    2 * 4 = 8, 16 + 8 = 24
    The answer is \\boxed{24}.

Knobs (``task.*``): ``min_operands`` / ``max_operands`` (numbers in the story; steps = operands - 1), ``digits``
(most digits of each number), ``operators`` (any of ``+-*``; ``*`` is "buys k bags with m in each", a product
added to the count, so one step holds two equations). A count never goes below zero: a take-away is drawn no
larger than what is there, so every story is one a reader accepts.

Streams are index-addressable and splits are a function of the problem text, as in the testbed
(:mod:`neggrad.tasks.testbed`): a hash of ``(task.seed, problem)`` puts every possible problem in one of 16
buckets; bucket 0 is held out for evaluation and never trained on.

The answer is checked by :func:`score` (``reward.kind: integer``): the integer the completion states as its final
answer (its last ``\\boxed{}``, else a "The answer is n" line) equals the gold integer. Every answer is a
non-negative integer, so an exact integer check is complete here, and it needs no worker processes, no extra
package and no timeout (math-verify's work is parsing LaTeX, which these answers do not have);
``reward.kind: math`` can still be chosen and agrees on integers. The final-answer line is accepted beside the box
because SmolLM2-135M-Instruct almost never boxes unprompted (0 of 64 greedy answers) yet often ends "The answer is
4."; a box-only check would start every group all wrong.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from neggrad.config import TaskConfig
from neggrad.tasks.verifiers.math import extract_answer

_SPLIT_BUCKETS = 16
_EVAL_BUCKET = 0
_MAX_ATTEMPTS = 1000

NAMES = ("Sam", "Mia", "Leo", "Ava", "Noah", "Emma", "Liam", "Zoe", "Omar", "Lily", "Ben", "Nora", "Ivan", "Rosa")
"""Story characters; the pronoun follows from the table below."""
_SHE = frozenset({"Mia", "Ava", "Emma", "Zoe", "Lily", "Nora", "Rosa"})
ITEMS = ("apples", "marbles", "stickers", "books", "pencils", "cards", "shells", "coins", "stamps", "cookies")
"""What the character counts."""

_ADD = ("{P} buys {n} more.", "{P} finds {n} more.", "A friend gives {O} {n} more.", "{P} gets {n} more.")
_SUB = ("{P} gives away {n}.", "{P} loses {n}.", "{P} gives {n} to a friend.", "{P} sells {n}.")
_MUL = ("{P} buys {k} bags with {m} {items} in each.", "{P} gets {k} boxes with {m} {items} in each.")
_LINKS = ("", "Then ", "After that, ", "Next, ")


@dataclass(frozen=True)
class WordProblem:
    """One word problem; ``solution`` is what a perfect model writes after the prompt."""

    prompt: str
    """The model input (template and chat template applied by the task)."""
    answer: str
    """The final count as text: ``"24"``."""
    problem: str
    """The story and its question."""
    solution: str
    """The worked solution, one step per line, ending ``The answer is \\boxed{24}.``"""
    steps: tuple[str, ...]
    """The solution's lines."""


def _bound(digits: int) -> int:
    return 10**digits - 1


def _pronoun(name: str, sentence_start: bool) -> str:
    word = "she" if name in _SHE else "he"
    return word.capitalize() if sentence_start else word


def compose(rng: random.Random, *, operands: int, digits: int, operators: str) -> tuple[str, tuple[str, ...], int]:
    """A story with ``operands`` numbers: ``(problem text, solution steps, answer)``, drawn from ``rng``.

    Each operation is one sentence and one solution step; ``*`` ("k bags with m in each") draws k in 2..5 and
    m in 2..bound, and its step writes the product first: ``2 * 4 = 8, 16 + 8 = 24``.
    """
    if operands < 2:
        raise ValueError(f"a word problem needs at least 2 numbers, got {operands}")
    name, items = rng.choice(NAMES), rng.choice(ITEMS)
    high = _bound(digits)
    value = rng.randint(max(2, high // 10 if digits > 1 else 2), high)
    sentences = [f"{name} has {value} {items}."]
    steps = []
    for i in range(operands - 1):
        op = rng.choice(operators)
        if op == "-" and value < 1:
            op = "+"  # nothing left to take away
        link = _LINKS[min(i, len(_LINKS) - 1)] if i else ""
        if op == "*":
            k, m = rng.randint(2, 5), rng.randint(2, max(2, high))
            text = rng.choice(_MUL).format(P="{P}", k=k, m=m, items=items)
            steps.append(f"{k} * {m} = {k * m}, {value} + {k * m} = {value + k * m}")
            value += k * m
        else:
            n = rng.randint(1, high) if op == "+" else rng.randint(1, min(high, value))
            text = rng.choice(_ADD if op == "+" else _SUB).format(P="{P}", O="{O}", n=n)
            steps.append(f"{value} {op} {n} = {value + n if op == '+' else value - n}")
            value = value + n if op == "+" else value - n
        subject = _pronoun(name, sentence_start=not link)
        text = text.replace("{P}", subject).replace("{O}", "her" if name in _SHE else "him")
        sentences.append(link + text if not link else link + text[0].lower() + text[1:])
    sentences.append(f"How many {items} does {name} have now?")
    steps.append(f"The answer is \\boxed{{{value}}}.")
    return " ".join(sentences), tuple(steps), value


def _bucket(seed: int, problem: str) -> int:
    digest = hashlib.sha256(f"neggrad-word-split|{seed}|{problem}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % _SPLIT_BUCKETS


def is_eval_problem(cfg: TaskConfig, problem: str) -> bool:
    """Whether ``problem`` falls in the held-out bucket (never drawn for training)."""
    return _bucket(cfg.seed, problem) == _EVAL_BUCKET


def _draw(cfg: TaskConfig, stream: str, index: int, want_eval: bool) -> tuple[str, tuple[str, ...], int]:
    for attempt in range(_MAX_ATTEMPTS):
        rng = random.Random(f"neggrad-word|{cfg.seed}|{stream}|{index}|{attempt}")
        operands = rng.randint(cfg.min_operands, cfg.max_operands)
        problem, steps, answer = compose(rng, operands=operands, digits=cfg.digits, operators=cfg.operators)
        if is_eval_problem(cfg, problem) == want_eval:
            return problem, steps, answer
    raise RuntimeError(f"no {stream} word problem found in {_MAX_ATTEMPTS} draws for index {index}")


def problem_at(cfg: TaskConfig, stream: str, index: int, *, formatter=lambda text: text) -> WordProblem:
    """Problem ``index`` of ``stream`` ("train" or "eval"): a function of ``(cfg, stream, index)`` only.

    ``formatter`` turns the problem text into the model input (prompt template, chat template).
    """
    problem, steps, answer = _draw(cfg, stream, index, want_eval=stream == "eval")
    return WordProblem(
        prompt=formatter(problem), answer=str(answer), problem=problem, solution="\n".join(steps), steps=steps
    )


def eval_problems(cfg: TaskConfig, *, formatter=lambda text: text) -> list[WordProblem]:
    """The first ``cfg.eval_size`` distinct held-out problems."""
    seen, out = set(), []
    index = 0
    while len(out) < cfg.eval_size:
        example = problem_at(cfg, "eval", index, formatter=formatter)
        index += 1
        if example.problem not in seen:
            seen.add(example.problem)
            out.append(example)
        if index > cfg.eval_size * 50:
            raise ValueError(
                f"task.eval_size={cfg.eval_size} asks for more distinct held-out word problems than the settings "
                f"allow (found {len(out)}): raise task.digits or task.max_operands, or lower task.eval_size"
            )
    return out


# ---------------------------------------------------------------------- answers
_INTEGER_ANSWER = re.compile(r"^\$?\s*(-?\d[\d,]*)\s*(?:[A-Za-z][A-Za-z ]*)?[.!]?\s*\$?$")


def extract_integer(completion: str) -> int | None:
    """The integer a completion states as its final answer; None when it states none or not a plain integer.

    The final answer is the content of the last ``\\boxed{}``, else of the last final-answer line ("The answer
    is 16.", "Final answer: 16"), as :func:`neggrad.tasks.verifiers.math.extract_answer` finds it (so ``reward.kind:
    math`` agrees on these answers). Thousands separators and a trailing unit word are accepted: ``1,024`` is
    1024, ``24 apples`` is 24; ``x``, ``3+4`` and an empty box are None.

    >>> extract_integer(r"16 + 8 = 24. So \\boxed{24}.")
    24
    >>> extract_integer("16 + 8 = 24\nThe answer is 24 apples.")
    24
    >>> extract_integer("16 + 8 = 24") is None
    True
    """
    content = extract_answer(completion)
    if content is None:
        return None
    match = _INTEGER_ANSWER.match(content.strip())
    return int(match.group(1).replace(",", "")) if match else None


def score(completions: list[str], answers: list[str]) -> list[bool]:
    """Exact integer match of each completion's boxed answer with its gold answer, one per completion."""
    if len(completions) != len(answers):
        raise ValueError(
            f"got {len(completions)} completions but {len(answers)} answers: repeat each answer "
            "num_generations times so there is one per completion"
        )
    return [extract_integer(c) == int(a) for c, a in zip(completions, answers, strict=True)]


# ---------------------------------------------------------------------- steps, for the oracle judge
_EQUATION = re.compile(r"(-?\d[\d,]*)\s*([-+*x×/])\s*(-?\d[\d,]*)\s*=\s*(-?\d[\d,]*)")


def _value(text: str) -> int:
    return int(text.replace(",", ""))


def step_is_wrong(step: str, gold: int) -> bool:
    """Whether one written step states something false: an equation ``a op b = c`` whose arithmetic is wrong, or
    a boxed answer other than ``gold``.

    >>> step_is_wrong("14 + 5 = 19", 24), step_is_wrong("14 + 5 = 18", 24), step_is_wrong(r"\\boxed{23}", 24)
    (False, True, True)
    """
    for a, op, b, c in _EQUATION.findall(step):
        x, y, z = _value(a), _value(b), _value(c)
        result = {"+": x + y, "-": x - y, "*": x * y, "x": x * y, "×": x * y}.get(op)
        if op == "/":
            result = x // y if y and x % y == 0 else None
        if result is None or result != z:
            return True
    if "\\boxed" in step:
        return extract_integer(step) != gold
    return False
