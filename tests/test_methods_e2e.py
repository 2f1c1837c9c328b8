"""Every preset trains end to end on a tiny model (issue 4): a verifier of our own makes mixed groups.

A random tiny model gets everything wrong, which gives GRPO-style methods no gradient at all. The
``parity`` verifier below (plugged in by import path, as users plug theirs) calls a completion correct
when its length is even, so groups mix right and wrong answers and every method has something to learn.
"""

import json

import pytest
import torch
import yaml

from neggrad.config import build_config
from neggrad.config.presets import PRESETS
from neggrad.trainer.loop import Trainer
from neggrad.trainer.metrics import read_metrics
from tests.test_train import TINY


def parity(completions: list[str], answers: list[str]) -> list[bool]:
    return [len(c) % 2 == 0 for c in completions]


def run(tmp_path, method, *extra, steps=20):
    cfg = build_config(
        {},
        [
            *TINY,
            f"method={method}",
            "reward.kind=tests.test_methods_e2e:parity",
            f"max_steps={steps}",
            "eval_steps=0",
            "save_steps=0",
            "lld.probe_size=0",
            *extra,
        ],
    )
    trainer = Trainer(cfg, tmp_path)
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    summary = trainer.train()
    moved = [k for k, v in trainer.model.state_dict().items() if not torch.equal(before[k], v)]
    return summary, read_metrics(tmp_path / "metrics.jsonl"), moved


@pytest.mark.parametrize("method", list(PRESETS))
def test_every_preset_trains(tmp_path, method):
    summary, lines, moved = run(tmp_path, method)  # 20 steps (issue 4 acceptance)
    assert summary["status"] == "completed" and summary["steps"] == 20
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    for key, value in PRESETS[method].values.items():  # the run directory records the expanded settings
        if not isinstance(value, dict) and value != "L//5":
            assert saved[key] == value, key
    trained = [line for line in lines if line["batch/completions"]]
    assert trained, "no step had a batch to train on"
    assert all(torch.isfinite(torch.tensor(line["loss/total"])) for line in trained)
    assert moved, "no parameter changed"
    for line in trained:
        B = 16 if line["groups/dropped"] == 0 else line["batch/completions"]
        right = round(line["accuracy"] * 16)  # the parity verifier's verdicts over 16 sampled completions
        # LLD measures every correct completion trained on (lld/count of them), and nothing else
        if method == "psr":  # trains on correct completions only
            assert line["batch/completions"] == right == line["lld/count"]
        elif method == "nsr":  # on wrong completions only
            assert line["batch/completions"] == 16 - right and line["lld/count"] == 0
        elif method in ("dapo", "ngrpo", "reinforce_rej"):  # group filters: kept completions come in whole groups
            groups, _ = divmod(line["batch/completions"], 4)
            assert line["batch/completions"] % 4 == 0
            # every kept group has a wrong answer (no all-correct group passes); zero_std keeps mixed groups only
            assert (0 if method == "ngrpo" else groups) <= line["lld/count"] <= line["batch/completions"] - groups
        else:
            assert line["batch/completions"] == B and line["lld/count"] == right


def test_nthr_preset_scores_mixed_groups_and_logs_tokens(tmp_path):
    summary, lines, moved = run(tmp_path, "nthr", "num_samples_logged=4", steps=2)
    assert sum(line["nthr/groups"] for line in lines) > 0
    assert all(0.0 <= line["nthr/selected_frac"] <= 1.0 for line in lines)
    sample = json.loads((tmp_path / "samples" / "step-1.jsonl").read_text().splitlines()[0])
    assert len(sample["tokens"]) == len(sample["scores"]) == len(sample["selected"])
    assert lines[0]["lld/count"] > 0 and "lld/displaced_frac" in lines[0]
