"""Every metric neggrad logs, in one table, the JSONL writer of ``metrics.jsonl``, and ``read_jsonl``, the one
reader of a run's JSON-lines files (``metrics.jsonl``, ``samples/step-N.jsonl``).

One line per training step. Names follow docs/algorithms.md §15.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

logger = logging.getLogger(__name__)

METRICS: dict[str, str] = {
    "step": "training step (generation batch) this line reports, 1-based",
    "reward/mean": "mean reward of the kept completions (after shaping)",
    "reward/std": "std of the kept completions' rewards",
    "accuracy": "fraction of sampled completions the verifier marks correct (all rounds, before filtering)",
    "groups/all_correct_frac": "fraction of sampled groups where every completion is correct (before filtering)",
    "groups/all_wrong_frac": "fraction of sampled groups where every completion is wrong (before filtering)",
    "groups/mixed_frac": "fraction of sampled groups mixing right and wrong completions",
    "groups/unscorable_frac": "fraction of sampled groups where the verifier abstained on every answer (dropped)",
    "reward/abstained": "sampled answers the verifier abstained on (a timeout): advantage 0, out of group statistics",
    "groups/zero_std": "sampled groups whose correctness does not vary (all right or all wrong)",
    "groups/dropped": "groups removed by group_filter",
    "groups/gen_rounds": "generation rounds this step (>1 when dropped groups are refilled)",
    "groups/batch_short": "1 if fewer than P groups were kept after the last round",
    "batch/completions": "completions trained on this step",
    "batch/generated": "completions generated this step: every generation round (refills) and hint re-generation",
    "batch/generated_tokens": "completion tokens generated this step (EOS included; hint prefixes not counted)",
    "budget/samples": "completions generated since the run started (sum of batch/generated; the samples budget)",
    "budget/tokens": "completion tokens generated since the run started (sum of batch/generated_tokens)",
    "budget/seconds": "wall-clock seconds of the run at the end of this step's update (the seconds budget)",
    "adv/mean": "mean sequence advantage of trained completions",
    "adv/std": "std of the sequence advantages",
    "adv/pos_mean": "mean of the positive advantages (0 if none)",
    "adv/neg_mean": "mean of the negative advantages (0 if none)",
    "adv/group_sum_mean": "mean over groups of the sum of a group's advantages (NGRPO makes it negative)",
    "loss/total": "loss of the step (mean over its optimizer steps)",
    "loss/policy": "policy-gradient part of the loss",
    "loss/kl": "beta-weighted KL part of the loss",
    "loss/entropy": "entropy bonus part of the loss (negative when entropy_coef > 0)",
    "update/skipped": "optimizer steps skipped for a non-finite loss or gradient",
    "policy/entropy": "mean token entropy of the policy on trained completions",
    "kl/ref": "mean per-token KL estimate to the reference (0 when beta = 0)",
    "policy/ppo_kl": "mean old_logp - logp over trained tokens (drift during the step's updates)",
    "clip/low_frac": "fraction of tokens with A < 0 whose ratio fell below 1 - epsilon",
    "clip/high_frac": "fraction of tokens with A > 0 whose ratio rose above 1 + epsilon_high",
    "clip/dual_frac": "fraction of tokens where the dual clip was active",
    "grad/norm": "global gradient norm before clipping (mean over optimizer steps)",
    "lr": "learning rate at the step's last optimizer step",
    "length/mean": "mean completion length in tokens (EOS included)",
    "length/min": "shortest completion",
    "length/max": "longest completion",
    "length/correct_mean": "mean length of correct completions",
    "length/wrong_mean": "mean length of wrong completions",
    "length/truncated_frac": "fraction of completions without EOS within max_completion_length",
    "eval/accuracy": "greedy pass@1 on the held-out set (steps with an evaluation only)",
    "eval/avg_at_k": "sampled avg@k on the held-out set (when eval_avg_k > 0)",
    "feedback/groups": "all-wrong groups sent to the step-wise judge this step (all rounds; feedback.enabled)",
    "feedback/judged": "answers of those groups the judge gave a verdict for",
    "feedback/failed": "answers the judge could not judge (reward 0, -1 under pm1)",
    "feedback/f_mean": "mean first-wrong-step fraction f = (k - 1) / n of the judged answers (0 if none)",
    "feedback/f_hist": "histogram of f over 10 equal bins of [0, 1), a list of counts",
    "feedback/latency_mean": "mean seconds of one judge request not answered from the cache (0 if none)",
    "feedback/cache_hit_frac": "fraction of the answers sent to the judge whose reply came from the on-disk cache",
    "time/judge": "seconds in the judge (all rounds); not part of time/score",
    "time/generate": "seconds generating completions (all rounds)",
    "time/score": "seconds scoring and computing advantages",
    "time/old_logp": "seconds in the no-grad old-policy and reference passes",
    "time/update": "seconds in forward/backward and optimizer steps",
    "time/eval": "seconds evaluating (steps with an evaluation only)",
    "time/step": "seconds for the whole step",
    "time/all_wrong": "seconds spent on all-wrong groups: their share of generation, hints and the judge, and their "
    "share of the update (by completion tokens); dropped groups count their generation",
    "time/all_correct": "seconds spent on all-correct groups (as time/all_wrong)",
    "time/mixed": "seconds spent on mixed groups (as time/all_wrong)",
    "time/unscorable": "seconds spent generating groups the verifier could not score (they are dropped)",
    **{
        f"time/gen_{kind}": f"the generation, hint and judge part of time/{kind}"
        for kind in ("all_wrong", "all_correct", "mixed", "unscorable")
    },
    "memory/peak_gb": "peak GPU memory allocated by torch during the step, GiB (CUDA only; this process's)",
    "time/nthr": "seconds scoring tokens for NTHR (part of time/update or time/old_logp)",
    "time/lld": "seconds in the LLD after-update pass",
    "nthr/groups": "mixed groups NTHR scored this step",
    "thr/groups": "mixed groups THR scored this step",
    "thr/dominant_frac": "fraction of the tokens of scored groups that THR found dominant (|s| > |tau|)",
    "thr/pos_frac": "fraction of dominant tokens whose update raises the correct answers' likelihood (THR > 0)",
    "thr/tau_mean": "mean THR threshold over scored groups",
    "clip/seq_frac": "GSPO: fraction of tokens in sequences whose sequence ratio was clipped",
    "cispo/capped_frac": "CISPO: fraction of tokens whose importance weight hit the epsilon_high cap",
    "llds/penalised_frac": "LLDS: fraction of tokens whose fallen likelihood the LLDS term pushed back up",
    "loss/llds": "LLDS part of the loss",
    "hint/groups": "all-wrong groups sent to the hint ladder this step (zero_variance.all_wrong: hint)",
    "hint/solved": "of those, groups where a hinted answer was right (their G - 1 hinted answers are trained on)",
    "hint/unsolved": "groups still all wrong at the top of the ladder (kept as they were)",
    "hint/unhintable": "groups whose reference has fewer than 2 steps",
    "hint/extra_generations": "completions generated for hints",
    "hint/solved_at_rung": "solved groups by ladder rung (1, 2, 3, 4+), a list of counts",
    "time/hint": "seconds re-generating with hints (part of time/score)",
    "control/rate": "random-reward control: probability of reward 1 used this step",
    "control/agreement": "random-reward control: fraction of coin flips equal to the verifier's verdict",
    "nthr/selected_frac": "fraction of wrong-response tokens in mixed groups whose penalty NTHR scaled by eta",
    "nthr/tau_mean": "mean NTHR threshold tau over scored groups",
    "nthr/eta_mean": "mean NTHR factor eta over scored groups",
    "lld/probe/delta_tok_mean": "probe set: mean per-token log-likelihood change of its correct answers since step 0",
    "lld/probe/delta_seq_mean": "probe set: mean sequence log-likelihood change since step 0",
    "lld/probe/below_frac": "probe set: fraction of its correct answers now less likely than at step 0",
    "lld/probe/count": "probe set size",
}


def _lld_metrics() -> dict[str, str]:
    """lld/* and lld/wrong/*: docs/algorithms.md §6.1, overall and per group success-rate bin."""
    bins = {
        "": "",
        "_p_q1": " (groups with p in (0, 1/4])",
        "_p_q2": " (p in (1/4, 1/2])",
        "_p_q3": " (p in (1/2, 3/4])",
        "_p_q4": " (p in (3/4, 1))",
        "_p_all": " (all-correct groups)",
    }
    out = {}
    for prefix, who in (("lld/", "correct"), ("lld/wrong/", "wrong")):
        out[f"{prefix}count"] = f"{who} completions measured by LLD this step"
        for suffix, where in bins.items():
            out[f"{prefix}delta_seq_mean{suffix}"] = (
                f"mean change of sequence log-likelihood of trained {who} completions over the step's update{where}"
            )
            out[f"{prefix}delta_tok_mean{suffix}"] = f"the same per token{where}"
            out[f"{prefix}displaced_frac{suffix}"] = f"fraction of {who} completions made less likely{where}"
    return out


METRICS.update(_lld_metrics())


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RunFileError(ValueError):
    """A line of a run's JSON-lines file that is not a JSON object, and not the torn last line a crash leaves."""


def read_jsonl(path: str | Path, *, tolerate_torn_tail: bool = True, required: tuple[str, ...] = ()) -> list[dict]:
    """The JSON objects of a JSON-lines file, one per non-blank line.

    A crash, a kill or a full disk in the middle of a write leaves a torn last line (cut short, or zero bytes after
    a power loss). With ``tolerate_torn_tail`` that line is dropped with one warning; any other line that is not a
    JSON object holding the ``required`` keys raises RunFileError naming the file and its line number.
    """
    path = Path(path)
    lines = [
        (number, line)
        for number, line in enumerate(path.read_bytes().decode("utf-8", errors="replace").split("\n"), start=1)
        if line.strip()
    ]
    rows = []
    for index, (number, line) in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and all(key in row for key in required):
            rows.append(row)
        elif tolerate_torn_tail and index == len(lines) - 1:
            logger.warning("%s: dropped its last line (%d), cut short by a crash or a full disk", path, number)
        else:
            what = "is not a JSON object" if not isinstance(row, dict) else f"has no {' or '.join(required)}"
            shown = line if len(line) <= 60 else line[:57] + "..."
            raise RunFileError(f"{path} line {number} {what}: {shown!r} (a damaged or foreign line)")
    return rows


class MetricsWriter:
    """Appends one JSON line per step; on resume, drops lines past the checkpoint's step (and a torn last line)
    first, so appended lines follow the last good one."""

    def __init__(self, path: Path, *, keep_through_step: int | None = None):
        self.path = path
        if keep_through_step is not None and path.exists():
            kept = [row for row in read_metrics(path) if row["step"] <= keep_through_step]
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
            tmp.replace(path)

    def write(self, record: dict) -> None:
        unknown = set(record) - set(METRICS)
        assert not unknown, f"metrics missing from the METRICS table: {sorted(unknown)}"
        with self.path.open("a") as fh:
            fh.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
            fh.flush()


def read_metrics(path: Path) -> list[dict]:
    """All lines of a ``metrics.jsonl`` (a torn last line dropped with a warning; see ``read_jsonl``)."""
    return read_jsonl(path, required=("step",))
