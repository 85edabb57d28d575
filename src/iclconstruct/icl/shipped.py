"""Small learners shipped with the package (``src/iclconstruct/pretrained/*.safetensors``).

Each was trained by the repository's own ``iclconstruct train`` command, written next to it
in ``pretrained/README.md``. :func:`pretrained` loads one by name; :func:`list_pretrained`
lists them.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

from ..errors import CheckpointError
from .checkpoint import load

__all__ = ["pretrained", "list_pretrained", "pretrained_path", "PRETRAINED_DIR"]

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


def list_pretrained() -> List[str]:
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.safetensors"))


def pretrained_path(name: str) -> Path:
    """Path of the shipped learner ``name``: only the names :func:`list_pretrained` lists are
    accepted, so a name can never reach a file outside the shipped folder (``'../x'``)."""
    available = list_pretrained()
    if not isinstance(name, str) or name not in available:
        raise CheckpointError(f"no shipped learner named {name!r}; available: {available}")
    return PRETRAINED_DIR / f"{name}.safetensors"


def pretrained(name: str = "lite-d8", device="cpu"):
    """Load a shipped learner, e.g. ``pretrained("lite-d8")`` (d = 8, noiseless)."""
    return load(pretrained_path(name), device=device)
