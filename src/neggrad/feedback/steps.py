"""Step splitting: how a response is cut into the numbered steps a judge reads (ALGORITHMS.md 5.1).

``feedback.step_split`` names the rule [neggrad choice]:

- ``lines`` (default): one step per line; lines are stripped and empty lines dropped.
- ``regex:<pattern>``: cut at every match of ``<pattern>`` (as ``re.split``), pieces stripped and
  empty ones dropped; ``regex:\\n\\s*\\n`` gives one step per paragraph.
- ``testbed``: the arithmetic testbed's rule, one step per equation plus the final ``A: n``
  (``neggrad.testbed.task.split_steps``): ``"37+45=82, 82-18=64. A: 64"`` -> 3 steps.

A response with no step cannot be judged: the judge reports a failure for it.
"""

from __future__ import annotations

import re

from neggrad.testbed.task import split_steps as testbed_steps

RULES = ("lines", "regex:<pattern>", "testbed")
"""The documented rules, for error messages."""


def check_rule(rule: str) -> str:
    """Return ``rule`` if it names a valid split rule, else raise ValueError saying what is allowed."""
    if rule in ("lines", "testbed"):
        return rule
    if rule.startswith("regex:"):
        pattern = rule.removeprefix("regex:")
        if not pattern:
            raise ValueError("feedback.step_split 'regex:' needs a pattern after the colon, e.g. 'regex:\\n\\n+'")
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"feedback.step_split {rule!r} is not a valid regular expression: {err}") from None
        return rule
    raise ValueError(f"feedback.step_split must be one of {', '.join(RULES)}, got {rule!r}")


def split_response(text: str, rule: str = "lines") -> list[str]:
    """Cut ``text`` into steps by ``rule`` (see the module docstring); an empty list means no steps.

    >>> split_response("a = 1\\n\\n b = 2 \\n")
    ['a = 1', 'b = 2']
    >>> split_response("37+45=82, 82-18=64. A: 64", "testbed")
    ['37+45=82', '82-18=64', 'A: 64']
    """
    if rule == "lines":
        pieces = text.splitlines()
    elif rule == "testbed":
        return testbed_steps(text)
    elif rule.startswith("regex:"):
        pieces = re.split(rule.removeprefix("regex:"), text)
    else:
        check_rule(rule)
    return [piece.strip() for piece in pieces if piece and piece.strip()]
