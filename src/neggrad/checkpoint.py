"""Atomic checkpoints and exact resume.

A checkpoint is a folder ``checkpoints/step-N/`` holding the policy (``model/``, loadable with
``from_pretrained``), the optimizer and scheduler state, every RNG state and the data cursor
(``trainer_state.pt``), and ``manifest.json`` with the SHA-256 of every file. It is written into a
hidden temporary folder and renamed into place, so a crash mid-save leaves no partial ``step-N``.
Loading checks every hash: a damaged checkpoint is named and refused, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted: missing, partial or damaged."""


def rng_state() -> dict[str, Any]:
    """Every random state a step consumes: Python, NumPy, torch CPU and CUDA."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    root: Path,
    step: int,
    *,
    model,
    tokenizer,
    optimizer,
    scheduler,
    trainer_state: dict,
    keep: int,
    state_dict: dict | None = None,
) -> Path:
    """Write ``root/step-{step}`` atomically and keep only the ``keep`` newest checkpoints.

    ``state_dict``: the full weights when ``model`` holds only a shard of them (FSDP, ZeRO-3).
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.save_pretrained(tmp / "model", safe_serialization=True, **({"state_dict": state_dict} if state_dict else {}))
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp / "model")
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            **trainer_state,
        },
        tmp / "trainer_state.pt",
    )
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {"step": step, "files": {str(p.relative_to(tmp)): _sha256(p) for p in files}}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    for p in [*files, tmp / MANIFEST]:
        with p.open("rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():  # re-saving a step (resume after a crash between save and the next step)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Completed checkpoint folders, oldest first (temporary folders of interrupted saves excluded)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def verify_checkpoint(path: Path) -> None:
    """Raise CheckpointError naming ``path`` if its manifest is missing or any file is absent or altered."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"checkpoint {path} is partial: it has no {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise CheckpointError(f"checkpoint {path} is damaged: {MANIFEST} is unreadable") from None
    for rel, digest in files.items():
        f = path / rel
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path} is partial: {rel} is missing")
        if _sha256(f) != digest:
            raise CheckpointError(f"checkpoint {path} is damaged: {rel} does not match its recorded SHA-256")


def load_trainer_state(path: Path) -> dict:
    """Verify ``path`` and return its trainer state (optimizer, scheduler, RNG, cursor, step...)."""
    verify_checkpoint(path)
    return torch.load(path / "trainer_state.pt", weights_only=False)
