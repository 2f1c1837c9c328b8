"""``neggrad.trainer.loop.train`` under a launcher, optionally interrupted: tests/test_distributed.py runs it.

    accelerate launch ... -m tests.dist_train RUN_DIR [--resume] [--stop-at N] KEY=VALUE ...

``--stop-at N`` sends every process SIGINT after step N, the real Ctrl-C path (the loop finishes the step,
saves a checkpoint and stops, every process after the same step).
"""

import argparse
import os
import signal

from neggrad.config import build_config
from neggrad.trainer.loop import train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--stop-at", type=int, default=0)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()

    def interrupt(event: str, data: dict) -> None:
        if args.stop_at and event == "step" and data["step"] == args.stop_at:
            os.kill(os.getpid(), signal.SIGINT)

    train(build_config({"method": "grpo"}, args.overrides), args.run_dir, resume=args.resume, callback=interrupt)


if __name__ == "__main__":
    main()
