"""Wall time of a comparison run one run at a time (``--jobs 1``) against several at once (``--jobs N``).

    python benchmarks/compare_jobs.py                      # 2 methods x 2 seeds x 10 testbed steps, jobs 1 vs 2
    python benchmarks/compare_jobs.py --methods grpo,dapo,ngrpo --seeds 2 --steps 20 --jobs 2 --json out.json

Both arms run the same ``neggrad compare`` (same methods, seeds, config and steps) into fresh folders, so every run
trains from its step 0. The SFT warm start is built once before the clock starts and is shared through
``NEGGRAD_CACHE`` (a cached warm start is what a study pays after its first run). ``--jobs 1`` trains each run in
the comparing process with every core; ``--jobs N`` starts N subprocesses with an equal share of the cores each
(``OMP_NUM_THREADS``). It prints each arm's wall seconds and their ratio, and whether the runs' final accuracies
agree between the arms (the same runs; a different thread count can change float rounding, so a small difference
is possible and is printed). Measure on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def neggrad(*args: str, env: dict) -> None:
    code = "import sys; from neggrad.cli import main; sys.argv[0] = 'neggrad'; sys.exit(main())"
    subprocess.run([sys.executable, "-c", code, *args], check=True, env=env, stdout=subprocess.DEVNULL)


def final_accuracies(out: Path) -> dict[str, float]:
    """run folder -> its final greedy accuracy, from each run's summary.json."""
    found = {}
    for summary in sorted(out.glob("*/seed-*/summary.json")):
        found[str(summary.parent.relative_to(out))] = json.loads(summary.read_text()).get("accuracy_after")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="grpo,dapo")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--config", default="testbed/demo")
    parser.add_argument("--jobs", type=int, default=2, help="the parallel arm's --jobs (default 2)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="neggrad-compare-jobs-") as tmp:
        env = {**os.environ, "NEGGRAD_CACHE": str(Path(tmp) / "cache"), "PYTHONPATH": str(ROOT / "src")}
        common = [f"max_steps={args.steps}", "eval_steps=0", "save_steps=0", "sft.seed=0"]
        print(f"warm start ({args.config}) ...", flush=True)
        neggrad("train", "--config", args.config, "--run-dir", str(Path(tmp) / "warm"), "max_steps=0", env=env)
        walls, accuracies = {}, {}
        for jobs in (1, args.jobs):
            out = Path(tmp) / f"jobs-{jobs}"
            start = time.perf_counter()
            neggrad(
                "compare",
                "--methods", args.methods,
                "--seeds", str(args.seeds),
                "--config", args.config,
                "--out", str(out),
                "--jobs", str(jobs),
                *common,
                env=env,
            )  # fmt: skip
            walls[jobs] = time.perf_counter() - start
            accuracies[jobs] = final_accuracies(out)
            print(f"--jobs {jobs}: {walls[jobs]:.1f} s", flush=True)
    runs = len(args.methods.split(",")) * args.seeds
    same = accuracies[1] == accuracies[args.jobs]
    result = {
        "runs": runs,
        "steps": args.steps,
        "config": args.config,
        "cores": os.cpu_count(),
        "wall_s": {f"jobs_{k}": round(v, 1) for k, v in walls.items()},
        "speedup": round(walls[1] / walls[args.jobs], 2),
        "same_accuracies": same,
    }
    print(
        f"{runs} runs x {args.steps} steps on {os.cpu_count()} cores: --jobs 1 {walls[1]:.1f} s, --jobs {args.jobs} "
        f"{walls[args.jobs]:.1f} s, speedup {result['speedup']}x; final accuracies "
        + ("identical" if same else f"DIFFER: {accuracies}")
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
