"""Step splitting: how a response is cut into the numbered steps a judge reads (docs/algorithms.md §10.1).

``feedback.step_split`` names the rule [neggrad choice]:

- ``lines`` (default): one step per line; lines are stripped and empty lines dropped.
- ``regex:<pattern>``: cut at every match of ``<pattern>`` (as ``re.split``), pieces stripped and
  empty ones dropped; ``regex:\\n\\s*\\n`` gives one step per paragraph.
- ``testbed``: the arithmetic testbed's rule, one step per equation plus the final ``A: n``
  (``neggrad.tasks.testbed.split_steps``): ``"37+45=82, 82-18=64. A: 64"`` -> 3 steps.

A response with no step cannot be judged: the judge reports a failure for it.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from neggrad.tasks.testbed import split_steps as testbed_steps

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


def token_step_ids(tokenizer, completion_ids: Tensor, mask: Tensor, rule: str = "lines") -> Tensor:
    """(B, T) long: the step (by ``rule``) that each completion token belongs to, counted from 0 per row.

    Each row's tokens are decoded one by one; a token belongs to the last step that starts at or before
    its first character (the steps are found in order in the concatenated text), so the characters
    between two steps (a newline, ", ") join the step before them and EOS joins the last step. Used by
    LLDS's step gate (docs/algorithms.md §13). Masked positions get 0. A row with no step is all step 0.
    """
    out = torch.zeros(completion_ids.shape, dtype=torch.long)
    for i in range(completion_ids.shape[0]):
        n = int(mask[i].sum())
        if n == 0:
            continue
        pieces = tokenizer.batch_decode([[t] for t in completion_ids[i, :n].tolist()], skip_special_tokens=True)
        text = "".join(pieces)
        starts, cursor = [], 0
        for step in split_response(text, rule):
            at = text.find(step, cursor)
            if at < 0:  # the rule rewrote the step (should not happen: pieces are stripped substrings)
                continue
            starts.append(at)
            cursor = at + len(step)
        begin = torch.tensor([0, *[len(p) for p in pieces[:-1]]]).cumsum(0)  # (n,) first character of each token
        bounds = torch.tensor(starts[1:], dtype=torch.long)  # where steps 1, 2, ... start
        out[i, :n] = torch.searchsorted(bounds, begin, right=True)
    return out
