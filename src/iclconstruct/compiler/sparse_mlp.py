"""MLP units as sparse arrays (Lemmas 4 and 5 without dense width-``D`` rows).

The sparse twin of :class:`~iclconstruct.compiler.mlp.MLPBuilder`: units are kept in
*chunks* of arrays — coefficients as ``(unit, row, value)`` entries, one bias, gain and
output row per unit — and the products of one ``mul`` op are generated in one vectorised
chunk (:meth:`SparseMLPBuilder.products`, Lemma 4) instead of one Python object per scalar
product. :meth:`SparseMLPBuilder.parts` folds the LayerNorm in front of the MLP (Lemma 6, or
the division of Lemma 8) exactly as :meth:`MLPBuilder.weights` does and balances the outputs
(:func:`~iclconstruct.compiler.layernorm.balance`), so the non-zero weights are bit-identical
to the dense build. Labels are made only when read (:class:`LazyLabels`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np

from ..lang.layout import Layout
from .mlp import PRODUCT_GAIN, Unit
from .sparse_coeffs import Coo

__all__ = ["UnitChunk", "SparseMLPBuilder", "SparseMLPParts", "LazyLabels"]


@dataclass
class UnitChunk:
    """``m`` units: entries ``(u, c, v)`` of their input weights (``u`` local to the chunk),
    bias ``b``, ``gain``, output ``row`` and ``cancel`` (see :attr:`Unit.cancel_mean`) per unit."""

    m: int
    u: np.ndarray
    c: np.ndarray
    v: np.ndarray
    b: np.ndarray
    gain: np.ndarray
    row: np.ndarray
    cancel: np.ndarray
    labels: Callable[[], List[str]]
    #: per unit: the zeros of its dense ``w`` are ``−0.0`` (a negated row, ``−z``), not ``+0.0``
    negfill: Optional[np.ndarray] = None


class LazyLabels(Sequence):
    """The unit labels of one MLP (``d_mlp`` of them, padding ``""``), each chunk's made on first read."""

    def __init__(self, chunks: List[UnitChunk], d_mlp: int):
        self._chunks = [(ch.m, ch.labels) for ch in chunks]
        self._starts = np.cumsum([0] + [m for m, _ in self._chunks])
        self._made = {}
        self._n = d_mlp

    def __len__(self) -> int:
        return self._n

    def _chunk(self, j: int) -> List[str]:
        if j not in self._made:
            self._made[j] = self._chunks[j][1]()
        return self._made[j]

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self._n))]
        k = int(k)
        if k < 0:
            k += self._n
        if not 0 <= k < self._n:
            raise IndexError(k)
        if k >= self._starts[-1]:
            return ""
        j = int(np.searchsorted(self._starts, k, side="right")) - 1
        return self._chunk(j)[k - self._starts[j]]

    def __iter__(self):
        for j in range(len(self._chunks)):
            yield from self._chunk(j)
        yield from [""] * (self._n - int(self._starts[-1]))

    def __eq__(self, other) -> bool:
        return list(self) == list(other)


@dataclass
class SparseMLPParts:
    """The MLP of one layer on its kept units: ``W_in`` entries (unit, row, value), ``b_in``,
    ``W_out`` entries (row, unit, value), ``b_out`` (dense ``(D,)``), the kept units' indices.

    The signs of the dense build's exact zeros (for a bit-for-bit ``to_dense()``): ``neg_fill``
    units have ``−0.0`` wherever their ``W_in`` column is zero, except on the row ``one`` for
    the units in ``one_pos``; ``one_neg`` units have ``−0.0`` there; ``W_out`` has ``−0.0`` at
    ``out_neg`` ``(unit, row)`` and on ``bal`` for every unit from ``m`` (the padding) on;
    ``b_in`` has ``−0.0`` at the (dropped) units ``b_in_neg``."""

    w_in: Coo
    b_in: np.ndarray
    w_out: Coo
    b_out: np.ndarray
    units: np.ndarray
    labels: LazyLabels
    m: int = 0
    one: int = 0
    bal: Optional[int] = None
    neg_fill: np.ndarray = None
    one_pos: np.ndarray = None
    one_neg: np.ndarray = None
    out_neg: np.ndarray = None
    b_in_neg: np.ndarray = None


class SparseMLPBuilder:
    """Hidden units of one MLP sublayer as sparse chunks (arguments as :class:`MLPBuilder`; paper block only)."""

    def __init__(self, layout: Layout, width: int, unscale: float, bypass_scale: Optional[float] = None,
                 divide: bool = False):
        self.lay = layout
        self.D = width
        self.unscale = unscale
        self.bypass_scale = bypass_scale
        self.divide = divide
        self.chunks: List[UnitChunk] = []
        self.bias_adds: List[tuple] = []  # (row, value) added to b_out, in order
        self._m = 0

    def __len__(self) -> int:
        return self._m

    def _push(self, ch: UnitChunk) -> None:
        if ch.m:
            self.chunks.append(ch)
            self._m += ch.m

    def linear(self, dst: str, entries: np.ndarray, z: Coo, labels: Callable[[], List[str]],
               cancel_mean: bool = False, neg: bool = False) -> None:
        """Lemma 5 for each ``entries[q]`` of ``dst``: ``z`` row ``q`` (entries ``(q, row, value)``)
        read through :func:`~iclconstruct.compiler.mlp.bypass_units`, unit order as the dense builder
        (``neg``: the dense ``z`` is a negated vector, its zeros ``−0.0``)."""
        entries = np.asarray(entries, dtype=np.int64)
        n = len(entries)
        rows = self.lay.rows_array(dst, entries)
        if self.bypass_scale is None:
            u = np.concatenate([2 * z.r, 2 * z.r + 1])
            c = np.concatenate([z.c, z.c])
            v = np.concatenate([z.v, -z.v])
            b = np.tile([0.0, -0.0], n)
            gain = np.tile([1.0, -1.0], n)
            out = np.repeat(rows, 2)
            fill = np.tile([neg, not neg], n)
            suffix = (" (+)", " (-)")
        else:
            u, c, v = z.r, z.c, z.v
            b = np.full(n, 0.0 + self.bypass_scale)
            gain = np.ones(n)
            out = rows
            fill = np.full(n, neg)
            suffix = (" (bypass)",)
            self.bias_adds += [(int(r), -self.bypass_scale) for r in rows]
        o = np.argsort(u, kind="stable")
        self._push(UnitChunk(len(out), u[o], c[o], v[o], b, gain, out, np.full(len(out), cancel_mean),
                             lambda: [lab + s for lab in labels() for s in suffix], fill))

    def units(self, dst: str, i: int, units: List[Unit], cols: np.ndarray, out_bias: float = 0.0,
              cancel_mean: bool = False) -> None:
        """Generic units whose ``w`` are given on the residual rows ``cols`` only (few units)."""
        us, cs, vs = [], [], []
        for k, unit in enumerate(units):
            nz = np.flatnonzero(unit.w)
            us.append(np.full(len(nz), k, np.int64))
            cs.append(np.asarray(cols, np.int64)[nz])
            vs.append(np.asarray(unit.w, np.float64)[nz])
        r = self.lay.row(dst, i)
        m = len(units)
        self._push(UnitChunk(m, np.concatenate(us), np.concatenate(cs), np.concatenate(vs),
                             np.array([u.b for u in units], np.float64), np.array([u.gain for u in units], np.float64),
                             np.full(m, r, np.int64), np.array([cancel_mean or u.cancel_mean for u in units]),
                             lambda: [u.label for u in units]))
        if out_bias:
            self.bias_adds.append((r, out_bias))

    def tiled(self, dst: str, entries: np.ndarray, units: List[Unit], cols: np.ndarray, x_pos: int,
              negfill: Sequence[bool], labels: Callable[[int], List[str]], out_bias: float = 0.0) -> None:
        """The same units for every ``entries[q]`` of ``dst``: ``units`` are given on the residual rows
        ``cols`` except position ``x_pos``, which stands for the row of entry ``entries[q]``.

        Each entry gets ``units`` in order (their ``cancel_mean`` kept), ``out_bias`` on its row, and
        ``labels(i)`` (one per unit) when labels are read; ``negfill``: see :class:`UnitChunk`.
        """
        entries = np.asarray(entries, dtype=np.int64)
        n, J = len(entries), len(units)
        rows = self.lay.rows_array(dst, entries)
        ju, jp, jv = [], [], []
        for j, unit in enumerate(units):
            nz = np.flatnonzero(unit.w)
            ju += [j] * len(nz)
            jp += nz.tolist()
            jv += np.asarray(unit.w, np.float64)[nz].tolist()
        ju, jp, jv = np.array(ju, np.int64), np.array(jp, np.int64), np.array(jv)
        q = np.repeat(np.arange(n, dtype=np.int64), len(ju))
        u = q * J + np.tile(ju, n)
        pos = np.tile(jp, n)
        c = np.where(pos == x_pos, rows[q], np.asarray(cols, np.int64)[np.minimum(pos, len(cols) - 1)])
        tile = lambda xs, dt: np.tile(np.array(xs, dt), n)
        self._push(UnitChunk(n * J, u, c, np.tile(jv, n), tile([x.b for x in units], np.float64),
                             tile([x.gain for x in units], np.float64), np.repeat(rows, J),
                             tile([x.cancel_mean for x in units], bool), lambda: [l for i in entries.tolist() for l in labels(i)],
                             tile(list(negfill), bool)))
        if out_bias:
            self.bias_adds += [(int(r), out_bias) for r in rows]

    def products(self, dst: str, out: np.ndarray, xr: np.ndarray, yr: np.ndarray, s_x: float, s_y: float,
                 coef: float, N: float, order: int, labels: Callable[[], List[str]]) -> None:
        """Lemma 4 for products ``p``: ``coef·h[xr[p]]·h[yr[p]]`` added to entry ``out[p]`` of ``dst``.

        The units of :func:`~iclconstruct.compiler.mlp.product_units` on unit vectors, product by
        product (three units each, or six for ``order=4``), with the same floating-point operations.
        """
        P = len(out)
        stages = ([(coef * 4.0 / 3.0, 2.0 * N, " [2N]"), (-coef / 3.0, N, " [N]")] if order == 4
                  else [(coef, N, "")])
        k = 3 * len(stages)  # units per product
        us, cs, vs, gains = [], [], [], np.empty((P, k))
        base = np.arange(P, dtype=np.int64) * k
        for s, (cf, n, _) in enumerate(stages):
            a = np.ones(1) / (s_x * n)
            bb = np.ones(1) / (s_y * n)
            a, bb = float(a[0]), float(bb[0])
            g = cf * s_x * s_y * PRODUCT_GAIN * n * n
            same = xr == yr
            u0 = base + 3 * s
            # (x + y): a at x's row, b at y's row (a + b when they coincide)
            us += [u0[~same], u0[~same], u0[same], u0 + 1, u0 + 2]
            cs += [xr[~same], yr[~same], xr[same], xr, yr]
            vs += [np.full(int((~same).sum()), a), np.full(int((~same).sum()), bb), np.full(int(same.sum()), a + bb),
                   np.full(P, a), np.full(P, bb)]
            gains[:, 3 * s:3 * s + 3] = (g, -g, -g)
        u = np.concatenate(us)
        o = np.lexsort((np.concatenate(cs), u))
        rows = self.lay.rows_array(dst, out)

        def make_labels():
            names = [t for _, _, t in stages]
            return [lab + t + part for lab in labels() for t in names for part in (" (x+y)", " (x)", " (y)")]

        self._push(UnitChunk(P * k, u[o], np.concatenate(cs)[o], np.concatenate(vs)[o], np.zeros(P * k),
                             gains.ravel(), np.repeat(rows, k), np.zeros(P * k, bool), make_labels))

    def constant(self, dst: str, i: int, value: float) -> None:
        self.bias_adds.append((self.lay.row(dst, i), value))

    def _gather(self):
        """Every chunk's arrays concatenated; unit indices global (entries sorted by unit)."""
        offs = np.cumsum([0] + [ch.m for ch in self.chunks])
        cat = lambda f, dt: np.concatenate([f(ch) for ch in self.chunks]).astype(dt) if self.chunks else np.zeros(0, dt)
        u = np.concatenate([ch.u + o for ch, o in zip(self.chunks, offs)]) if self.chunks else np.zeros(0, np.int64)
        return (u, cat(lambda ch: ch.c, np.int64), cat(lambda ch: ch.v, np.float64), cat(lambda ch: ch.b, np.float64),
                cat(lambda ch: ch.gain, np.float64), cat(lambda ch: ch.row, np.int64), cat(lambda ch: ch.cancel, bool),
                cat(lambda ch: np.zeros(ch.m, bool) if ch.negfill is None else ch.negfill, bool))

    def _fold_constant_row(self, u, c, v, b, cancel, negfill):
        """Lemma 6's bookkeeping of :meth:`MLPBuilder.weights` (not in a div layer, whose constant row is
        not exactly 1): a unit's coefficient on ``one`` goes to its bias, or — ``cancel`` units — the
        exactly rounded sum of its coefficients moves onto ``one`` and into the bias.

        Returns the new ``(u, c, v, b)`` and the units whose ``one`` entry, when zero, is ``+0.0``
        despite a ``−0.0`` fill (``one_pos``) or ``−0.0`` despite a ``+0.0`` fill (``one_neg``).
        """
        one, m = self.lay.row("one"), len(b)
        at_one = c == one
        w_one = np.where(negfill, -0.0, 0.0)  # the dense w[one], a signed zero where absent
        w_one[u[at_one]] = v[at_one]
        plain = ~cancel
        b = np.where(plain, b + w_one, b)  # the constant row is exactly 1: use the bias
        drop = at_one & plain[u]
        u, c, v = u[~drop], c[~drop], v[~drop]
        one_pos, one_neg = list(np.flatnonzero(plain & negfill)), []  # w[one] = 0.0
        starts = np.searchsorted(u, np.arange(m + 1))
        new_u, new_v = [], []
        for k in np.flatnonzero(cancel):  # few units (counts and sums): one by one
            sl = slice(starts[k], starts[k + 1])
            colsum = math.fsum(v[sl])
            hit = np.flatnonzero(c[sl] == one)
            res = (v[starts[k] + hit[0]] if len(hit) else (-0.0 if negfill[k] else 0.0)) - colsum
            if len(hit):
                v[starts[k] + hit[0]] = res
            else:
                new_u.append(k), new_v.append(res)
            if res == 0 and bool(np.signbit(res)) != bool(negfill[k]):
                (one_neg if np.signbit(res) else one_pos).append(k)
            b[k] = b[k] + colsum
        if new_u:
            u = np.concatenate([u, np.array(new_u, np.int64)])
            c = np.concatenate([c, np.full(len(new_u), one, np.int64)])
            v = np.concatenate([v, np.array(new_v)])
        return u, c, v, b, np.array(sorted(one_pos), np.int64), np.array(sorted(one_neg), np.int64)

    def parts(self, d_mlp: int) -> SparseMLPParts:
        """The weights acting on ``LayerNorm(h)``, as :meth:`MLPBuilder.weights` computes them (kept units only)."""
        bal = self.lay.row("bal")
        u, c, v, b, gain, row, cancel, negfill = self._gather()
        m = len(b)
        one_pos = one_neg = np.zeros(0, np.int64)
        if not self.divide:
            u, c, v, b, one_pos, one_neg = self._fold_constant_row(u, c, v, b, cancel, negfill)
        v = self.unscale * v
        nz = v != 0
        u, c, v = u[nz], c[nz], v[nz]
        # kept units: as SparseBlock(dense block) keeps them (any non-zero input, bias or output)
        live = np.zeros(m, bool)
        live[u] = True
        live |= (b != 0) | (gain != 0)
        units = np.flatnonzero(live)
        new = np.full(m, -1, np.int64)
        new[units] = np.arange(len(units))
        o = np.lexsort((c, u))
        w_in = Coo(new[u[o]], c[o], v[o])
        # W_out: the gain on the output row, balanced (−gain on bal: −fsum of a single entry)
        g = gain[units]
        hit = g != 0
        k = np.arange(len(units), dtype=np.int64)[hit]
        r_out = np.concatenate([row[units][hit], np.full(len(k), bal, np.int64)])
        c_out, v_out = np.concatenate([k, k]), np.concatenate([g[hit], -g[hit]])
        o = np.lexsort((c_out, r_out))
        b_out = np.zeros(self.D)
        for r, val in self.bias_adds:
            b_out[r] += val
        b_out[bal] = 0.0
        b_out[bal] = -math.fsum(b_out)
        # signed zeros of the dense build: −fsum of an all-zero W_out row is −0.0; a gain of −0.0
        zero_gain, neg_gain = np.flatnonzero(gain == 0), np.flatnonzero((gain == 0) & np.signbit(gain))
        out_neg = np.concatenate([np.stack([zero_gain, np.full(len(zero_gain), bal)], 1),
                                  np.stack([neg_gain, row[neg_gain]], 1)]).astype(np.int64)
        dropped = np.flatnonzero(~live)
        return SparseMLPParts(w_in, b[units], Coo(r_out[o], c_out[o], v_out[o]), b_out, units,
                              LazyLabels(self.chunks, d_mlp), m=m, one=self.lay.row("one"), bal=bal,
                              neg_fill=np.flatnonzero(negfill), one_pos=one_pos, one_neg=one_neg, out_neg=out_neg,
                              b_in_neg=dropped[np.signbit(b[dropped])])
