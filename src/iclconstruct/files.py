"""Files the library writes: safetensors tensors and atomic writes (never pickle).

Shared by saved circuits (:mod:`iclconstruct.io`) and trained-learner checkpoints
(:mod:`iclconstruct.icl.checkpoint`). A write goes to ``name.tmp`` first and is renamed
over ``name`` (atomic on POSIX), so a crash never leaves a half-written file under the
real name, and a link planted in the folder cannot redirect it.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Dict, Tuple

import torch

from .errors import CheckpointError

__all__ = ["atomic_write_bytes", "save_tensors", "read_tensors"]


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError as exc:  # pragma: no cover - dependency declared in extras
        raise CheckpointError("reading and writing weights needs the 'safetensors' package: "
                              "pip install 'iclconstruct[icl]'") from exc
    return st


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fresh temporary file and a rename.

    The temporary file is created with exclusive creation (``O_CREAT|O_EXCL``, via
    :func:`tempfile.mkstemp`) in the target's own folder under an unpredictable name, so a
    symlink planted at a predictable name cannot redirect the write; it is flushed to
    disk before :func:`os.replace` (atomic on one filesystem) puts it in place.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_tensors(path, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> None:
    """Write ``tensors`` (contiguous CPU copies) as a safetensors file with header ``metadata``, atomically."""
    st = _safetensors()
    data = st.save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, data)


def read_tensors(path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """``(tensors, header metadata)`` of the safetensors file ``path``.

    Raises :class:`~iclconstruct.errors.CheckpointError` if the file is truncated or not safetensors.
    """
    st = _safetensors()
    path = Path(path)
    try:
        raw = path.read_bytes()
        tensors = st.load(raw)
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n])
    except Exception as exc:  # safetensors raises its own error types on truncation/garbage
        raise CheckpointError(f"{path} is not a readable safetensors file (corrupted or truncated?): {exc}") from None
    return tensors, dict(header.get("__metadata__", {}) or {})
