"""Atomic file writes that never follow a planted link.

The bytes go to a fresh temporary file created with exclusive creation (``O_CREAT|O_EXCL``,
via :func:`tempfile.mkstemp`) in the target's own folder, are flushed to disk, and the
file is then renamed over the target (:func:`os.replace`, atomic on one filesystem). A
symlink waiting at a predictable temporary name cannot redirect the write, and a reader
never sees a half-written file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_bytes_atomic"]


def write_bytes_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically through an exclusively created temporary file."""
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
