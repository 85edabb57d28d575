"""Builders that turn primitives into the weights of real sublayers (Lemmas 1, 4–8).

Two accumulators do the work:

* :class:`AttentionBuilder` collects heads of one attention sublayer. Position heads
  implement ``mov`` by hard attention on the position units; the *self head* attends to
  its own column and applies any linear map to it (used for overwrites, ``aff`` in the
  attention sublayer, and the LayerNorm bookkeeping of ``div``).
* :class:`MLPBuilder` collects hidden units of one MLP sublayer. Units are specified as
  affine functions of the *un-normalised* column ``h``; :meth:`MLPBuilder.weights`
  folds in the inverse of the LayerNorm in front of the MLP (Lemma 6) — or, in a div
  layer, the division by ``|c|`` (Lemma 8).

All weights are float64 numpy arrays; the compiler casts them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..numerics.constants import Constants
from ..lang.layout import Layout
from ..lang.ops import Read

__all__ = [
    "AttentionBuilder",
    "MLPBuilder",
    "HeadWeights",
    "MLPWeights",
    "position_units",
    "PRODUCT_GAIN",
    "balance",
]

#: √(π/2): turns the quadratic term of GeLU into a product (Lemma 4)
PRODUCT_GAIN = math.sqrt(math.pi / 2.0)


def position_units(j: np.ndarray, max_len: int) -> Tuple[np.ndarray, np.ndarray]:
    """The two position units ``(j/P, (j/P)²)`` with ``P = max_len``, all in ``[0, 1]``."""
    u = np.asarray(j, dtype=np.float64) / float(max_len)
    return u, u * u


@dataclass
class HeadWeights:
    """One head: ``W_Q, W_K, W_V`` are ``(D, d_head)``, ``W_O`` is ``(d_head, D)``."""

    W_Q: np.ndarray
    W_K: np.ndarray
    W_V: np.ndarray
    W_O: np.ndarray
    label: str


@dataclass
class MLPWeights:
    """``W_in (D, m)``, ``b_in (m,)``, ``W_out (m, D)``, ``b_out (D,)`` and a label per unit."""

    W_in: np.ndarray
    b_in: np.ndarray
    W_out: np.ndarray
    b_out: np.ndarray
    labels: List[str]


def balance(W: np.ndarray, bal: int) -> np.ndarray:
    """Make every output vector (last axis) sum to 0 by writing minus its sum into row ``bal``."""
    W = np.array(W, dtype=np.float64)
    W[..., bal] = 0.0
    W[..., bal] = -W.sum(axis=-1)
    return W


class AttentionBuilder:
    """Heads of one attention sublayer.

    Hard attention (constructions.md §3): with position units ``u_j = (j/P, (j/P)²)`` the
    logit of query ``t`` on key ``j`` is ``A·(2(t−k)j − j²) = A·((t−k)² − (j−(t−k))²)``
    — maximal at ``j = t − k`` with a gap of ``A`` to its neighbours (``A`` =
    ``Constants.attn_hardness``), so the softmax weight leaking to any other column is at
    most ``exp(−A)`` per neighbour. For ``t − k < 0`` the maximum over visible columns is
    ``j = 0``: the read clamps to the first column, as the interpreter defines it.
    """

    def __init__(self, layout: Layout, D: int, constants: Constants, max_len: int):
        self.lay = layout
        self.D = D
        self.c = constants
        self.max_len = max_len
        self.self_map = np.zeros((D, D))  # row r of the output gets self_map[r] @ h
        self.self_rows: set = set()
        self.moves: Dict[Read, List[Tuple[List[int], List[int]]]] = {}

    # -- self head -------------------------------------------------------------
    def self_write(self, dst_rows: Sequence[int], coeffs: np.ndarray) -> None:
        """Add ``coeffs @ h`` (``coeffs``: ``(len(dst_rows), D)``) to rows ``dst_rows``."""
        for r, row in zip(dst_rows, np.atleast_2d(coeffs)):
            self.self_map[r] += row
            self.self_rows.add(r)

    def overwrite(self, dst_rows: Sequence[int], coeffs: Optional[np.ndarray] = None) -> None:
        """Rows ``dst_rows`` become ``coeffs @ h`` (or 0): add the new value, subtract the old."""
        k = len(dst_rows)
        m = np.zeros((k, self.D)) if coeffs is None else np.array(coeffs, dtype=np.float64)
        m[np.arange(k), list(dst_rows)] -= 1.0
        self.self_write(dst_rows, m)

    # -- position heads ----------------------------------------------------------
    def move(self, read: Read, src_rows: Sequence[int], dst_rows: Sequence[int]) -> None:
        """``dst ← src`` read at ``read`` (overwrite: the self head clears ``dst``)."""
        if read.kind == "offset" and read.k == 0:
            m = np.zeros((len(dst_rows), self.D))
            m[np.arange(len(dst_rows)), list(src_rows)] = 1.0
            self.overwrite(dst_rows, m)
            return
        self.overwrite(dst_rows)
        self.moves.setdefault(read, []).append((list(src_rows), list(dst_rows)))

    # -- output ---------------------------------------------------------------
    def n_heads(self) -> int:
        return len(self.moves) + (1 if self.self_rows else 0)

    def d_head(self) -> int:
        need = [2]
        need += [sum(len(s) for s, _ in mv) for mv in self.moves.values()]
        if self.self_rows:
            need.append(len(self.self_rows))
        return max(need)

    def _blank(self, d_head: int):
        D = self.D
        return np.zeros((D, d_head)), np.zeros((D, d_head)), np.zeros((D, d_head)), np.zeros((d_head, D))

    def heads(self, d_head: int) -> List[HeadWeights]:
        """Weights of every head, each padded to ``d_head``."""
        lay = self.lay
        out: List[HeadWeights] = []
        u1, u2 = lay["pos"].start, lay["pos"].start + 1
        one = lay["one"].start
        P = float(self.max_len)
        gain = self.c.attn_hardness * P * P * math.sqrt(d_head)  # undoes 1/√d_head
        if self.self_rows:
            rows = sorted(self.self_rows)
            WQ, WK, WV, WO = self._blank(d_head)
            WQ[u1, 0] = 2.0 * gain
            WQ[one, 1] = -gain
            WK[u1, 0] = 1.0
            WK[u2, 1] = 1.0
            for i, r in enumerate(rows):
                WV[:, i] = self.self_map[r]
                WO[i, r] = 1.0
            out.append(HeadWeights(WQ, WK, WV, balance(WO, lay["bal"].start), "self"))
        for read, mv in self.moves.items():
            WQ, WK, WV, WO = self._blank(d_head)
            if read.kind == "offset":
                WQ[u1, 0] = 2.0 * gain
                WQ[one, 0] = -2.0 * gain * read.k / P
                WQ[one, 1] = -gain
            elif read.kind == "position":
                WQ[one, 0] = 2.0 * gain * read.k / P
                WQ[one, 1] = -gain
            elif read.k:  # mean over x̃ (k=1) or ỹ (k=2) columns: logit A on members, 0 elsewhere
                flag = lay["is_y"].start
                WQ[one, 0] = self.c.attn_hardness * math.sqrt(d_head)
                if read.k == 2:
                    WK[flag, 0] = 1.0
                else:
                    WK[one, 0] = 1.0
                    WK[flag, 0] = -1.0
            # 'mean' over all columns: zero query -> uniform weights over j <= t
            if read.kind != "mean":
                WK[u1, 0] = 1.0
                WK[u2, 1] = 1.0
            i = 0
            for src, dst in mv:
                for s, d in zip(src, dst):
                    WV[s, i] = 1.0
                    WO[i, d] = 1.0
                    i += 1
            out.append(HeadWeights(WQ, WK, WV, balance(WO, lay["bal"].start), f"mov {read.describe()}"))
        return out


class MLPBuilder:
    """Hidden units of one MLP sublayer, written as affine functions of the column ``h``.

    Args:
        divide: ``None`` for an ordinary layer (the MLP sees ``h``, Lemma 6), or
            ``True`` for a div layer (the MLP sees ``h / |c|``, Lemma 8).
    """

    def __init__(self, layout: Layout, D: int, constants: Constants, divide: bool = False):
        self.lay = layout
        self.D = D
        self.c = constants
        self.divide = divide
        self.C: List[np.ndarray] = []
        self.beta: List[float] = []
        self.out: List[Tuple[int, float]] = []
        self.labels: List[str] = []
        self.b_out = np.zeros(D)

    def _unit(self, coeffs: np.ndarray, beta: float, out_row: int, out_coef: float, label: str) -> None:
        self.C.append(coeffs)
        self.beta.append(float(beta))
        self.out.append((out_row, float(out_coef)))
        self.labels.append(label)

    def linear(self, out_row: int, coeffs: np.ndarray, beta: float, label: str) -> None:
        """Add ``coeffs @ h + beta`` to row ``out_row`` (GeLU bypass, Lemma 5).

        Default: the exact pair ``GeLU(z) − GeLU(−z) = z``. With
        ``Constants.bypass_scale = N_b``: one unit ``GeLU(z + N_b) − N_b`` (the paper's form).
        """
        nb = self.c.bypass_scale
        if nb is None:
            self._unit(coeffs, beta, out_row, 1.0, label + " (+)")
            self._unit(-coeffs, -beta, out_row, -1.0, label + " (-)")
        else:
            self._unit(coeffs, beta + nb, out_row, 1.0, label + " (bypass)")
            self.b_out[out_row] -= nb

    def product(self, out_row: int, x_coeffs: np.ndarray, y_coeffs: np.ndarray, s_x: float, s_y: float,
                coef: float, label: str) -> None:
        """Add ``coef · x·y`` to row ``out_row``, with ``x = x_coeffs @ h``, ``y = y_coeffs @ h``.

        Lemma 4 with operands normalised by their bounds ``s_x, s_y`` and by
        ``N = Constants.product_scale`` (three GeLU units)::

            x·y ≈ s_x·s_y·√(π/2)·N²·[GeLU((x/s_x + y/s_y)/N) − GeLU(x/(s_x N)) − GeLU(y/(s_y N))]

        Error ``≤ s_x·s_y·(7/(6N²) + 2.5·ε·N)`` for ``|x| ≤ s_x, |y| ≤ s_y``. With
        ``Constants.product_order = 4``, Richardson extrapolation ``(4·P_{2N} − P_N)/3`` over
        two scales (six units) cancels the ``N⁻²`` term: truncation ``≤ 0.35·s_x·s_y/N⁴``
        (:func:`iclconstruct.numerics.certificate.product_truncation`).
        """
        N = self.c.product_scale
        if self.c.product_order == 4:
            # Richardson extrapolation over N and 2N: (4·P_2N − P_N)/3 cancels the N⁻² term
            self._product_units(out_row, x_coeffs, y_coeffs, s_x, s_y, 2.0 * N, coef * 4.0 / 3.0, label + " [2N]")
            self._product_units(out_row, x_coeffs, y_coeffs, s_x, s_y, N, -coef / 3.0, label + " [N]")
        else:
            self._product_units(out_row, x_coeffs, y_coeffs, s_x, s_y, N, coef, label)

    def _product_units(self, out_row: int, x_coeffs, y_coeffs, s_x: float, s_y: float, N: float, coef: float,
                       label: str) -> None:
        """Three GeLU units: ``coef·s_x·s_y·√(π/2)·N²·[G((x'+y')/N) − G(x'/N) − G(y'/N)]`` (Lemma 4)."""
        a = x_coeffs / (s_x * N)
        b = y_coeffs / (s_y * N)
        g = coef * s_x * s_y * PRODUCT_GAIN * N * N
        self._unit(a + b, 0.0, out_row, g, label + " (x+y)")
        self._unit(a, 0.0, out_row, -g, label + " (x)")
        self._unit(b, 0.0, out_row, -g, label + " (y)")

    def __len__(self) -> int:
        return len(self.C)

    def weights(self, d_mlp: int) -> MLPWeights:
        """Weights acting on ``LayerNorm(h)``, padded to ``d_mlp`` units.

        Lemma 6: two rows ``(+K, −K)`` (``(+M|c|, −M|c|)`` in a div layer) dominate the
        variance and the ``bal`` row keeps the column mean at 0, so
        ``LayerNorm(h) = h/σ`` with ``σ = K·√(2/D)·(1 + ‖h‖²/(4K²) + …)``; multiplying by
        ``K·√(2/D)`` recovers ``h`` with relative error ``‖h‖²/(4K²)``.
        """
        D, lay = self.D, self.lay
        m = len(self.C)
        if m > d_mlp:
            raise ValueError("d_mlp smaller than the number of units")
        if self.divide:
            scale = self.c.div_scale * math.sqrt(2.0 / D)
        else:
            scale = self.c.ln_anchor * math.sqrt(2.0 / D)
        one = lay["one"].start
        W_in = np.zeros((D, d_mlp))
        b_in = np.zeros(d_mlp)
        W_out = np.zeros((d_mlp, D))
        for i, (C, beta, (r, g)) in enumerate(zip(self.C, self.beta, self.out)):
            C = np.array(C, dtype=np.float64)
            if not self.divide:
                beta = beta + C[one]  # the constant row is exactly 1: use the bias
                C[one] = 0.0
            W_in[:, i] = scale * C
            b_in[i] = beta
            W_out[i, r] = g
        labels = self.labels + [""] * (d_mlp - m)
        bal = lay["bal"].start
        b_out = balance(self.b_out[None], bal)[0]
        return MLPWeights(W_in, b_in, balance(W_out, bal), b_out, labels)
