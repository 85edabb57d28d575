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

__all__ = ["atomic_write_bytes", "serialize_tensors", "save_tensors", "read_tensors"]


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


_ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
              torch.bool: "BOOL"}


def serialize_tensors(tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> bytes:
    """The safetensors format, byte for byte deterministic: tensors in name order, the JSON header
    with sorted keys, padded to 8 bytes (``safetensors.torch.save`` orders the metadata by hash,
    so two identical checkpoints could differ in their bytes)."""
    header: Dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _ST_DTYPES:
            raise CheckpointError(f"tensor {name!r} has dtype {t.dtype}, which safetensors files here cannot store")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    head += b" " * (-len(head) % 8)
    return len(head).to_bytes(8, "little") + head + b"".join(blobs)


def save_tensors(path, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> None:
    """Write ``tensors`` as a safetensors file with header ``metadata``, atomically and deterministically."""
    atomic_write_bytes(path, serialize_tensors(tensors, metadata))


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
