"""What the embedding writes into the system slots a program may read (``pos``, ``one``, ``is_y``).

One definition for both paths: the interpreter fills these slots with :func:`system_rows`
and the compiler turns the same values into the position embedding ``W_pos``, so a user op
that reads ``pos`` sees the same numbers in both. (The compiler adds its own internals —
the LayerNorm anchors and ``bal`` — which no user op can read.)
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

__all__ = ["DEFAULT_MAX_LEN", "position_units", "system_rows", "count_terms"]

#: most tokens a compiled model (and the interpreter, by default) accepts: 512 examples and a query
DEFAULT_MAX_LEN = 1025


def position_units(j: np.ndarray, max_len: int) -> Tuple[np.ndarray, np.ndarray]:
    """The two position units ``(j/P, (j/P)²)`` with ``P = max_len``, all in ``[0, 1]``."""
    u = np.asarray(j, dtype=np.float64) / float(max_len)
    return u, u * u


def system_rows(j: np.ndarray, max_len: int) -> Dict[str, np.ndarray]:
    """Values of ``pos`` ``(T, 2)``, ``one`` ``(T, 1)`` and ``is_y`` ``(T, 1)`` at columns ``j``."""
    j = np.asarray(j)
    u1, u2 = position_units(j, max_len)
    return {
        "pos": np.stack([u1, u2], axis=-1),
        "one": np.ones((len(j), 1)),
        "is_y": (j % 2).astype(np.float64)[:, None],
    }


def count_terms(max_len: int) -> Dict[str, np.ndarray]:
    """``{slot: W}`` with ``Σ W·h[slot] = ⌊(t + 1)/2⌋``, the number of examples at column ``t``.

    With ``pos₀ = t/P`` (``P = max_len``) and ``is_y = t mod 2``: ``(P·pos₀ + is_y)/2`` — exact up
    to the rounding of ``t/P`` (relative ``≈ ε``). Used by the ``count`` and ``sum`` ops.
    """
    return {"pos": np.array([[0.5 * float(max_len), 0.0]]), "is_y": np.array([[0.5]])}
