"""``compile(..., sparse=True)`` without dense weights: each layer's heads and units as sparse entries.

The same passes as :mod:`iclconstruct.compiler.build` (the lemma functions of
:mod:`~iclconstruct.compiler.attention`, :mod:`~iclconstruct.compiler.mlp` and
:mod:`~iclconstruct.compiler.layernorm`, in the same order), on the sparse builders
:class:`~iclconstruct.compiler.sparse_heads.SparseAttentionBuilder` and
:class:`~iclconstruct.compiler.sparse_mlp.SparseMLPBuilder`; every layer becomes a
:class:`~iclconstruct.runtime.sparse.SparseBlock` made from those entries
(:meth:`SparseBlock.from_parts`). No ``(D × d_mlp)`` or ``(D × d_head)`` array and no dense
width-``D`` unit row is formed; ``model.to_dense()`` equals the dense build (``torch.equal``).
Paper block (Eq. 4) only, as :class:`SparseBlock` itself (``block='pre_ln'`` with ``sparse=True`` is refused).
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from ..errors import ICLConstructError
from ..lang.embedding import count_terms
from ..lang.layout import Layout
from ..lang.ops import Aff, Count, Div, Mov, Mul, Read, Sum
from ..numerics.constants import Constants
from .layernorm import division_setup, layernorm_bypass, restore_anchors
from ..runtime.sparse import SparseBlock
from .mlp import bypass_units, product_units
from .model import Block
from .schedule import LayerPlan
from .sparse_coeffs import Coo, Eye, slot_coeffs
from .sparse_heads import SparseAttentionBuilder
from .sparse_mlp import SparseMLPBuilder

__all__ = ["sparse_builders", "dense_param_count", "sparse_block"]


def _attention(plan: LayerPlan, lay: Layout, D: int, c: Constants, max_len: int):
    """As :func:`iclconstruct.compiler.build._attention` (paper block)."""
    K = c.ln_anchor
    ab = SparseAttentionBuilder(lay, D, c.attn_hardness, max_len)
    for op in plan.attn_ops:
        if isinstance(op, Mov):
            ab.move(op.read, op.src, op.dst)
        elif isinstance(op, Aff):
            ab.overwrite(op.dst, slot_coeffs(lay, op.terms, op.bias, size=lay[op.dst].size))
        elif isinstance(op, Count):
            ab.overwrite(op.dst, slot_coeffs(lay, count_terms(max_len), size=1))
        else:  # pragma: no cover - the scheduler never does this
            raise ICLConstructError(f"{op.describe()} cannot run in an attention sublayer")
    for op in plan.mlp_ops:
        if isinstance(op, Sum):
            ab.move(Read("mean", 2), op.src, op.dst)
    if plan.divisor is not None:
        return ab, division_setup(ab, lay, plan.divisor, plan.cleared, c.div_scale, None)
    if plan.reset:
        restore_anchors(ab, lay, K)
    return ab, layernorm_bypass(lay, K, D).unscale


def _rows_of(z: Coo, n: int, all_rows: bool):
    """``(entries, z re-indexed)``: the rows of ``z`` that get units (all ``n``, or the non-zero ones)."""
    if all_rows:
        return np.arange(n, dtype=np.int64), z
    entries = np.unique(z.r)
    return entries, Coo(np.searchsorted(entries, z.r), z.c, z.v)


def _mlp(plan: LayerPlan, lay: Layout, D: int, c: Constants, unscale: float, max_len: int, scales) -> SparseMLPBuilder:
    """As :func:`iclconstruct.compiler.build._mlp` (paper block), unit for unit."""
    mb = SparseMLPBuilder(lay, D, unscale, c.bypass_scale, divide=plan.divisor is not None)
    for op in plan.mlp_ops:
        n = lay[op.dst].size
        if isinstance(op, Div):
            z = slot_coeffs(lay, {op.src: Eye(op.coef)}, size=n)
            entries, z = _rows_of(z, n, True)
            lab = lambda op=op, n=n: [f"{op.dst}[{i}] {'+' if op.accumulate else ''}= {op.src}[{i}]/|{op.divisor}|"
                                      for i in range(n)]
            mb.linear(op.dst, entries, z, lab)
            continue
        if isinstance(op, Count):
            z = slot_coeffs(lay, dict(count_terms(max_len), **{op.dst: -np.eye(1)}), size=1)
            entries, z = _rows_of(z, 1, True)
            mb.linear(op.dst, entries, z, lambda op=op: [f"{op.dst} = count"], cancel_mean=True)
            continue
        if isinstance(op, Sum):
            _sum_units(mb, op, lay, c.product_scale, max_len, c.product_order)
            continue
        if not isinstance(op, (Mul, Aff)):  # pragma: no cover
            raise ICLConstructError(f"{op.describe()} cannot run in an MLP sublayer")
        terms, bias = (op.plus, op.bias) if isinstance(op, Mul) else (op.terms, op.bias)
        lin = slot_coeffs(lay, tuple(terms) + ((op.dst, Eye(-1.0)),), bias, size=n)
        entries, z = _rows_of(lin, n, False)
        mb.linear(op.dst, entries, z, lambda op=op, e=entries: [f"{op.dst}[{i}] linear" for i in e])
        if isinstance(op, Mul):
            _products(mb, op, lay, c, scales)
    return mb


def _products(mb: SparseMLPBuilder, op: Mul, lay: Layout, c: Constants, scales) -> None:
    """All products of ``op`` (``i, j, k`` in the dense builder's loop order), one vectorised chunk."""
    a, b, cc = op.shape
    s_x, s_y = scales.get(id(op), (lay[op.lhs].bound, lay[op.rhs].bound))
    i, j, k = (g.ravel() for g in np.meshgrid(np.arange(a), np.arange(cc), np.arange(b), indexing="ij"))
    lhs, rhs, out = i * b + k, k * cc + j, i * cc + j
    xr = lay.rows_array(op.lhs, lhs)
    yr = lay.rows_array(op.rhs, rhs)

    def labels(op=op, lhs=lhs, rhs=rhs, out=out):
        return [f"{op.dst}[{o}] += {op.lhs}[{p}]*{op.rhs}[{q}]" for o, p, q in zip(out.tolist(), lhs.tolist(), rhs.tolist())]

    mb.products(op.dst, out, xr, yr, s_x, s_y, op.coef, c.product_scale, c.product_order, labels)


def _sum_units(mb: SparseMLPBuilder, op: Sum, lay: Layout, N: float, max_len: int, order: int = 2) -> None:
    """As :func:`iclconstruct.compiler.build._sum_units`, on the rows the count and ``dst`` use."""
    if op.count is None:
        cm = slot_coeffs(lay, count_terms(max_len), size=1)
        cnt_rows, cnt_vals, s_y = cm.c, cm.v, 0.5 * max_len
    else:
        cnt_rows, cnt_vals, s_y = np.array([lay.row(op.count, 0)], np.int64), np.ones(1), lay[op.count].bound
    s_x = lay[op.src].bound
    n = lay[op.dst].size
    label = lambda i: f"{op.dst}[{i}] = mean({op.src}[{i}])*count" + ("" if op.scale == 1.0 else f"*{op.scale:g}")
    # one template on the count's rows plus a stand-in for the entry's row, repeated for every entry
    # (dst is live next to the count slot and the system rows, so its rows are never among them)
    cols = np.append(cnt_rows, -1).astype(np.int64)
    x = np.zeros(len(cols))
    x[-1] = 1.0
    cnt = np.append(cnt_vals, 0.0)
    clear, out_bias = bypass_units(-x, 0.0, mb.bypass_scale, "")
    prods = product_units(x, cnt, s_x, s_y, op.scale, N, "", order=order)
    for u in prods:
        u.cancel_mean = op.count is None
    units = clear + prods
    negfill = [True, False][: len(clear)] + [False] * len(prods)  # −x has −0.0 zeros, −(−x) +0.0

    def labels(i):
        return ([f"{op.dst}[{i}] clear mean{u.label}" for u in clear] + [label(i) + u.label for u in prods])

    mb.tiled(op.dst, np.arange(n, dtype=np.int64), units, cols, len(cols) - 1, negfill, labels, out_bias)


def sparse_builders(plans: List[LayerPlan], lay: Layout, D: int, c: Constants, max_len: int,
                    scales) -> List[Tuple[SparseAttentionBuilder, SparseMLPBuilder]]:
    """Each layer's sparse (attention, MLP) builders; their entries are small (``O(non-zeros)``)."""
    out = []
    for plan in plans:
        ab, unscale = _attention(plan, lay, D, c, max_len)
        out.append((ab, _mlp(plan, lay, D, c, unscale, max_len, scales)))
    return out


def shapes(builders) -> Tuple[int, int, int]:
    """``(n_heads, d_head, d_mlp)`` over all layers, as the dense build sizes them."""
    n_heads, d_head, d_mlp = 1, 2, 1
    for ab, mb in builders:
        n_heads, d_head, d_mlp = max(n_heads, ab.n_heads()), max(d_head, ab.d_head()), max(d_mlp, len(mb))
    return n_heads, d_head, d_mlp


def dense_param_count(n_layers: int, D: int, n_heads: int, d_head: int, d_mlp: int, d_vocab: int, max_len: int) -> int:
    """Parameters of the dense model of these shapes (paper block), known before any weight is built."""
    return (d_vocab + max_len) * D + n_layers * (4 * n_heads * D * d_head + 2 * D * d_mlp + d_mlp + D)


def sparse_block(ab: SparseAttentionBuilder, mb: SparseMLPBuilder, cfg):
    """The :class:`~iclconstruct.runtime.sparse.SparseBlock` of one layer, from its sparse builders."""
    heads = ab.heads(cfg.d_head)
    return SparseBlock.from_parts(cfg, heads, mb.parts(cfg.d_mlp), Block)
