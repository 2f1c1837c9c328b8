"""Experiment trackers (``report_to``): TensorBoard, Weights & Biases and trackio see what ``metrics.jsonl`` holds.

``metrics.jsonl`` stays the record of truth; a tracker receives each of its lines as it is written, under the same
names, with the training step as its step axis (list-valued metrics such as ``feedback/f_hist`` stay in the JSONL
only), and the resolved config as the run's parameters. Only rank 0 opens trackers (loop.py). A tracker that fails
while logging is closed with one warning and the run goes on; the trackers are closed (flushed) when the run ends,
stops on Ctrl-C or fails.

Resume continues the same tracker run: TensorBoard writes into the same ``tensorboard/`` folder with ``purge_step``
(steps past the checkpoint, logged before a crash, are dropped by the readers), W&B resumes the run id saved in
``wandb/run_id``, trackio resumes the run of the same name.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from neggrad.config import Config, ConfigError, dump_config

logger = logging.getLogger(__name__)

INSTALL = {
    "tensorboard": "pip install 'neggrad[tensorboard]' (or pip install tensorboard)",
    "wandb": "pip install 'neggrad[wandb]' (or pip install wandb)",
    "trackio": "pip install 'neggrad[trackio]' (or pip install trackio)",
}
"""How to install each tracker's package: what the error for a missing one says."""


def require(names: list[str]) -> None:
    """Raise ConfigError, in one line naming the pip command, unless every tracker in ``names`` can be imported."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"report_to={name} needs the {name} package: {INSTALL[name]} ({err})") from None


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a metrics line, by name, without ``step`` (the step axis) and list-valued metrics."""
    return {
        key: float(value)
        for key, value in record.items()
        if key != "step" and isinstance(value, int | float)  # bool is an int: logged as 0 / 1
    }


def flat_config(config: Config) -> dict[str, Any]:
    """The resolved config as ``{dotted key: value}``; lists and null as text (what hparams tables take)."""

    def flat(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value if isinstance(value, bool | int | float | str) else str(value)
        return out

    return flat(config.model_dump(mode="json"))


class TensorBoardTracker:
    """Scalars in ``RUN/tensorboard/`` (one event file per session), the config as hparams and as YAML text."""

    def __init__(self, config: Config, run_dir: Path, resumed_step: int | None):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        purge = resumed_step + 1 if resumed_step is not None else None  # drops steps logged past the checkpoint
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge)
        for summary in hparams(flat_config(config), {}):
            self.writer._get_file_writer().add_summary(summary)
        self.writer.add_text("config", "```yaml\n" + dump_config(config) + "```", global_step=resumed_step or 0)
        self.writer.flush()

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()  # a step takes seconds: nothing is left in memory for a kill to lose

    def close(self, failed: bool) -> None:
        self.writer.close()


class WandbTracker:
    """A W&B run in ``RUN/wandb/``: offline (no network; ``wandb sync`` uploads it) unless WANDB_MODE is set."""

    def __init__(self, config: Config, run_dir: Path, resumed_step: int | None):
        import wandb

        id_file = run_dir / "wandb" / "run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "neggrad",
            name=run_dir.name,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            mode=os.environ.get("WANDB_MODE") or "offline",
            config=config.model_dump(mode="json"),
            settings=wandb.Settings(console="off"),  # the console stays neggrad's
        )
        id_file.parent.mkdir(exist_ok=True)
        id_file.write_text(run_id + "\n")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class TrackioTracker:
    """A trackio run (local, in TRACKIO_DIR) in project TRACKIO_PROJECT (default neggrad), named after the run
    directory."""

    def __init__(self, config: Config, run_dir: Path, resumed_step: int | None):
        import trackio

        self.trackio = trackio
        self.run = trackio.init(
            project=os.environ.get("TRACKIO_PROJECT") or "neggrad",
            name=run_dir.name,
            config=config.model_dump(mode="json"),
            resume="allow",
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self, failed: bool) -> None:
        self.run.finish()


OPENERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "trackio": TrackioTracker}


class Trackers:
    """The open trackers of a run (none on ranks other than 0, or with ``report_to: none``)."""

    def __init__(self, trackers: dict[str, Any] | None = None):
        self.trackers = dict(trackers or {})

    @classmethod
    def open(cls, config: Config, run_dir: Path, *, resumed_step: int | None = None) -> Trackers:
        """Open every tracker of ``config.report_to`` (``resumed_step``: the checkpoint's step on resume)."""
        require(config.report_to)
        opened = cls()
        try:
            for name in config.report_to:
                opened.trackers[name] = OPENERS[name](config, Path(run_dir), resumed_step)
        except BaseException:
            opened.close(failed=True)
            raise
        return opened

    def log(self, record: dict) -> None:
        """One line of ``metrics.jsonl``; a tracker that raises is closed with a warning (the JSONL has the line)."""
        values = scalars(record)
        for name, tracker in list(self.trackers.items()):
            try:
                tracker.log(record["step"], values)
            except Exception as err:
                logger.warning(
                    "report_to %s stopped at step %d: %s (metrics.jsonl goes on)", name, record["step"], err
                )
                self._close(name, failed=True)

    def close(self, failed: bool = False) -> None:
        """Flush and close every tracker (``failed``: the run ended with an error or an abort)."""
        for name in list(self.trackers):
            self._close(name, failed)

    def _close(self, name: str, failed: bool) -> None:
        tracker = self.trackers.pop(name)
        try:
            tracker.close(failed)
        except Exception as err:
            logger.warning("report_to %s: closing failed: %s", name, err)
