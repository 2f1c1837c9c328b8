"""Every metric neggrad logs, in one table, and the JSONL writer of ``metrics.jsonl``.

One line per training step. Names follow ALGORITHMS.md section 8.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

METRICS: dict[str, str] = {
    "step": "training step (generation batch) this line reports, 1-based",
    "reward/mean": "mean reward of the kept completions (after shaping)",
    "reward/std": "std of the kept completions' rewards",
    "accuracy": "fraction of sampled completions the verifier marks correct (all rounds, before filtering)",
    "groups/all_correct_frac": "fraction of sampled groups where every completion is correct (before filtering)",
    "groups/all_wrong_frac": "fraction of sampled groups where every completion is wrong (before filtering)",
    "groups/mixed_frac": "fraction of sampled groups mixing right and wrong completions",
    "groups/zero_std": "sampled groups whose correctness does not vary (all right or all wrong)",
    "groups/dropped": "groups removed by group_filter",
    "groups/gen_rounds": "generation rounds this step (>1 when dropped groups are refilled)",
    "groups/batch_short": "1 if fewer than P groups were kept after the last round",
    "batch/completions": "completions trained on this step",
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
    "time/generate": "seconds generating completions (all rounds)",
    "time/score": "seconds scoring and computing advantages",
    "time/old_logp": "seconds in the no-grad old-policy and reference passes",
    "time/update": "seconds in forward/backward and optimizer steps",
    "time/eval": "seconds evaluating (steps with an evaluation only)",
    "time/step": "seconds for the whole step",
}


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsWriter:
    """Appends one JSON line per step; on resume, drops lines past the checkpoint's step first."""

    def __init__(self, path: Path, *, keep_through_step: int | None = None):
        self.path = path
        if keep_through_step is not None and path.exists():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line and json.loads(line)["step"] <= keep_through_step
            ]
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            tmp.replace(path)

    def write(self, record: dict) -> None:
        unknown = set(record) - set(METRICS)
        assert not unknown, f"metrics missing from the METRICS table: {sorted(unknown)}"
        with self.path.open("a") as fh:
            fh.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
            fh.flush()


def read_metrics(path: Path) -> list[dict]:
    """All lines of a ``metrics.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
