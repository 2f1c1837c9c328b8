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


# ---------------------------------------------------------------- saves that fail (disk full, I/O errors)
class CheckpointWriteError(RuntimeError):
    """A checkpoint that could not be written (disk full, I/O error); its partial folder was removed."""


def remove_stale_tmp(root: Path) -> list[Path]:
    """Remove the temporary folders (``.tmp-step-N``) of saves that never finished; return what was removed."""
    if not root.is_dir():
        return []
    stale = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(".tmp-"))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def folder_size(path: Path) -> int:
    """Bytes of the files below ``path`` (0 when it does not exist)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _size(n: int) -> str:
    """``n`` bytes for a person: 980 B, 157 KB, 1.2 MB, 14.9 GB (powers of 1024)."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n < 10 * scale else f"{n / scale:.0f} {unit}"
    return f"{n} B"


def warn_if_low_on_space(root: Path) -> None:
    """Warn when the free space under ``root`` is below the newest checkpoint's size, the next one's likely size."""
    found = list_checkpoints(root)
    if not found:
        return
    needed, free = folder_size(found[-1]), shutil.disk_usage(root).free
    if free < needed:
        logger.warning(
            "only %s free in %s and the last checkpoint (%s) took %s: the next save will likely fail",
            _size(free),
            root,
            found[-1].name,
            _size(needed),
        )


def _is_write_error(err: BaseException) -> bool:
    """An error of the file system rather than of the data: OSError, or the writers' own wrappers of one."""
    if isinstance(err, OSError):
        return True
    text = str(err)
    if type(err).__name__ == "SafetensorError":  # safetensors wraps the OS error: "I/O error: ... (os error 28)"
        return "I/O error" in text or "os error" in text
    # torch.save's zip writer: "[enforce fail at inline_container.cc] ... unexpected pos" / "file write failed"
    return isinstance(err, RuntimeError) and ("inline_container" in text or "file write failed" in text)


def _disk_full(err: BaseException) -> bool:
    import errno  # noqa: PLC0415 (local: keeps this section's changes out of the module's import block)

    full = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    return getattr(err, "errno", None) in full or "os error 28" in str(err) or "No space left" in str(err)


def save_checkpoint_or_explain(root: Path, step: int, **kwargs) -> Path:
    """``save_checkpoint``, warned first when free space looks short; a save that fails on a write removes its
    partial folder and raises CheckpointWriteError saying what failed, what it needed, which checkpoint is intact
    and how to continue (``root`` is ``RUN/checkpoints``). Any other error still removes the partial folder."""
    root.mkdir(parents=True, exist_ok=True)
    warn_if_low_on_space(root)
    needed = folder_size(list_checkpoints(root)[-1]) if list_checkpoints(root) else None
    try:
        return save_checkpoint(root, step, **kwargs)
    except BaseException as err:
        tmp = root / f".tmp-step-{step}"
        written = folder_size(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if not _is_write_error(err):
            raise
        reason = "the disk is full" if _disk_full(err) else f"write error: {err}"
        free = shutil.disk_usage(root).free
        size = f"it needs about {_size(needed)}" if needed else f"it had written {_size(written)}"
        intact = list_checkpoints(root)
        run_dir = root.parent
        if intact:
            then = f"{intact[-1].name} is intact; free space, then continue with: neggrad train --resume {run_dir}"
        else:
            then = "no earlier checkpoint exists; free space, then start the run again in a new --run-dir"
        raise CheckpointWriteError(
            f"could not save checkpoint step-{step} in {root} ({reason}; {size}, {_size(free)} free); "
            f"the partial folder was removed; {then}"
        ) from err


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
