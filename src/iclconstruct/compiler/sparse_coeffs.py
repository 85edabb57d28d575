"""Sparse coefficient matrices for the sparse-from-the-start build (same values as :meth:`Layout.coeffs`).

A :class:`Coo` is a list of entries ``(row, col, value)``; absent entries are 0. The dense
builders form every coefficient as ``0 + t₁ + t₂ + …`` over the terms in order (the matrices
of :meth:`~iclconstruct.lang.layout.Layout.coeffs`, sums of such matrices); :func:`coo_sum`
adds the same non-zero terms in the same order, so every non-zero value is bit-identical
(only the sign of an exact zero may differ, and zeros are dropped).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..lang.layout import Layout

__all__ = ["Coo", "Eye", "coo_sum", "slot_coeffs", "dense_rows"]


@dataclass
class Coo:
    """Entries ``(r, c, v)`` of a sparse matrix (int64, int64, float64 arrays)."""

    r: np.ndarray
    c: np.ndarray
    v: np.ndarray

    @staticmethod
    def empty() -> "Coo":
        return Coo(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))

    def __len__(self) -> int:
        return len(self.v)


@dataclass(frozen=True)
class Eye:
    """``value·I`` as a coefficient term (``np.eye(n)·value`` without the ``n × n`` array)."""

    value: float = 1.0


def dense_rows(M: np.ndarray, row0: int = 0) -> Coo:
    """The non-zero entries of a dense ``(k, D)`` array, rows offset by ``row0``."""
    M = np.asarray(M, dtype=np.float64)
    r, c = np.nonzero(M)
    return Coo(r.astype(np.int64) + row0, c.astype(np.int64), M[r, c])


def coo_sum(blocks: Sequence[Coo]) -> Coo:
    """Entry-wise ``b₁ + b₂ + …`` in block order, sorted by ``(r, c)``, exact zeros dropped.

    Each entry is summed sequentially from its first non-zero term, as the dense ``+=`` does
    (adding an exact zero changes no non-zero value).
    """
    blocks = [b for b in blocks if len(b)]
    if not blocks:
        return Coo.empty()
    if len(blocks) == 1:
        b = blocks[0]
        o = np.lexsort((b.c, b.r))
        r, c, v = b.r[o], b.c[o], b.v[o]  # one matrix: no repeated entry
        keep = v != 0
        return Coo(r[keep], c[keep], v[keep])
    r = np.concatenate([b.r for b in blocks])
    c = np.concatenate([b.c for b in blocks])
    v = np.concatenate([b.v for b in blocks])
    k = np.concatenate([np.full(len(b), i) for i, b in enumerate(blocks)])
    o = np.lexsort((k, c, r))
    r, c, v = r[o], c[o], v[o]
    start = np.ones(len(r), dtype=bool)
    start[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
    starts = np.flatnonzero(start)
    gid = np.cumsum(start) - 1
    pos = np.arange(len(r)) - starts[gid]
    out = v[starts].copy()
    for lvl in range(1, int(pos.max()) + 1):
        sel = pos == lvl
        out[gid[sel]] += v[sel]
    keep = out != 0
    return Coo(r[starts][keep], c[starts][keep], out[keep])


def slot_coeffs(lay: Layout, terms=(), bias=None, *, size: int) -> Coo:
    """Sparse :meth:`Layout.coeffs`: rows ``0..size-1``, columns the residual rows.

    ``terms``: ``{slot: W}`` or ``(slot, W)`` pairs, ``W`` a ``(size, slot size)`` array
    (broadcast as the dense ``+=`` does) or an :class:`Eye`; ``bias`` goes to the row ``one``.
    """
    blocks = []
    items = terms.items() if hasattr(terms, "items") else terms
    for name, W in items:
        rows = lay.rows_array(name)
        if isinstance(W, Eye):
            n = min(size, len(rows))
            i = np.arange(n, dtype=np.int64)
            blocks.append(Coo(i, rows[:n], np.full(n, 1.0 * W.value)))
            continue
        m = dense_rows(np.broadcast_to(np.asarray(W, dtype=np.float64), (size, len(rows))))
        blocks.append(Coo(m.r, rows[m.c], m.v))
    if bias is not None:
        b = np.broadcast_to(np.asarray(bias, dtype=np.float64), (size,))
        i = np.flatnonzero(b)
        blocks.append(Coo(i.astype(np.int64), np.full(len(i), lay.row("one"), np.int64), b[i].copy()))
    return coo_sum(blocks)

