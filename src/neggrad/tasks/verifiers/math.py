"""Math verifier: extract a completion's final answer, then check it against the gold answer with math-verify.

Extraction (in the trainer's process, plain string work):
1. the last complete ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces allowed: ``\\boxed{\\frac{1}{2}}``;
2. else the last final-answer line: ``The answer is 5``, ``Final answer: 5``, ``Answer: 5``, ``A: 5``, ``#### 5``.
A completion with neither has no answer and scores 0 without calling math-verify.

Equivalence (HF ``math_verify``, Kydlicek et al. 2025, github.com/huggingface/Math-Verify): ``verify(gold, pred)``
after parsing both as LaTeX, so ``0.5`` matches ``\\frac{1}{2}`` and ``3, 2`` matches ``2,3``. Gold answers are
wrapped in ``$...$`` first: bare LaTeX gold (``\\frac{\\sqrt{2}}{2}``) otherwise parses to nothing and never matches.
Each (gold, answer) pair runs in a :class:`~neggrad.tasks.verifiers.pool.TimeoutPool` worker with a wall-clock
limit, so a pathological answer (``123456789^{987654321}``, ``10000000!``) scores 0 (None, an abstention, in
training) after ``timeout`` seconds and its worker is replaced; math-verify's own ``signal.alarm`` timeouts are
off (they cannot stop C code and need a main thread).
"""

from __future__ import annotations

import importlib.util
import logging
import re

from neggrad.tasks.verifiers.pool import TimedOut, TimeoutPool

logger = logging.getLogger(__name__)

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_FINAL_LINE = re.compile(
    r"(?:final answer|the answer)\s*(?:is|:)\s*:?\s*(?P<a>[^\n]+)"  # "The final answer is 5", "Final answer: 5"
    # "Answer: 5", "A: 5" opening a line or a sentence (a capital A only)
    r"|(?:^|(?<=[.!?;] ))[ \t]*(?:answer|(?-i:A))[ \t]*:[ \t]*(?P<b>[^\n]+)"
    r"|####[ \t]*(?P<c>[^\n]+)",  # GSM8K's "#### 5"
    re.IGNORECASE | re.MULTILINE,
)


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` or ``\\fbox{...}`` in ``text``, braces balanced; else None.

    A box cut off before its closing brace (a truncated completion) is skipped for the one before it.

    >>> last_boxed(r"so x = \\boxed{\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    >>> last_boxed(r"\\boxed{3} then \\boxed{4")
    '3'
    """
    for match in reversed(list(_BOX.finditer(text))):
        depth, start = 1, match.end()
        for pos in range(start, len(text)):
            if text[pos] == "{":
                depth += 1
            elif text[pos] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:pos].strip()
    return None


def _clean(answer: str) -> str:
    """Strip what surrounds an answer on a final line: spaces, a full stop, ``$`` / ``\\( \\)`` math delimiters."""
    answer = answer.strip().rstrip(".").strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if answer.startswith(left) and answer.endswith(right) and len(answer) > len(left) + len(right) - 1:
            answer = answer[len(left) : len(answer) - len(right)].strip()
    return answer.rstrip(".").strip()


def extract_answer(completion: str) -> str | None:
    """The final answer a completion states: its last ``\\boxed{}``, else its last final-answer line, else None.

    >>> extract_answer(r"... so the area is \\boxed{12\\sqrt{3}}.")
    '12\\\\sqrt{3}'
    >>> extract_answer("3 + 4 = 7.\\nThe answer is $7$.")
    '7'
    >>> extract_answer("I am not sure.") is None
    True
    """
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed or None
    matches = list(_FINAL_LINE.finditer(completion))
    if not matches:
        return None
    last = matches[-1]
    answer = _clean(next(group for group in last.groups() if group is not None))
    return last_boxed(answer) or answer or None


def format_score(completion: str) -> float:
    """Format reward: 1.0 when the completion states an extractable final answer, else 0.0."""
    return float(extract_answer(completion) is not None)


def as_latex(answer: str) -> str:
    """Wrap an answer in ``$...$`` unless it already carries math delimiters, so math-verify parses bare LaTeX."""
    return answer if "$" in answer or "\\(" in answer or "\\[" in answer else f"${answer}$"


# ---------------------------------------------------------------------- worker side (runs in TimeoutPool workers)
def _worker_init() -> None:
    """Import math-verify, silence its "timeout is disabled" warnings, and warm sympy up before the first item."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    _equivalent(("1", "1"))


def _equivalent(pair: tuple[str, str]) -> bool:
    """math-verify equivalence of ``(gold, answer)``; both are plain extracted strings. Runs inside a worker."""
    from math_verify import parse, verify

    gold, answer = pair
    gold_parsed = parse(as_latex(gold), parsing_timeout=None)
    answer_parsed = parse(as_latex(answer), parsing_timeout=None) or parse(answer, parsing_timeout=None)
    if not gold_parsed or not answer_parsed:
        return gold.strip() == answer.strip()  # unparsable text answers ("\text{yes}") still match themselves
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))


# ---------------------------------------------------------------------- trainer side
def require_math_verify() -> None:
    """Raise ImportError with the install command when math-verify is missing."""
    if importlib.util.find_spec("math_verify") is None:
        raise ImportError("reward.kind 'math' needs the math-verify package: pip install 'neggrad[math]'")


class MathVerifier:
    """Binary correctness of math completions: extracted answer equivalent to the gold answer (math-verify).

    The worker pool starts on the first :meth:`score` and is reused; call :meth:`close` (or use ``with``) to stop it.

    Args:
        timeout: wall-clock seconds allowed per (gold, answer) check; past it the answer scores 0.
        workers: verifier processes.
    """

    def __init__(self, *, timeout: float = 5.0, workers: int = 2):
        require_math_verify()
        self.pool = TimeoutPool(_equivalent, workers=workers, timeout=timeout, initializer=_worker_init)

    def score(self, completions: list[str], answers: list[str]) -> list[bool]:
        """(B,) True where the completion's extracted answer is equivalent to its gold answer (one per completion).

        A check stopped at the timeout scores False here; :meth:`score_or_abstain` says None instead."""
        return [bool(v) for v in self.score_or_abstain(completions, answers)]

    def score_or_abstain(self, completions: list[str], answers: list[str]) -> list[bool | None]:
        """As :meth:`score`, with None where the check hit the timeout: training leaves such answers out of
        their group's statistics instead of calling them wrong (docs/algorithms.md §1.3)."""
        if len(completions) != len(answers):
            raise ValueError(
                f"got {len(completions)} completions but {len(answers)} answers: repeat each answer "
                "num_generations times so there is one per completion"
            )
        extracted = [extract_answer(c) for c in completions]
        pairs = sorted({(gold, pred) for gold, pred in zip(answers, extracted, strict=True) if pred is not None})
        verdicts: dict = {}
        for pair, (ok, value) in zip(pairs, self.pool.map(pairs), strict=True):
            verdicts[pair] = None if isinstance(value, TimedOut) else ok and bool(value)
            if not ok:
                logger.debug("answer %r vs gold %r scored 0: %s", pair[1][:80], pair[0][:80], value)
        return [pred is not None and verdicts[(gold, pred)] for gold, pred in zip(answers, extracted, strict=True)]

    def start(self) -> None:
        """Start the worker processes now and wait until they are ready (else the first :meth:`score` does)."""
        self.pool.start()

    @property
    def timeouts(self) -> int:
        """Checks stopped at the timeout since the verifier started."""
        return self.pool.stats.timeouts

    def close(self) -> None:
        """Stop the worker processes."""
        self.pool.close()

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
