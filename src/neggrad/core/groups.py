"""Group bookkeeping on binary correctness: shape checks and group kinds.

A group is the G completions of one prompt, one row of a (P, G) tensor (docs/algorithms.md §1.1). Group
kinds, filters and success rates read the verifier's binary correctness ``c``, never a shaped
reward, so a length penalty cannot make an all-wrong group look mixed [neggrad choice, docs/algorithms.md §1.1].
"""

import torch
from torch import Tensor


def check_groups(values: Tensor, *, name: str) -> None:
    """Raise ValueError unless ``values`` is (P, G) with G >= 2, one row per prompt's group.

    Groups are never split and G >= 2 is required (docs/algorithms.md §2), so a lone completion never
    reaches a group statistic.
    """
    if values.ndim != 2 or values.shape[1] < 2:
        raise ValueError(
            f"{name} must have shape (P, G) with G >= 2, got {tuple(values.shape)}: "
            "reshape to one row per prompt's group (B -> (P, G)), or raise num_generations to at least 2."
        )


def check_correct(correct: Tensor, *, shape: torch.Size | None = None) -> None:
    """Raise ValueError unless ``correct`` is a (P, G) bool tensor, of ``shape`` when given."""
    check_groups(correct, name="correct")
    if correct.dtype != torch.bool:
        raise ValueError(
            f"correct must be a bool tensor of verifier outcomes, got dtype {correct.dtype}: "
            "pass the verifier's pass/fail as bool (e.g. rewards > 0 for binary rewards)."
        )
    if shape is not None and correct.shape != shape:
        raise ValueError(
            f"correct has shape {tuple(correct.shape)} but rewards have {tuple(shape)}: "
            "pass one correctness flag per reward, in the same (P, G) layout."
        )


KINDS = ("all_correct", "all_wrong", "mixed", "unscorable")
"""The group kinds of :func:`group_kinds`, in its order (docs/algorithms.md §5.4)."""


def group_kinds(correct: Tensor, scorable: Tensor | None = None) -> dict[str, Tensor]:
    """Classify each group as all-correct, all-wrong, mixed or unscorable by its binary correctness.

    docs/algorithms.md §1.1, §1.3, §5.1 and §5.4. Answers the verifier abstained on (``scorable``
    False: a timeout) are left out of their group's kind, and a group with no scorable answer is
    ``unscorable``. The four masks are disjoint and cover every group.

    Args:
        correct: (P, G) bool verifier outcomes (any value where not scorable).
        scorable: (P, G) bool, False where the verifier abstained; None: every answer scored.

    Returns:
        ``{"all_correct", "all_wrong", "mixed", "unscorable"}``, each a (P,) bool mask.
    """
    check_correct(correct)
    if scorable is None:
        scorable = torch.ones_like(correct)
    check_correct(scorable, shape=correct.shape)
    unscorable = ~scorable.any(dim=1)  # (P,)
    all_correct = (correct | ~scorable).all(dim=1) & ~unscorable  # (P,)
    all_wrong = ~(correct & scorable).any(dim=1) & ~unscorable  # (P,)
    return {
        "all_correct": all_correct,
        "all_wrong": all_wrong,
        "mixed": ~(all_correct | all_wrong | unscorable),
        "unscorable": unscorable,
    }
