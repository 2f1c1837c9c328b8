"""``neggrad inspect``: an HTML page of one step's groups with NTHR's token scores and choices.

Reads ``RUN_DIR/samples/step-N.jsonl`` (written with NTHR on: whole mixed groups, each completion's
tokens, scores s_t, the selected flags and the group's tau and eta) and writes a self-contained page:
correct answers first, then wrong ones; tokens NTHR protected (penalty scaled by eta) are highlighted,
and every token shows its score on hover. Scores are shaded by size relative to the group's tau.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from neggrad.trainer.metrics import RunFileError, read_jsonl


class InspectError(ValueError):
    """The run has nothing to show for the asked step (the message says what exists)."""


def steps_with_tokens(run_dir: Path) -> list[int]:
    """Steps whose samples carry NTHR token scores, ascending."""
    found = []
    for path in (run_dir / "samples").glob("step-*.jsonl"):
        try:
            step = int(path.stem.removeprefix("step-"))
        except ValueError:
            continue
        first = path.read_text().split("\n", 1)[0]
        try:
            scored = "scores" in json.loads(first)
        except (ValueError, TypeError):  # torn (a crash mid-write) or foreign: load_step says which
            scored = False
        if scored:
            found.append(step)
    return sorted(found)


def load_step(run_dir: Path, step: int | None) -> tuple[int, list[dict]]:
    """(step, sample lines) of ``step`` or, when None, of the latest step with token scores."""
    if not (run_dir / "samples").is_dir():
        raise InspectError(f"{run_dir} has no samples/ folder: is it a neggrad run directory?")
    available = steps_with_tokens(run_dir)
    if not available:
        raise InspectError(
            f"{run_dir} has no samples with NTHR token scores: train with method nthr (or nthr.enabled=true) "
            "and num_samples_logged > 0"
        )
    if step is None:
        step = available[-1]
    if step not in available:
        near = min(available, key=lambda s: abs(s - step))
        raise InspectError(
            f"step {step} has no NTHR token samples in {run_dir}; nearest is {near} "
            f"({len(available)} steps have them, {available[0]}..{available[-1]})"
        )
    try:
        lines = read_jsonl(run_dir / "samples" / f"step-{step}.jsonl")
    except RunFileError as err:
        raise InspectError(str(err)) from None
    return step, lines


def _token_html(token: str, score: float, selected: bool, tau: float) -> str:
    scale = abs(tau) if math.isfinite(tau) and tau != 0 else max(abs(score), 1e-9)
    strength = min(1.0, abs(score) / scale)
    if selected:
        style = "background:#f4a340;border-bottom:2px solid #b35c00"
    elif score > 0:
        style = f"background:rgba(70,130,220,{0.45 * strength:.3f})"
    else:
        style = f"background:rgba(150,150,150,{0.25 * strength:.3f})"
    shown = html.escape(token).replace(" ", "&nbsp;") or "&#8203;"
    title = f"s = {score:.4g}" + (" (selected: penalty scaled by eta)" if selected else "")
    return f'<span class="tok" style="{style}" title="{html.escape(title)}">{shown}</span>'


def render(run_name: str, step: int, lines: list[dict]) -> str:
    """The page for one step's sample lines."""
    groups: dict[int, list[dict]] = {}
    for line in lines:
        groups.setdefault(line["group"], []).append(line)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>neggrad inspect: {html.escape(run_name)} step {step}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}"
        ".tok{font-family:ui-monospace,monospace;font-size:15px;padding:1px 0;border-radius:2px}"
        ".row{margin:.35em 0;line-height:1.7;overflow-wrap:anywhere}.ok{color:#1a7f37}.bad{color:#c62828}"
        ".tag{display:inline-block;width:5.5em;font-size:13px}.meta{color:#555;font-size:13px}"
        "h2{font-size:17px;margin-top:1.6em}</style></head><body>",
        f"<h1>NTHR token inspection: {html.escape(run_name)}, step {step}</h1>",
        "<p>Each group is one prompt's completions. <span class='tok' style='background:#f4a340'>Orange</span> "
        "tokens of wrong answers are the ones NTHR protected: their penalty was scaled by eta because pushing "
        "them down would also push down the correct answers (score s &gt; tau). Blue shading: positive score "
        "(resembles the correct answers), darker = closer to tau. Hover a token for its score.</p>",
    ]
    for _, rows in sorted(groups.items()):
        rows = sorted(rows, key=lambda r: not r["correct"])
        first = rows[0]
        n_ok = sum(r["correct"] for r in rows)
        tau, eta = first.get("tau", float("nan")), first.get("eta", float("nan"))
        picked = sum(sum(r.get("selected", [])) for r in rows)
        wrong_tokens = sum(len(r.get("tokens", [])) for r in rows if not r["correct"])
        parts.append(
            f"<h2>{html.escape(first['prompt'])} &nbsp;"
            f"<span class='meta'>answer {html.escape(first['answer'])}</span></h2>"
        )
        parts.append(
            f"<div class='meta'>{n_ok}/{len(rows)} correct; tau = {tau:.4g}, eta = {eta:.3g}; "
            f"{picked} of {wrong_tokens} wrong-answer tokens protected</div>"
        )
        for r in rows:
            tag = "<span class='tag ok'>correct</span>" if r["correct"] else "<span class='tag bad'>wrong</span>"
            toks = "".join(
                _token_html(t, s, sel, tau)
                for t, s, sel in zip(r.get("tokens", []), r.get("scores", []), r.get("selected", []), strict=False)
            )
            parts.append(f"<div class='row'>{tag}{toks} <span class='meta'>A = {r['advantage']:+.3f}</span></div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def inspect_run(run_dir: str | Path, step: int | None = None, out: str | Path | None = None) -> Path:
    """Write the page for ``step`` (default: the latest with token scores); return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InspectError(f"{run_dir} is not a directory")
    step, lines = load_step(run_dir, step)
    path = Path(out) if out else run_dir / "inspect" / f"step-{step}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(run_dir.name if run_dir.name else str(run_dir), step, lines))
    return path
