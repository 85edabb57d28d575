"""Compile a :class:`~iclconstruct.lang.program.Program` into a :class:`ConstructedTransformer`.

Passes: :func:`~iclconstruct.compiler.schedule.schedule` packs ops into layers (Lemma 7); then,
per layer, an :class:`~iclconstruct.compiler.builders.AttentionBuilder` and an
:class:`~iclconstruct.compiler.builders.MLPBuilder` turn the ops into weights; finally the
embedding (token channels into ``y``/``x``, position units, the constant row, the
column-type flag and the LayerNorm anchors) and the readout row are set. No weight is
written by hand outside these builders.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch

from ..numerics.constants import Constants
from ..numerics.ranges import operand_scales
from ..errors import ICLConstructError
from ..lang.layout import Layout
from ..lang.ops import Aff, Div, Mov, Mul
from .builders import AttentionBuilder, MLPBuilder, balance, position_units
from ..lang.program import Program
from .schedule import LayerPlan, schedule

__all__ = ["compile", "BLOCK_STYLES"]

#: block styles the compiler can emit. "paper": Eq. 4 (LayerNorm only before the MLP).
BLOCK_STYLES = ("paper",)


def _coeffs(lay: Layout, D: int, terms, dst_size: int) -> np.ndarray:
    """``(dst_size, D)`` matrix for ``Σ W·h[slot]``."""
    M = np.zeros((dst_size, D))
    for name, W in terms:
        s = lay[name]
        M[:, s.start : s.stop] += W
    return M


def _bias_coeffs(lay: Layout, D: int, bias, size: int) -> np.ndarray:
    """Bias as coefficients on the constant row ``one`` (exact in attention, folded in MLPs)."""
    M = np.zeros((size, D))
    if bias is not None:
        M[:, lay["one"].start] = bias
    return M


def _attention(plan: LayerPlan, lay: Layout, D: int, c: Constants, max_len: int) -> AttentionBuilder:
    ab = AttentionBuilder(lay, D, c, max_len)
    for op in plan.attn_ops:
        if isinstance(op, Mov):
            ab.move(op.read, lay.rows(op.src), lay.rows(op.dst))
        elif isinstance(op, Aff):
            n = lay[op.dst].size
            ab.overwrite(lay.rows(op.dst), _coeffs(lay, D, op.terms, n) + _bias_coeffs(lay, D, op.bias, n))
        else:  # pragma: no cover - the scheduler never does this
            raise ICLConstructError(f"{op.describe()} cannot run in an attention sublayer")
    one = lay["one"].start
    anchor, pair = lay.rows("anchor"), lay.rows("pair")
    if plan.divisor is not None:
        # Lemma 8 set-up: pair <- (+M c, -M c), anchors <- 0, div targets cleared
        m = np.zeros((2, D))
        cr = lay[plan.divisor].start
        m[0, cr] = c.div_scale
        m[1, cr] = -c.div_scale
        ab.overwrite(pair, m)
        ab.overwrite(anchor)
        for op in plan.mlp_ops:
            if not op.accumulate:
                ab.overwrite(lay.rows(op.writes()))
    elif plan.reset:
        m = np.zeros((2, D))
        m[0, one] = c.ln_anchor
        m[1, one] = -c.ln_anchor
        ab.overwrite(anchor, m)
        ab.overwrite(pair)
    return ab


def _mlp(plan: LayerPlan, lay: Layout, D: int, c: Constants, scales) -> MLPBuilder:
    mb = MLPBuilder(lay, D, c, divide=plan.divisor is not None)
    for op in plan.mlp_ops:
        dst = lay[op.writes()]
        if isinstance(op, Div):
            src = lay[op.src]
            for i in range(dst.size):
                C = np.zeros(D)
                C[src.start + i] = op.coef
                mb.linear(dst.start + i, C, 0.0, f"{op.dst}[{i}] {'+' if op.accumulate else ''}= {op.src}[{i}]/|{op.divisor}|")
            continue
        if isinstance(op, Mul):
            lin = _coeffs(lay, D, op.plus, dst.size) + _bias_coeffs(lay, D, op.bias, dst.size)
        elif isinstance(op, Aff):
            lin = _coeffs(lay, D, op.terms, dst.size) + _bias_coeffs(lay, D, op.bias, dst.size)
        else:  # pragma: no cover
            raise ICLConstructError(f"{op.describe()} cannot run in an MLP sublayer")
        lin[np.arange(dst.size), list(dst.rows)] -= 1.0  # overwrite: subtract the old value
        for i in range(dst.size):
            if np.any(lin[i]):
                mb.linear(dst.start + i, lin[i], 0.0, f"{op.dst}[{i}] linear")
        if isinstance(op, Mul):
            a, b, cc = op.shape
            L, R = lay[op.lhs], lay[op.rhs]
            s_l, s_r = scales.get(id(op), (L.bound, R.bound))  # the operands' ranges at this op
            for i in range(a):
                for j in range(cc):
                    for k in range(b):
                        x = np.zeros(D)
                        y = np.zeros(D)
                        x[L.start + i * b + k] = 1.0
                        y[R.start + k * cc + j] = 1.0
                        mb.product(dst.start + i * cc + j, x, y, s_l, s_r, op.coef,
                                   f"{op.dst}[{i * cc + j}] += {op.lhs}[{i * b + k}]*{op.rhs}[{k * cc + j}]")
    return mb


def compile(program: Program, *, constants: Optional[Constants] = None, dtype: torch.dtype = torch.float64,
            max_len: int = 1025, block: str = "paper", width: Optional[int] = None):
    """Compile ``program`` into a :class:`~iclconstruct.compiler.model.ConstructedTransformer`.

    Args:
        program: the program (must have a readout).
        constants: approximation constants; default :meth:`Constants.for_dtype` of ``dtype``.
        dtype: ``torch.float64`` (default) or ``torch.float32`` (larger, documented error).
        max_len: most tokens the position units support (``T ≤ max_len``); larger values
            enlarge attention logits (``A·T²``), see ``Constants.attn_hardness``.
        block: block style. ``'paper'`` is Eq. 4 (LayerNorm in front of the MLP only);
            other styles (pre-LN) are planned and raise for now.
        width: residual width ``D``; default: the rows the layout uses.
    """
    from .model import ConstructedTransformer, LayerWeights

    if block not in BLOCK_STYLES:
        raise ICLConstructError(f"block={block!r} is not supported yet; available: {', '.join(BLOCK_STYLES)}")
    if dtype not in (torch.float64, torch.float32):
        raise ICLConstructError(f"dtype must be torch.float64 or torch.float32; got {dtype}")
    if int(max_len) != max_len or max_len < 2:
        raise ICLConstructError(f"max_len must be an integer >= 2; got {max_len!r}")
    program.check_complete()
    constants = constants or Constants.for_dtype(dtype)
    lay = program.layout
    D = lay.size if width is None else int(width)
    if D < lay.size:
        from ..errors import WidthOverflowError

        raise WidthOverflowError(f"width={D} is smaller than the {lay.size} rows the program uses; raise width")
    sched = schedule(program)
    scales = operand_scales(program, constants.div_min)
    builders = []
    for seg in sched.segments:
        for plan in seg.layers:
            builders.append((_attention(plan, lay, D, constants, max_len), _mlp(plan, lay, D, constants, scales)))
    n_heads = max([ab.n_heads() for ab, _ in builders] + [1])
    d_head = max([ab.d_head() for ab, _ in builders] + [2])
    d_mlp = max([len(mb) for _, mb in builders] + [1])
    layers: List[LayerWeights] = []
    for ab, mb in builders:
        heads = ab.heads(d_head)
        layers.append(LayerWeights(heads=heads, mlp=mb.weights(d_mlp)))
    # embedding: tokens -> y/x rows; positions -> position units, constant, flag, anchors
    W_E = np.zeros((lay.d + 1, D))
    W_E[0, lay["y"].start] = 1.0
    for i in range(lay.d):
        W_E[1 + i, lay["x"].start + i] = 1.0
    W_pos = np.zeros((max_len, D))
    j = np.arange(max_len)
    u1, u2 = position_units(j, max_len)
    W_pos[:, lay["pos"].start] = u1
    W_pos[:, lay["pos"].start + 1] = u2
    W_pos[:, lay["one"].start] = 1.0
    W_pos[:, lay["is_y"].start] = j % 2
    W_pos[:, lay["anchor"].start] = constants.ln_anchor
    W_pos[:, lay["anchor"].start + 1] = -constants.ln_anchor
    W_E = balance(W_E, lay["bal"].start)
    W_pos = balance(W_pos, lay["bal"].start)
    return ConstructedTransformer(
        program=program,
        schedule=sched,
        constants=constants,
        layers=layers,
        W_E=W_E,
        W_pos=W_pos,
        n_heads=n_heads,
        d_head=d_head,
        d_mlp=d_mlp,
        d_model=D,
        max_len=int(max_len),
        dtype=dtype,
        block=block,
        operand_scales=scales,
    )
