"""Math verifier: answer extraction, math-verify equivalence in worker processes, and the per-answer timeout."""

import time

import pytest

from neggrad.tasks.verifiers.math import MathVerifier, as_latex, extract_answer, format_score, last_boxed

pytest.importorskip("math_verify")


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (r"so \boxed{\frac{\sqrt{2}}{2}}.", r"\frac{\sqrt{2}}{2}"),  # nested braces kept whole
        (r"first \boxed{3}, then \boxed{4}", "4"),  # the last box wins
        (r"\boxed{3} and then \boxed{\frac{1}{", "3"),  # a box cut off by truncation is skipped
        (r"\fbox{7}", "7"),
        ("3 + 4 = 7.\nThe answer is $7$.", "7"),
        ("Final answer: 12", "12"),
        ("The final answer is: \\(x^2\\)", "x^2"),
        ("reasoning...\nAnswer: 5", "5"),
        ("37+45=82, 82-18=64. A: 64", "64"),  # the testbed's answer line
        ("She pays 3 * 24 = 72.\n#### 72", "72"),  # GSM8K's marker
        ("The answer is 5.\nWait, the answer is 6.", "6"),  # the last final-answer line wins
        (r"The answer is \boxed{9}.", "9"),
        ("I do not know.", None),
        (r"\boxed{}", None),
    ],
)
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


def test_last_boxed_and_format_score():
    assert last_boxed(r"\boxed{a{b}c}") == "a{b}c"
    assert last_boxed("no box") is None
    assert (format_score(r"\boxed{1}"), format_score("Answer: 2"), format_score("hmm")) == (1.0, 1.0, 0.0)


def test_gold_is_wrapped_in_math_delimiters_once():
    assert as_latex(r"\frac{1}{2}") == r"$\frac{1}{2}$"
    assert as_latex("$5$") == "$5$"


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(timeout=5.0, workers=2) as v:
        yield v


def test_equivalent_answers_score_true(verifier):
    completions = [
        r"... \boxed{\frac{1}{\sqrt{2}}}",  # gold in bare LaTeX: parses only once wrapped in $...$
        "The answer is 0.5",
        r"\boxed{(1, 2)}",
        r"\boxed{3, 2}",  # a set in any order
        "A: 64",
        r"\boxed{1,000}",
    ]
    golds = [r"\frac{\sqrt{2}}{2}", r"\frac{1}{2}", "(1,2)", "2,3", "64", "1000"]
    assert verifier.score(completions, golds) == [True] * 6


def test_wrong_or_missing_answers_score_false(verifier):
    assert verifier.score([r"\boxed{5}", "no answer at all", r"\boxed{\frac{1}{3}}"], ["4", "4", "0.5"]) == [
        False,
        False,
        False,
    ]


def test_workers_are_reused_across_calls(verifier):
    verifier.score([r"\boxed{1}"], ["1"])
    pids = verifier.pool.pids
    verifier.score([r"\boxed{2}", r"\boxed{3}"], ["2", "3"])
    assert verifier.pool.pids == pids and len(pids) == 2


def test_one_answer_per_completion_is_required(verifier):
    with pytest.raises(ValueError, match="got 2 completions but 1 answers"):
        verifier.score(["a", "b"], ["1"])


def test_pathological_answers_time_out_score_zero_and_workers_are_replaced():
    # Both hang math-verify for minutes inside C code (big-integer power, factorial), where no signal handler runs.
    timeout = 1.0
    with MathVerifier(timeout=timeout, workers=3) as verifier:
        verifier.start()  # all workers imported and warmed up, so the clock below measures only the checks
        pids = verifier.pool.pids
        start = time.monotonic()
        result = verifier.score(
            [r"\boxed{123456789^{987654321}}", r"\boxed{10000000!}", r"\boxed{7}"], ["5", "5", "7"]
        )
        elapsed = time.monotonic() - start
        assert result == [False, False, True]
        # all three run side by side: one timeout, plus killing two workers and starting (not awaiting) two more
        assert timeout <= elapsed < timeout + 2.0
        assert verifier.timeouts == 2
        assert len(set(verifier.pool.pids) - set(pids)) == 2  # both stuck workers were killed and replaced
        # training asks again: a timeout is an abstention (None), a wrong answer stays False (docs/algorithms.md §1.3)
        again = verifier.score_or_abstain([r"\boxed{10000000!}", r"\boxed{6}", "no answer"], ["5", "7", "7"])
        assert again == [None, False, False]
        assert verifier.score([r"\boxed{\frac{1}{2}}"], ["0.5"]) == [True]  # the fresh workers verify
        workers = [w.process for w in verifier.pool._workers]
    assert all(p.poll() is not None for p in workers)  # close() stopped them
