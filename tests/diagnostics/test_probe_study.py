"""neggrad lld-probe: one update per group and variant, the summary and the written report."""

import json

import pytest
import torch

from neggrad.analysis.probe_study import parse_variants, run_probe, summarize_probe, write_probe_report
from neggrad.cli import main
from neggrad.config import build_config
from neggrad.models.testbed.model import build_model
from neggrad.models.testbed.tokenizer import build_tokenizer
from tests.test_nthr_update import COMPLETIONS, PROMPT, SMALL


def test_probe_on_crafted_groups_writes_a_report(tmp_path):
    tok = build_tokenizer()
    cfg = build_config({}, SMALL)
    model = build_model(cfg.model.testbed, tok, seed=0)
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    group = {
        "prompt_ids": [enc(PROMPT)] * 4,
        "completion_ids": [enc(c) + [tok.eos_token_id] for c in COMPLETIONS],
        "correct": [True, False, False, False],
    }
    results = run_probe(cfg, model, [group, group], ["grpo", "nthr"], tok.pad_token_id)
    assert [len(v) for v in results.values()] == [2, 2]
    # the same group from the same start gives the same Delta twice; NTHR keeps more likelihood (see test_nthr_update)
    assert results["grpo"][0]["delta_seq"] == pytest.approx(results["grpo"][1]["delta_seq"])
    assert results["nthr"][0]["delta_seq"] > results["grpo"][0]["delta_seq"]
    assert results["grpo"][0]["selected_frac"] is None and results["nthr"][0]["selected_frac"] > 0
    rows = write_probe_report(results, tmp_path, title="crafted")
    assert [r["variant"] for r in rows] == ["grpo", "nthr"]
    assert (tmp_path / "lld_probe.png").is_file() and "| grpo | 2 |" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["summary"] == rows


def test_summary_by_success_rate():
    results = {
        "grpo": [{"delta_seq": -1.0, "delta_tok": -0.1, "p": 0.25}, {"delta_seq": 2.0, "delta_tok": 0.2, "p": 0.75}]
    }
    (row,) = summarize_probe(results)
    assert row["delta_seq_mean"] == 0.5 and row["displaced_frac"] == 0.5
    assert row["displaced_frac_p_le_half"] == 1.0 and row["displaced_frac_p_gt_half"] == 0.0


def test_bad_variants_are_user_errors(capsys):
    assert parse_variants("grpo, nthr") == ["grpo", "nthr"]
    with pytest.raises(ValueError, match="choose from"):
        parse_variants("grpo,nthrr")
    assert main(["lld-probe", "--config", "x.yaml", "--variants", "bogus"]) == 2
    assert "choose from" in capsys.readouterr().err
    torch.manual_seed(0)
