"""Attention heads for ``mov`` and the self head (Lemma 1; hard attention of §3).

Three functions say where a head looks — :func:`attend_offset` (``k`` positions back),
:func:`attend_position` (absolute position ``p``) and :func:`averaging_read` (the RAW
averaging read over all, x̃ or ỹ columns) — and return the head's query and key maps.
:class:`AttentionBuilder` collects the heads of one attention sublayer in slot names: moves
between slots (one head per distinct read) and the *self head*, which attends to its own
column and writes any linear map of it (overwrites, ``aff``, the set-ups of Lemmas 6 and 8).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..lang.layout import Layout
from ..lang.ops import Read
from .layernorm import balance, fold_layernorm

__all__ = ["HeadWeights", "AttentionBuilder", "attend_offset", "attend_position", "averaging_read"]

QK = Tuple[np.ndarray, np.ndarray]


@dataclass
class HeadWeights:
    """One head: ``W_Q, W_K, W_V`` are ``(D, d_head)``, ``W_O`` is ``(d_head, D)``.

    The biases ``b_Q, b_K`` (``(d_head,)``) and ``b_O`` (``(D,)``) exist only in the GPT-2-style
    block, where the head reads a LayerNorm output (:func:`~iclconstruct.compiler.layernorm.fold_layernorm`).
    """

    W_Q: np.ndarray
    W_K: np.ndarray
    W_V: np.ndarray
    W_O: np.ndarray
    label: str
    b_Q: Optional[np.ndarray] = None
    b_K: Optional[np.ndarray] = None
    b_O: Optional[np.ndarray] = None


def _position_keys(lay: Layout, width: int) -> np.ndarray:
    """Keys ``(j/P, (j/P)²)``: the two position units of column ``j``."""
    WK = np.zeros((width, 2))
    WK[:, 0] = lay.unit("pos", 0, width)
    WK[:, 1] = lay.unit("pos", 1, width)
    return WK


def attend_offset(lay: Layout, k: int, *, hardness: float, max_len: int, d_head: int, width: int) -> QK:
    """Hard attention (§3) from column ``t`` to column ``t − k`` (clamped to column 0).

    With position units ``u_j = (j/P, (j/P)²)`` (``P = max_len``) the query
    ``g·(2(u_t − k/P), −1)`` and key ``u_j`` give the logit
    ``A·(2(t−k)j − j²) = A·((t−k)² − (j−(t−k))²)``, ``g = A·P²·√d_head`` (the ``√d_head``
    undoes the softmax scaling): maximal at ``j = t − k`` with a gap ``A`` (``hardness``)
    to its neighbours, so the weight leaking elsewhere is ``≤ 2·exp(−A)``. For ``t < k``
    the maximum over visible columns is ``j = 0``: the clamped read of ``Mov``.
    """
    P = float(max_len)
    gain = hardness * P * P * math.sqrt(d_head)
    WQ = np.zeros((width, 2))
    WQ[lay.row("pos", 0), 0] = 2.0 * gain
    if k:
        WQ[lay.row("one"), 0] = -2.0 * gain * k / P
    WQ[lay.row("one"), 1] = -gain
    return WQ, _position_keys(lay, width)


def attend_position(lay: Layout, p: int, *, hardness: float, max_len: int, d_head: int, width: int) -> QK:
    """Hard attention (§3) from every column ``t`` to the absolute column ``p`` (clamped to ``t``).

    The query is the constant ``g·(2p/P, −1)``, so the logit on key ``u_j`` is
    ``A·(2pj − j²) = A·(p² − (j − p)²)``: maximal at ``j = p``, gap ``A``; columns ``t < p``
    see their own column as the maximum (the clamped read ``min(p, t)``).
    """
    P = float(max_len)
    gain = hardness * P * P * math.sqrt(d_head)
    WQ = np.zeros((width, 2))
    WQ[lay.row("one"), 0] = 2.0 * gain * p / P
    WQ[lay.row("one"), 1] = -gain
    return WQ, _position_keys(lay, width)


def averaging_read(lay: Layout, which: int, *, hardness: float, d_head: int, width: int) -> QK:
    """The RAW averaging read (Definition C.2): uniform attention over a set of columns ``j ≤ t``.

    ``which = 0``: all columns (zero query, all logits equal). ``which = 1`` / ``2``: the
    x̃ / ỹ columns — logit ``A`` on members (key: ``1 − is_y`` or ``is_y``), 0 elsewhere,
    so non-members get relative weight ``exp(−A)``; while the set has no column yet, all
    columns share the weight equally (the interpreter's fallback).
    """
    WQ, WK = np.zeros((width, 2)), np.zeros((width, 2))
    if which:
        WQ[lay.row("one"), 0] = hardness * math.sqrt(d_head)
        WK[lay.row("is_y"), 0] = 1.0 if which == 2 else -1.0
        if which == 1:
            WK[lay.row("one"), 0] = 1.0
    return WQ, WK


def read_qk(lay: Layout, read: Read, *, hardness: float, max_len: int, d_head: int, width: int) -> QK:
    """The query and key maps of one read (offset, position or averaging; §3 and Lemma 1)."""
    kw = dict(hardness=hardness, d_head=d_head, width=width)
    if read.kind == "offset":
        return attend_offset(lay, read.k, max_len=max_len, **kw)
    if read.kind == "position":
        return attend_position(lay, read.k, max_len=max_len, **kw)
    return averaging_read(lay, read.k, **kw)


class AttentionBuilder:
    """The heads of one attention sublayer, specified in slot names.

    Every write overwrites (the self head subtracts the old value). ``move`` adds a slot
    pair to the head of its read; offset-0 moves and every other linear map of the own
    column go to the self head.
    """

    def __init__(self, layout: Layout, width: int, hardness: float, max_len: int, unscale: Optional[float] = None):
        self.unscale = unscale  # GPT-2-style block: the heads read LayerNorm(h), undone by this (Lemma 6)
        self.lay = layout
        self.D = width
        self.hardness = hardness
        self.max_len = max_len
        self.self_map = np.zeros((width, width))  # row r of the output gets self_map[r] @ h
        self.self_rows = np.zeros(width, dtype=bool)
        self.moves: Dict[Read, List[Tuple[str, str]]] = {}

    def self_write(self, dst: str, coeffs: np.ndarray) -> None:
        """Add ``coeffs @ h`` (``coeffs``: ``(size of dst, D)``) to slot ``dst``."""
        self.self_map[self.lay.slice(dst)] += coeffs
        self.self_rows[self.lay.slice(dst)] = True

    def overwrite(self, dst: str, coeffs: Optional[np.ndarray] = None) -> None:
        """Slot ``dst`` becomes ``coeffs @ h`` (or 0): add the new value, subtract the old."""
        m = self.lay.coeffs({dst: -np.eye(self.lay[dst].size)}, size=self.lay[dst].size, width=self.D)
        self.self_write(dst, m if coeffs is None else m + coeffs)

    def move(self, read: Read, src: str, dst: str) -> None:
        """``dst ← src`` read at ``read`` (an offset-0 read is a copy inside the column)."""
        if read.kind == "offset" and read.k == 0:
            self.overwrite(dst, self.lay.coeffs({src: np.eye(self.lay[src].size)}, size=self.lay[dst].size,
                                                width=self.D))
            return
        self.overwrite(dst)
        self.moves.setdefault(read, []).append((src, dst))

    def n_heads(self) -> int:
        return len(self.moves) + (1 if self.self_rows.any() else 0)

    def d_head(self) -> int:
        need = [2] + [sum(self.lay[s].size for s, _ in mv) for mv in self.moves.values()]
        if self.self_rows.any():
            need.append(int(self.self_rows.sum()))
        return max(need)

    def _qk(self, read: Read, d_head: int) -> QK:
        return read_qk(self.lay, read, hardness=self.hardness, max_len=self.max_len, d_head=d_head, width=self.D)

    def heads(self, d_head: int) -> List[HeadWeights]:
        """Weights of every head (the self head first), each padded to ``d_head``."""
        out: List[HeadWeights] = []
        pad = lambda a: np.pad(a, ((0, 0), (0, d_head - a.shape[1])))
        if self.self_rows.any():
            WQ, WK = self._qk(Read("offset", 0), d_head)
            rows = np.flatnonzero(self.self_rows)
            WV, WO = np.zeros((self.D, d_head)), np.zeros((d_head, self.D))
            WV[:, : len(rows)] = self.self_map[rows].T
            WO[np.arange(len(rows)), rows] = 1.0
            out.append(HeadWeights(pad(WQ), pad(WK), WV, balance(WO, self.lay), "self"))
        for read, pairs in self.moves.items():
            WQ, WK = self._qk(read, d_head)
            WV, WO = np.zeros((self.D, d_head)), np.zeros((d_head, self.D))
            i = 0
            for src, dst in pairs:
                for e in range(self.lay[src].size):
                    WV[:, i] = self.lay.unit(src, e, self.D)
                    WO[i] = self.lay.unit(dst, e, self.D)
                    i += 1
            out.append(HeadWeights(pad(WQ), pad(WK), WV, balance(WO, self.lay), f"mov {read.describe()}"))
        return out if self.unscale is None else [self._fold(hw) for hw in out]

    def _fold(self, hw: HeadWeights) -> HeadWeights:
        """GPT-2-style block: fold the LayerNorm in front of the head into ``W_Q, W_K, W_V`` and biases.

        The value bias moves behind the head (``b_O = b_V @ W_O``), where it is added exactly
        instead of through the softmax average (whose weights sum to 1 only up to round-off).
        """
        WQ, bQ = fold_layernorm(hw.W_Q, self.lay, self.unscale)
        WK, bK = fold_layernorm(hw.W_K, self.lay, self.unscale)
        WV, bV = fold_layernorm(hw.W_V, self.lay, self.unscale)
        bO = balance((bV @ hw.W_O)[None], self.lay)[0]
        return HeadWeights(WQ, WK, WV, hw.W_O, hw.label, b_Q=bQ, b_K=bK, b_O=bO)
