"""Atomic checkpoints and exact resume.

A checkpoint is a folder ``checkpoints/step-N/`` holding the policy (``model/``, loadable with
``from_pretrained``), the optimizer and scheduler state, every RNG state and the data cursor
(``trainer_state.json`` with its tensors in ``trainer_state.safetensors``), and ``manifest.json`` with the
SHA-256 of every file. It is written into a hidden temporary folder and renamed into place, so a crash
mid-save leaves no partial ``step-N``. Loading checks every hash: a damaged checkpoint is named and refused,
never loaded.

Under FSDP each process also writes its shard of the model and optimizer state, ``sharded/rank-R-of-N.json`` and
``.safetensors``, into the temporary folder before rank 0 finishes it (distributed.py).

Nothing in a checkpoint can run code when it is read: it holds only safetensors and JSON, never a pickle.
The hashes protect against damage, not against a hostile file (anyone can rewrite the manifest), so loading
also refuses any file that could run code: a pickle (``.pt``, ``.bin``, ...; the ``trainer_state.pt`` that
earlier neggrad versions wrote included) or Python source (model code ``model.trust_remote_code`` would import), unless
the caller passes ``trust=True`` (``--trust-checkpoint``: the user made the run).
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
STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
OLD_STATE = "trainer_state.pt"
"""The pickled trainer state earlier neggrad versions wrote: read only with ``trust=True``."""
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".joblib")
_CODE_SUFFIXES = (".py",)
_NUMPY_KINDS = "biuf"  # the array dtypes the trainer state may hold (never "O": objects come from pickle)


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
    sharded: bool = False,
) -> Path:
    """Write ``root/step-{step}`` atomically and keep only the ``keep`` newest checkpoints.

    ``state_dict``: the full weights when ``model`` holds only a shard of them (FSDP, ZeRO-3).
    ``sharded``: every process has already written its shard of the model and optimizer state into the
    temporary folder (``shard_folder``); ``optimizer`` is then None and the trainer state holds none.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    if tmp.exists() and not sharded:
        shutil.rmtree(tmp)
    tmp.mkdir(exist_ok=sharded)
    model.save_pretrained(tmp / "model", safe_serialization=True, **({"state_dict": state_dict} if state_dict else {}))
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp / "model")
    state = {"scheduler": scheduler.state_dict(), "rng": rng_state()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    write_trainer_state({**state, **trainer_state}, tmp)
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


SHARDS = "sharded"
"""The folder of a checkpoint holding each process's shard of the model and optimizer state (FSDP)."""


def shard_folder(root: Path, step: int, *, fresh: bool) -> Path:
    """Where the processes write their shards of the checkpoint of ``step`` before ``save_checkpoint`` finishes
    it (inside its temporary folder, so a crash still leaves no partial ``step-N``); ``fresh``: (rank 0, before
    the others write) remove what an earlier attempt left and create it."""
    folder = root / f".tmp-step-{step}" / SHARDS
    if fresh:
        if folder.parent.exists():
            shutil.rmtree(folder.parent)
        folder.mkdir(parents=True)
    return folder


def shard_name(rank: int, world_size: int) -> str:
    return f"rank-{rank}-of-{world_size}"


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


def verify_checkpoint(path: Path, *, trust: bool = False) -> None:
    """Raise CheckpointError naming ``path`` if its manifest is missing or any file is absent or altered.

    Also refused unless ``trust``: any file that could run code when loaded (a pickle, Python source). The old
    pickled ``trainer_state.pt`` is left to :func:`load_trainer_state`, which explains what to do with it.
    """
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
    if trust:
        return
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel == OLD_STATE:
            continue
        if f.suffix.lower() in _PICKLE_SUFFIXES:
            raise CheckpointError(
                f"checkpoint {path} holds {rel}, a pickle that could run code when loaded (neggrad writes only "
                "safetensors and JSON): refused; if you made this run yourself, pass --trust-checkpoint"
            )
        if f.suffix.lower() in _CODE_SUFFIXES:
            raise CheckpointError(
                f"checkpoint {path} holds {rel}, Python code that model.trust_remote_code would run: refused; if "
                "you made this run yourself, pass --trust-checkpoint"
            )


def load_trainer_state(path: Path, *, trust: bool = False) -> dict:
    """Verify ``path`` and return its trainer state (optimizer, scheduler, RNG, cursor, step...).

    A checkpoint of an earlier neggrad (a pickled ``trainer_state.pt``) is refused with what to do, or read
    with ``trust`` (``--trust-checkpoint``: the user made the run and knows the file is theirs).
    """
    verify_checkpoint(path, trust=trust)
    if (path / STATE_JSON).is_file():
        return read_trainer_state(path)
    old = path / OLD_STATE
    if old.is_file():
        if not trust:
            raise CheckpointError(
                f"{old} is a pickle from an earlier neggrad, and loading a pickle can run any code: if you made "
                "this run yourself, resume with --trust-checkpoint (its next checkpoint is saved without pickle); "
                "otherwise start a new run"
            )
        logger.warning("reading %s with pickle (--trust-checkpoint)", old)
        return torch.load(old, weights_only=False)
    raise CheckpointError(f"checkpoint {path} is partial: it has no {STATE_JSON}")


# ---------------------------------------------------------------------------------------------- trainer state
# The nested state (dicts with int keys, tuples, tensors, NumPy arrays, floats, None) as JSON plus one safetensors
# file: each tensor or array becomes {"__tensor__": name} or {"__ndarray__": name, "dtype": ..., "shape": ...}, a
# tuple {"__tuple__": [...]}, and a dict whose keys are not all plain strings {"__items__": [[key, value], ...]}.
# Reading builds only those containers and plain values: there is nothing in either file that names code.

_MARKERS = ("__tensor__", "__ndarray__", "__tuple__", "__items__")


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().contiguous()
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _NUMPY_KINDS:
            raise TypeError(f"the trainer state holds a NumPy array of {obj.dtype}, which a checkpoint cannot store")
        name = f"t{len(tensors)}"
        raw = np.ascontiguousarray(obj).view(np.uint8).reshape(-1)
        tensors[name] = torch.from_numpy(raw.copy())
        return {"__ndarray__": name, "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), tensors)
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(x, tensors) for x in obj]}
    if isinstance(obj, list):
        return [_encode(x, tensors) for x in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and k not in _MARKERS for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    raise TypeError(f"the trainer state holds a {type(obj).__name__}, which a checkpoint cannot store")


def _hashable(key: Any) -> Any:
    return tuple(_hashable(x) for x in key) if isinstance(key, list) else key


def _decode(obj: Any, tensors: dict[str, torch.Tensor], where: Path) -> Any:
    if isinstance(obj, list):
        return [_decode(x, tensors, where) for x in obj]
    if not isinstance(obj, dict):
        return obj
    try:
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            dtype = np.dtype(obj["dtype"])
            if dtype.kind not in _NUMPY_KINDS:
                raise ValueError(dtype)
            raw = tensors[obj["__ndarray__"]].numpy().tobytes()
            return np.frombuffer(raw, dtype=dtype).reshape(obj["shape"]).copy()
        if "__tuple__" in obj:
            return tuple(_decode(x, tensors, where) for x in obj["__tuple__"])
        if "__items__" in obj:
            return {_hashable(_decode(k, tensors, where)): _decode(v, tensors, where) for k, v in obj["__items__"]}
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{where} is damaged: an entry does not match the trainer state format") from None
    return {k: _decode(v, tensors, where) for k, v in obj.items()}


def write_trainer_state(state: dict, folder: Path, stem: str = "trainer_state") -> None:
    """Write ``state`` as ``{stem}.json`` and ``{stem}.safetensors`` in ``folder`` (no pickle)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(state, tensors)
    save_file(tensors, str(folder / f"{stem}.safetensors"))
    (folder / f"{stem}.json").write_text(json.dumps(encoded))


def read_trainer_state(folder: Path, stem: str = "trainer_state") -> dict:
    """The state :func:`write_trainer_state` wrote in ``folder``, bit for bit (tensors on the CPU)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / f"{stem}.json"
    try:
        encoded = json.loads(path.read_text())
        tensors = load_file(str(folder / f"{stem}.safetensors"))
    except (OSError, ValueError, SafetensorError) as err:
        raise CheckpointError(f"{path} or {stem}.safetensors is unreadable: {err}") from None
    return _decode(encoded, tensors, path)
