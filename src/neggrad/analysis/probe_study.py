"""``neggrad lld-probe``: the paper's Fig. 1 / Fig. 4 experiment on any config's starting policy.

For held-out prompts, sample one group of G completions from theta_0 and keep the mixed groups (up to
``--prompts``). For each variant of ``probe.VARIANTS`` and each group: reset to theta_0, one update on
that group alone (fresh AdamW), Delta(x) = mean change of its correct responses' sequence
log-likelihood (arXiv:2505.18830 Sec. 4; docs/algorithms.md §6.2). The report sorts Delta(x) per variant, as the
paper plots it, and gives the mean, the displaced fraction (Delta < 0) and the same by success rate.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from neggrad.config import Config
from neggrad.trainer.probe import VARIANTS, one_step, rollout_from_ids


def sample_groups(config: Config, engine, task, examples, num_groups: int) -> list[dict]:
    """Mixed groups (token ids and correctness) sampled once from the current policy, in prompt order."""
    G = config.num_generations
    groups: list[dict] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 104729)
        for start in range(0, len(examples), config.num_prompts):
            chunk = examples[start : start + config.num_prompts]
            rollout = engine.generate([e.prompt for e in chunk], num_generations=G)
            correct = task.score(rollout.texts, [e.answer for e in chunk for _ in range(G)])
            for j, example in enumerate(chunk):
                rows = range(j * G, (j + 1) * G)
                ok = [bool(correct[r]) for r in rows]
                if 0 < sum(ok) < G:
                    groups.append(
                        {
                            "prompt": example.prompt,
                            "answer": example.answer,
                            "prompt_ids": [
                                rollout.prompt_ids[r][rollout.prompt_mask[r].bool()].tolist() for r in rows
                            ],
                            "completion_ids": [
                                rollout.completion_ids[r][rollout.completion_mask[r].bool()].tolist() for r in rows
                            ],
                            "texts": [rollout.texts[r] for r in rows],
                            "correct": ok,
                        }
                    )
                if len(groups) == num_groups:
                    return groups
    return groups


def run_probe(
    config: Config,
    model,
    groups: list[dict],
    variants: list[str],
    pad_token_id: int,
    progress: Callable[[int, int], None] | None = None,
    *,
    groups_per_update: int = 1,
) -> dict[str, list[dict]]:
    """Delta(x) per variant and group: ``{variant: [{"delta_seq", "delta_tok", "p", "selected_frac"}, ...]}``.

    Each update holds ``groups_per_update`` groups (one micro-batch per group, one optimizer step), so with
    more than one the change of a group's correct answers includes what the other groups' answers did to
    them: the cross-group displacement that per-group NTHR cannot see and ``nthr_batch`` scores.
    """
    G = config.num_generations
    cfg = config.model_copy(
        update={"per_device_train_batch_size": G, "gradient_accumulation_steps": groups_per_update}
    )
    results: dict[str, list[dict]] = {v: [] for v in variants}
    sets = [groups[i : i + groups_per_update] for i in range(0, len(groups), groups_per_update)]
    total, done = len(variants) * len(groups), 0
    for chunk in sets:
        rollout = rollout_from_ids(
            [p for g in chunk for p in g["prompt_ids"]], [c for g in chunk for c in g["completion_ids"]], pad_token_id
        )
        correct = torch.tensor([ok for g in chunk for ok in g["correct"]])
        lengths = rollout.completion_mask.sum(dim=1).float()  # (K*G,)
        step_cfg = cfg.model_copy(update={"gradient_accumulation_steps": len(chunk)})
        for variant in variants:
            result = one_step(step_cfg, model, rollout, correct, variant)
            for k in range(len(chunk)):
                rows = slice(k * G, (k + 1) * G)
                ok = correct[rows]
                delta = result.row_delta[rows][ok]
                selected = result.token_selected[rows][~ok] if result.token_selected is not None else None
                wrong_tokens = rollout.completion_mask[rows][~ok].sum()
                results[variant].append(
                    {
                        "delta_seq": float(delta.mean()),
                        "delta_tok": float((delta / lengths[rows][ok]).mean()),
                        "p": float(ok.float().mean()),
                        "selected_frac": (float(selected.sum() / wrong_tokens) if selected is not None else None),
                    }
                )
                done += 1
                if progress:
                    progress(done, total)
    return results


def summarize_probe(results: dict[str, list[dict]]) -> list[dict]:
    """Per variant: mean Delta(x) (sequence and per token), displaced fraction, and both for p <= 1/2 and p > 1/2."""
    rows = []
    for variant, items in results.items():
        seq = [r["delta_seq"] for r in items]
        low = [r["delta_seq"] for r in items if r["p"] <= 0.5]
        high = [r["delta_seq"] for r in items if r["p"] > 0.5]
        rows.append(
            {
                "variant": variant,
                "groups": len(items),
                "delta_seq_mean": statistics.fmean(seq) if seq else None,
                "delta_tok_mean": statistics.fmean(r["delta_tok"] for r in items) if items else None,
                "displaced_frac": sum(d < 0 for d in seq) / len(seq) if seq else None,
                "displaced_frac_p_le_half": sum(d < 0 for d in low) / len(low) if low else None,
                "displaced_frac_p_gt_half": sum(d < 0 for d in high) / len(high) if high else None,
            }
        )
    return rows


def write_probe_report(
    results: dict[str, list[dict]], out: Path, *, title: str, groups_per_update: int = 1
) -> list[dict]:
    """results.json, lld_probe.png (Delta(x) sorted per variant) and report.md; returns the summary rows."""
    from neggrad.analysis.report import require_matplotlib  # noqa: PLC0415 (matplotlib only when plotting)

    out.mkdir(parents=True, exist_ok=True)
    rows = summarize_probe(results)
    (out / "results.json").write_text(json.dumps({"summary": rows, "per_group": results}, indent=1))
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (variant, items) in enumerate(results.items()):
        ax.plot(sorted(r["delta_seq"] for r in items), "-", color=f"C{i}", label=variant)
    ax.axhline(0.0, color="grey", linewidth=1)
    ax.set(
        title="one update per group: change of the correct answers' log-likelihood",
        xlabel="prompt (sorted)",
        ylabel="Δ(x), nats per sequence",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "lld_probe.png", dpi=110)
    plt.close(fig)

    def fmt(v, spec=".3f"):
        return "-" if v is None else format(v, spec)

    lines = [
        f"# LLD probe: {title}",
        "",
        (
            "One update of theta_0 on each mixed group alone"
            if groups_per_update == 1
            else f"One update of theta_0 on each set of {groups_per_update} mixed groups together (one optimizer "
            "step; a group's Δ(x) includes what the other groups' answers did to it)"
        )
        + " (fresh AdamW, the run's learning rate); Δ(x) is the mean change of a group's correct answers' sequence "
        "log-likelihood (arXiv:2505.18830, Fig. 1 and 4). Displaced: Δ(x) < 0. nthr: beta 1, eta 0; random: as many "
        "random tokens per wrong answer as nthr chose; nthr_batch: cross-group NTHR (nthr.scope batch).",
        "",
        "| variant | groups | mean Δ(x) | mean Δ per token | displaced | displaced, p ≤ 1/2 | displaced, p > 1/2 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['groups']} | {fmt(r['delta_seq_mean'], '+.3f')} | "
            f"{fmt(r['delta_tok_mean'], '+.4f')} | {fmt(r['displaced_frac'])} | "
            f"{fmt(r['displaced_frac_p_le_half'])} | {fmt(r['displaced_frac_p_gt_half'])} |"
        )
    lines += ["", "![lld_probe.png](lld_probe.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return rows


def parse_variants(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise ValueError(f"--variants {text!r}: choose from {', '.join(VARIANTS)}")
    return names
