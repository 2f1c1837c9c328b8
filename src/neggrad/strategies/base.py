"""The strategy protocol: what a rule for wrong answers (or any group / token rule) may change in a step.

A step is plain GRPO: ``collect_batch`` (trainer/batch.py) generates rounds of P groups of G answers, scores
them, keeps groups, shapes rewards and computes sequence advantages; ``policy_update`` (trainer/update.py) runs
the clipped surrogate over token advantages = the sequence advantage on every token. A strategy is an
object whose hooks the loop calls at the few places where published methods differ from that:

sampling (one :class:`Round` per generation round, one :class:`Groups` for the kept groups)
    ``scored``      after the verifier: replace ``correct`` / ``scorable`` (the random-reward control).
    ``round``       after the round's groups were counted: re-generate answers, set per-group values in
                    ``rnd.groups`` that follow the kept groups into the batch (hints, the judge).
    ``keep``        which groups the filter keeps (drop / refill, judge-repaired groups that vary).
    ``rewards``     replace the kept groups' rewards before the reward shaping (the judge's partial rewards).
    ``advantages``  change sequence advantages, set per-row flags for the update (NGRPO / NSR /
                    W-REINFORCE on all-wrong groups; RL-ZVP and LENS mark their groups).

update (one :class:`Update` per policy update, one :class:`Forward` per micro-batch forward)
    ``begin_update``     before the first forward (size per-row state, check the batch).
    ``old_policy``       once per row, with the old policy's forward: the no-grad pass before the first
                         loss when there is one, else the training forward itself. Writes persistent token
                         advantages into ``upd.token_adv`` (NTHR, THR, LENS).
    ``old_policy_done``  after the whole no-grad old-policy pass (NTHR over the whole batch, LENS).
    ``token_advantages`` inside every training forward: (b, T) advantages in, advantages out (RL-ZVP).
    ``policy_loss``      override per-token policy losses (LUFFY's shaped loss on hint tokens).
    ``extra_loss``       named (b, T) token terms added to the loss, reported as ``loss/<name>`` (LLDS).
    ``update_metrics``   metrics at the end of the update.

Needs, declared as attributes so the loop can plan the passes before it runs them:
``old_policy_pass`` (a no-grad pass before the first loss even when the update is on-policy; read before
``begin_update``), ``whole_groups`` (micro-batches of the old-policy forward hold whole groups) and
``hidden_states`` (that forward returns the last hidden states), both read after ``begin_update``, which
may set them from the batch. ``losses`` names the ``extra_loss`` terms, ``excludes`` the strategies this
one cannot run with, and ``check`` refuses a config it cannot work with; both are applied at config load,
each with one line.

Why this shape: every hook is one of the places where an existing method (NTHR, THR, LENS, RL-ZVP, LLDS,
hints, judge, NGRPO / NSR / W-REINFORCE, drop, random reward) differs from GRPO, so each of them is one
small class, and plain GRPO reads top to bottom with a loop over the active strategies at each such place.
A hook receives a context object rather than many arguments, so hooks can grow without breaking user
classes. A strategy object lives for one stage of one step (``collect_batch`` or ``policy_update``);
what must travel from sampling to the update goes through ``Groups.flags`` into ``TrainBatch.flags``.
Every hook of this base class does nothing, so a strategy overrides only what it changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

if TYPE_CHECKING:
    from neggrad.config import Config
    from neggrad.rollout.base import Rollout
    from neggrad.trainer.distributed import Dist


@dataclass
class Round:
    """One generation round of P groups of G answers (sampling)."""

    config: Config
    engine: Any  # the rollout engine (generate, generate_with_prefix, tokenizer)
    task: Any  # the task (score, train_example)
    judge: Any  # the judge collect_batch was given, or None (then the config's)
    step: int  # the training step being sampled (1-based)
    first: int  # prompt index of the round's first example
    examples: list  # (P,) task examples
    rollout: Rollout  # (P * G,) completions, groups contiguous
    correct: Tensor  # (P, G) bool: verifier correctness (what the groups are trained on)
    scorable: Tensor  # (P, G) bool: False where the verifier abstained
    visible: Tensor | None = None  # (P, G) correctness shown to ``round`` (unscorable groups look all-correct)
    groups: dict[str, Tensor] = field(default_factory=dict)  # (P, ...) per-group values kept with the groups
    kind_seconds: dict[str, float] = field(default_factory=dict)  # seconds hooks spent, by kind of group
    generated: int = 0  # extra completions hooks generated
    generated_tokens: int = 0  # and their sampled tokens


@dataclass
class Groups:
    """The kept groups of a step (P', G) while their rewards and advantages are computed (sampling)."""

    config: Config
    rollout: Rollout  # (P' * G,) the kept completions
    tokenizer: Any
    correct: Tensor  # (P', G) bool
    scorable: Tensor  # (P', G) bool
    data: dict[str, Tensor]  # (P', ...) the per-group values ``round`` hooks set
    kinds: dict[str, Tensor]  # (P',) bool per kind of group (core.groups.group_kinds)
    rewards: Tensor | None = None  # (P', G) rewards; ``rewards`` hooks see them before shaping
    seq_adv: Tensor | None = None  # (P', G) sequence advantages
    flags: dict[str, Tensor] = field(default_factory=dict)  # per-row or per-group values: TrainBatch.flags


@dataclass
class Update:
    """One policy update (token level); tensors on the CPU, B rows in groups of G."""

    config: Config
    model: Any  # the plain model (not its DDP / FSDP form)
    batch: Any  # the TrainBatch
    token_adv: Tensor  # (B, T) token advantages before ``token_advantages`` hooks; writable
    mask: Tensor  # (B, T) float: tokens in the loss
    seq_adv: Tensor  # (B,) sequence advantages
    correct: Tensor  # (B,) bool
    hinted: Tensor | None  # (B,) rows of groups re-generated with hints (not the policy's own answers)
    old_pass: bool  # True: a no-grad old-policy pass ran before the first loss
    tokens: float = 1.0  # tokens in the loss over every process (set before ``update_metrics``)
    outputs: dict[str, Any] = field(default_factory=dict)  # extra UpdateResult fields (NTHR's token decisions)


@dataclass
class Forward:
    """One micro-batch's forward: rows ``idx`` of the update."""

    idx: Tensor  # (b,) rows
    rollout: Rollout  # the micro-batch, on the device
    logits: Tensor | None  # (b, T, V); None with logprob_chunk (the logits are never formed)
    hidden: Tensor | None  # (b, T, H) with ``hidden_states``
    logp: Tensor  # (b, T) log-probs (with grad in the training forward)
    old: Tensor  # (b, T) old-policy log-probs
    mask: Tensor  # (b, T) float, on the device
    entropy: Tensor | None = None  # (b, T) token entropy (training forward only)
    lse: Tensor | None = None  # (b, T) detached logsumexp of logits / temperature over V (None with logprob_chunk)


class Strategy:
    """Base class of every strategy: each hook does nothing. See the module docstring for when each runs."""

    name: ClassVar[str] = ""  # how conflicts and errors name it (default: the class name)
    excludes: ClassVar[dict[str, str]] = {}  # strategy name -> why the two cannot run together
    losses: ClassVar[tuple[str, ...]] = ()  # names of the ``extra_loss`` terms (reported as loss/<name>)
    whole_groups: bool = False
    hidden_states: bool = False
    old_policy_pass: bool = False

    def __init__(self, config: Config):
        """A subclass with options takes them as keyword arguments after ``config`` (from the config entry)."""
        self.config = config

    @classmethod
    def label(cls) -> str:
        return cls.name or cls.__name__

    @classmethod
    def active(cls, config: Config) -> bool:
        """Built-in strategies: whether ``config``'s keys turn this one on (user strategies are listed)."""
        return False

    @classmethod
    def check(cls, config: Config) -> None:
        """Raise ValueError (one line) if this strategy cannot work with ``config``."""

    # sampling
    def scored(self, rnd: Round) -> None:
        """After the verifier scored the round."""

    def round(self, rnd: Round) -> None:
        """After the round's kinds of groups were counted."""

    def keep(self, rnd: Round, keep: Tensor) -> Tensor:
        """(P,) bool groups to keep, given those the group filter keeps."""
        return keep

    def rewards(self, groups: Groups) -> None:
        """Replace ``groups.rewards`` of the kept groups, before the reward shaping."""

    def advantages(self, groups: Groups) -> None:
        """Change ``groups.seq_adv``, set ``groups.flags`` for the update."""

    def sampling_metrics(self, dist: Dist) -> dict:
        """Metrics of the sampling stage, reduced over processes."""
        return {}

    # update
    def begin_update(self, upd: Update) -> None:
        """Before the first forward of the update (also on a process without rows)."""

    def old_policy(self, upd: Update, fwd: Forward) -> None:
        """Once per row, with the old policy's forward."""

    def old_policy_done(self, upd: Update, old_logp: Tensor) -> None:
        """After the no-grad old-policy pass (B, T) over every row."""

    def token_advantages(self, upd: Update, fwd: Forward, adv: Tensor) -> Tensor:
        """(b, T) token advantages of the micro-batch (on the device)."""
        return adv

    def policy_loss(self, upd: Update, fwd: Forward, adv: Tensor, loss: Tensor, events: dict) -> tuple[Tensor, dict]:
        """(b, T) policy token losses and their bool clip events (same keys)."""
        return loss, events

    def extra_loss(self, upd: Update, fwd: Forward, adv: Tensor) -> dict[str, Tensor]:
        """Named (b, T) token terms added to the loss (names from ``losses``)."""
        return {}

    def update_metrics(self, upd: Update, dist: Dist) -> dict:
        """Metrics of the update, reduced over processes."""
        return {}
