"""Attention heads as sparse entries (Lemma 1; hard attention of §3) for the sparse-from-the-start build.

The sparse twin of :class:`~iclconstruct.compiler.attention.AttentionBuilder` (paper block):
the self head's linear map is kept as :class:`~iclconstruct.compiler.sparse_coeffs.Coo`
entries instead of a ``(D, D)`` array, and each head comes out as its ``(D, 2)`` query and
key maps (from :func:`~iclconstruct.compiler.attention.attend_offset` and friends) plus the
entries of its value and (balanced, Lemma 6) output maps. Same values as the dense builder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from ..lang.layout import Layout
from ..lang.ops import Read
from .attention import read_qk
from .sparse_coeffs import Coo, Eye, coo_sum, dense_rows, slot_coeffs

__all__ = ["SparseHead", "SparseAttentionBuilder"]


@dataclass
class SparseHead:
    """One head: ``W_Q, W_K`` ``(D, 2)``; ``V`` entries ``(head column, residual row, value)``
    (the transpose of ``W_V``) and ``O`` entries ``(head column, residual row, value)`` (``W_O``)."""

    W_Q: np.ndarray
    W_K: np.ndarray
    V: Coo
    O: Coo
    label: str


class SparseAttentionBuilder:
    """The heads of one attention sublayer (arguments and methods as :class:`AttentionBuilder`)."""

    def __init__(self, layout: Layout, width: int, hardness: float, max_len: int):
        self.lay = layout
        self.D = width
        self.hardness = hardness
        self.max_len = max_len
        self._self: List[Coo] = []  # each write, rows in residual rows
        self.self_rows = np.zeros(0, np.int64)
        self.moves: Dict[Read, List[Tuple[str, str]]] = {}

    def self_write(self, dst: str, coeffs) -> None:
        """Add ``coeffs @ h`` (a ``Coo`` with rows ``0..size-1``, or a dense ``(size, D)`` array) to ``dst``."""
        m = coeffs if isinstance(coeffs, Coo) else dense_rows(coeffs)
        rows = self.lay.rows_array(dst)
        self._self.append(Coo(rows[m.r], m.c, m.v))
        self.self_rows = np.union1d(self.self_rows, rows)

    def overwrite(self, dst: str, coeffs=None) -> None:
        """Slot ``dst`` becomes ``coeffs @ h`` (or 0): the new value minus the old."""
        n = self.lay[dst].size
        m = slot_coeffs(self.lay, {dst: Eye(-1.0)}, size=n)
        if coeffs is not None:
            m = coo_sum([m, coeffs if isinstance(coeffs, Coo) else dense_rows(coeffs)])
        self.self_write(dst, m)

    def move(self, read: Read, src: str, dst: str) -> None:
        if read.kind == "offset" and read.k == 0:
            self.overwrite(dst, slot_coeffs(self.lay, {src: Eye(1.0)}, size=self.lay[dst].size))
            return
        self.overwrite(dst)
        self.moves.setdefault(read, []).append((src, dst))

    def n_heads(self) -> int:
        return len(self.moves) + (1 if len(self.self_rows) else 0)

    def d_head(self) -> int:
        need = [2] + [sum(self.lay[s].size for s, _ in mv) for mv in self.moves.values()]
        if len(self.self_rows):
            need.append(len(self.self_rows))
        return max(need)

    def _qk(self, read: Read, d_head: int):
        return read_qk(self.lay, read, hardness=self.hardness, max_len=self.max_len, d_head=d_head, width=self.D)

    def _out(self, dst_rows: np.ndarray) -> Coo:
        """``W_O`` row ``i`` = unit vector of ``dst_rows[i]``, balanced (``−1`` on ``bal``)."""
        i = np.arange(len(dst_rows), dtype=np.int64)
        bal = self.lay.row("bal")
        return Coo(np.concatenate([i, i]), np.concatenate([dst_rows, np.full(len(i), bal, np.int64)]),
                   np.concatenate([np.ones(len(i)), -np.ones(len(i))]))

    def heads(self, d_head: int) -> List[SparseHead]:
        """Every head (the self head first), as :meth:`AttentionBuilder.heads` orders them."""
        out: List[SparseHead] = []
        if len(self.self_rows):
            WQ, WK = self._qk(Read("offset", 0), d_head)
            rows = self.self_rows
            m = coo_sum(self._self)
            out.append(SparseHead(WQ, WK, Coo(np.searchsorted(rows, m.r), m.c, m.v), self._out(rows), "self"))
        for read, pairs in self.moves.items():
            WQ, WK = self._qk(read, d_head)
            src = np.concatenate([self.lay.rows_array(s) for s, _ in pairs])
            dst = np.concatenate([self.lay.rows_array(d, np.arange(self.lay[s].size)) for s, d in pairs])
            i = np.arange(len(src), dtype=np.int64)
            out.append(SparseHead(WQ, WK, Coo(i, src, np.ones(len(i))), self._out(dst), f"mov {read.describe()}"))
        return out
