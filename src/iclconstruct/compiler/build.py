"""Compile a :class:`~iclconstruct.lang.program.Program` into a :class:`ConstructedTransformer`.

Passes: :func:`~iclconstruct.compiler.schedule.schedule` packs ops into layers (Lemma 7) and
declares each layer's footprint (:class:`~iclconstruct.compiler.schedule.LayerPlan`); then,
per layer, an :class:`~iclconstruct.compiler.attention.AttentionBuilder` (hard attention,
the averaging read, the set-ups of Lemmas 6 and 8) and an
:class:`~iclconstruct.compiler.mlp.MLPBuilder` (Lemmas 4 and 5) turn the ops into weights;
finally :func:`embedding` writes the token channels, the system rows and the LayerNorm
anchors. Every weight comes from one of the lemma functions; this module only says which.
"""
from __future__ import annotations

from dataclasses import replace
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..numerics.aposteriori import spec_for
from ..numerics.recompute import recompute_spec
from ..numerics.constants import Constants
from ..numerics.ranges import operand_scales
from ..errors import ArgumentError, ICLConstructError, WidthOverflowError
from ..lang.layout import Layout
from ..lang.ops import Aff, Count, Div, Mov, Mul, Read, Sum
from ..lang.embedding import DEFAULT_MAX_LEN, count_terms, system_rows
from .attention import AttentionBuilder
from .layernorm import balance, division_setup, layernorm_bypass, restore_anchors, restore_anchors_pre_ln
from .mlp import MLPBuilder, product_units
from ..lang.program import Program
from .config import BLOCK_STYLES, ConstructedTransformerConfig
from .model import ConstructedTransformer, LayerWeights, block_segments
from .schedule import LayerPlan, schedule
from .admissible import check_constants
from .sparse_build import dense_param_count, shapes as sparse_shapes, sparse_block, sparse_builders

__all__ = ["compile", "BLOCK_STYLES", "SPARSE_AUTO_PARAMS", "MAX_DENSE_BYTES"]

#: ``compile(sparse=False)`` refuses a dense model whose weights would take more bytes than this
MAX_DENSE_BYTES = 8 * 2 ** 30

#: ``compile(sparse='auto')`` switches to sparse blocks above this many (dense) parameters
SPARSE_AUTO_PARAMS = 20_000_000


def _attention(plan: LayerPlan, lay: Layout, D: int, c: Constants, max_len: int,
               pre_ln: bool = False) -> Tuple[AttentionBuilder, float]:
    """The attention sublayer of ``plan`` and the ``unscale`` its MLP needs (Lemma 6 or 8).

    GPT-2-style block (``pre_ln``): the heads read ``LayerNorm(h)`` too (anchors
    ``Constants.pre_ln_anchor``), and after a div layer only the pair is cleared here.
    """
    K = c.pre_ln_anchor if pre_ln else c.ln_anchor
    ab = AttentionBuilder(lay, D, c.attn_hardness, max_len,
                          unscale=layernorm_bypass(lay, K, D).unscale if pre_ln else None)
    for op in plan.attn_ops:
        if isinstance(op, Mov):
            ab.move(op.read, op.src, op.dst)
        elif isinstance(op, Aff):
            ab.overwrite(op.dst, lay.coeffs(op.terms, op.bias, size=lay[op.dst].size, width=D))
        elif isinstance(op, Count):
            ab.overwrite(op.dst, lay.coeffs(count_terms(max_len), size=1, width=D))
        else:  # pragma: no cover - the scheduler never does this
            raise ICLConstructError(f"{op.describe()} cannot run in an attention sublayer")
    for op in plan.mlp_ops:  # a sum's averaging read over the ỹ columns; its MLP multiplies by the count
        if isinstance(op, Sum):
            ab.move(Read("mean", 2), op.src, op.dst)
    if plan.divisor is not None:
        return ab, division_setup(ab, lay, plan.divisor, plan.cleared, c.div_scale, K if pre_ln else None)
    if plan.reset and pre_ln:
        restore_anchors_pre_ln(None, ab, lay, K)
    elif plan.reset:
        restore_anchors(ab, lay, K)
    return ab, layernorm_bypass(lay, K, D).unscale


def _mlp(plan: LayerPlan, lay: Layout, D: int, c: Constants, unscale: float, max_len: int, scales=None,
         pre_ln: bool = False) -> MLPBuilder:
    scales = scales or {}
    mb = MLPBuilder(lay, D, unscale, c.bypass_scale, divide=plan.divisor is not None, pre_ln=pre_ln)
    if pre_ln and plan.divisor is not None:
        restore_anchors_pre_ln(mb, None, lay, c.pre_ln_anchor)
    for op in plan.mlp_ops:
        n = lay[op.dst].size
        if isinstance(op, Div):
            z = lay.coeffs({op.src: op.coef * np.eye(n)}, size=n, width=D)
            for i in range(n):
                mb.linear(op.dst, i, z[i],
                          f"{op.dst}[{i}] {'+' if op.accumulate else ''}= {op.src}[{i}]/|{op.divisor}|")
            continue
        if isinstance(op, Count):
            mb.linear(op.dst, 0, lay.coeffs(dict(count_terms(max_len), **{op.dst: -np.eye(1)}), size=1, width=D)[0],
                      f"{op.dst} = count", cancel_mean=True)  # (max_len/2)·pos₀ amplifies LayerNorm's round-off
            continue
        if isinstance(op, Sum):
            _sum_units(mb, op, lay, D, c.product_scale, max_len, c.product_order)
            continue
        if not isinstance(op, (Mul, Aff)):  # pragma: no cover
            raise ICLConstructError(f"{op.describe()} cannot run in an MLP sublayer")
        terms, bias = (op.plus, op.bias) if isinstance(op, Mul) else (op.terms, op.bias)
        # overwrite: the affine part minus the old value
        lin = lay.coeffs(tuple(terms) + ((op.dst, -np.eye(n)),), bias, size=n, width=D)
        for i in range(n):
            if np.any(lin[i]):
                mb.linear(op.dst, i, lin[i], f"{op.dst}[{i}] linear")
        if isinstance(op, Mul):
            _products(mb, op, lay, D, c, scales)
    return mb


def _products(mb: MLPBuilder, op: Mul, lay: Layout, D: int, c: Constants, scales) -> None:
    """``dst[i, j] += coef·Σ_k lhs[i, k]·rhs[k, j]`` (row-major ``a×b`` times ``b×c``), one Lemma 4 product each.

    The operands are scaled by their ranges at this op (:func:`iclconstruct.numerics.ranges.operand_scales`).
    """
    a, b, cc = op.shape
    s_x, s_y = scales.get(id(op), (lay[op.lhs].bound, lay[op.rhs].bound))
    N, order = c.product_scale, c.product_order
    for i in range(a):
        for j in range(cc):
            for k in range(b):
                x, y = lay.unit(op.lhs, i * b + k, D), lay.unit(op.rhs, k * cc + j, D)
                label = f"{op.dst}[{i * cc + j}] += {op.lhs}[{i * b + k}]*{op.rhs}[{k * cc + j}]"
                mb.add(op.dst, i * cc + j, product_units(x, y, s_x, s_y, op.coef, N, label, order=order))


def _sum_units(mb: MLPBuilder, op: Sum, lay: Layout, D: int, N: float, max_len: int, order: int = 2) -> None:
    """``dst ← scale·mean·count``: the attention left the mean over the ỹ columns in ``dst`` (Lemma 4
    product; ``scale`` is its coefficient, so the unscaled sum is never written)."""
    if op.count is None:
        cnt, s_y = lay.coeffs(count_terms(max_len), size=1, width=D)[0], 0.5 * max_len
    else:
        cnt, s_y = lay.unit(op.count, 0, D), lay[op.count].bound
    s_x = lay[op.src].bound
    for i in range(lay[op.dst].size):
        x = lay.unit(op.dst, i, D)
        mb.linear(op.dst, i, -x, f"{op.dst}[{i}] clear mean")
        mb.add(op.dst, i, product_units(x, cnt, s_x, s_y, op.scale, N, f"{op.dst}[{i}] = mean({op.src}[{i}])*count"
                                        + ("" if op.scale == 1.0 else f"*{op.scale:g}"),
                                        order=order), cancel_mean=op.count is None)


def embedding(lay: Layout, D: int, c: Constants, max_len: int, K: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(W_E, W_pos)``: token channels into ``y``/``x``; per position the units of ``pos``,
    ``one``, ``is_y`` (:func:`iclconstruct.lang.embedding.system_rows`) and the anchors of Lemma 6, balanced."""
    W_E = np.zeros((lay.d + 1, D))
    W_E[0] = lay.unit("y", 0, D)
    for i in range(lay.d):
        W_E[1 + i] = lay.unit("x", i, D)
    W_pos = np.zeros((max_len, D))
    for name, values in system_rows(np.arange(max_len), max_len).items():
        lay.view(W_pos, name)[...] = values
    K = c.ln_anchor if K is None else K
    lay.view(W_pos, "anchor")[...] = layernorm_bypass(lay, K, D).anchors @ lay.unit("one", 0, D)
    return balance(W_E, lay), balance(W_pos, lay)


def _sparse_model(program, sched, constants, scales, plans, sb, D, n_heads, d_head, d_mlp, max_len, dtype):
    """The paper-block model built sparse from the start (:mod:`iclconstruct.compiler.sparse_build`):
    every block a :class:`~iclconstruct.runtime.sparse.SparseBlock` made from sparse entries."""
    lay = program.layout
    W_E, W_pos = embedding(lay, D, constants, max_len)
    config = ConstructedTransformerConfig(
        n_layers=len(plans), d_model=D, n_heads=n_heads, d_head=d_head, d_mlp=d_mlp, d_vocab=lay.d + 1,
        max_len=int(max_len), segments=tuple((len(seg.layers), seg.repeat) for seg in sched.segments),
        block="paper", act_fn=constants.activation, ln_eps=constants.ln_eps, dtype=dtype)
    model = ConstructedTransformer(config, program=program, schedule=sched, constants=constants, layers=iter(()),
                                   W_E=W_E, W_pos=W_pos, operand_scales=scales)
    sb.reverse()
    for plan in plans:
        ab, mb = sb.pop()  # each layer's entries are dropped once its block is made
        model.blocks.append(sparse_block(ab, mb, config))
        model.plans.append(plan)
        del ab, mb
    return model


def compile(program: Program, *, constants: Optional[Constants] = None, dtype: torch.dtype = torch.float64,
            max_len: int = DEFAULT_MAX_LEN, block: str = "paper", width: Optional[int] = None, device=None,
            sparse=False, activation: Optional[str] = None, max_dense_bytes: Optional[int] = MAX_DENSE_BYTES):
    """Compile ``program`` into a :class:`~iclconstruct.compiler.model.ConstructedTransformer`.

    Args:
        program: the program (must have a readout).
        constants: approximation constants. ``None`` (default): :meth:`Constants.for_dtype` of ``dtype`` and
            ``block``, with, in float64 and the paper block, the LayerNorm anchor and division scale
            (``ln_anchor = div_scale``) chosen for the program: the value on a grid whose certificate at one
            example is smallest (:func:`iclconstruct.numerics.autoconst.choose_constants`; the table is kept in
            ``model.constant_search``). ``'auto'``: that search in any dtype (paper block only). A
            :class:`Constants`: used as given.
        dtype: ``torch.float64`` (default) or ``torch.float32`` (larger, documented error).
        max_len: most tokens the position units support (``T ≤ max_len``); larger values
            enlarge attention logits (``A·T²``), see ``Constants.attn_hardness``.
        block: block style. ``'paper'`` is Eq. 4 (LayerNorm in front of the MLP only).
            ``'pre_ln'`` is the GPT-2 / TransformerLens block (LayerNorm in front of attention
            and of the MLP, attention with biases); the attention-side LayerNorm is made
            harmless with the anchors of Lemma 6 (``Constants.pre_ln_anchor``), so any program
            compiles unchanged. It is the block that exports
            (:meth:`~iclconstruct.compiler.model.ConstructedTransformer.to_transformer_lens`,
            :meth:`~iclconstruct.compiler.model.ConstructedTransformer.to_hf`).
        width: residual width ``D``; default: the rows the layout uses (for ``'pre_ln'``
            rounded up to a multiple of ``d_head``, at least ``n_heads·d_head``, as Hugging
            Face GPT-2's ``n_embd = n_head·head_dim`` needs).
        activation: shorthand for ``Constants.activation``: ``'gelu'`` (exact, default) or
            ``'gelu_new'`` (GPT-2's tanh GeLU).
        device: where the model lives (``'cpu'``, ``'cuda'``, a ``torch.device``); inputs follow it.
        sparse: ``True`` runs the blocks on structured-sparse weights
            (:mod:`iclconstruct.runtime.sparse`); ``'auto'`` does so above
            ``SPARSE_AUTO_PARAMS`` (dense) parameters, a count made from the layer shapes before
            any weight is built. In the paper block the sparse model is built sparse from the
            start (:mod:`iclconstruct.compiler.sparse_build`: no dense ``(D × d_mlp)`` or
            ``(D × d_head)`` matrix is ever formed, so e.g. ridge at d = 64 fits in a few GB);
            Sparse blocks run the paper block only: ``block='pre_ln'`` with ``sparse=True``
            raises :class:`~iclconstruct.errors.ArgumentError` and with ``'auto'`` stays dense.
            ``model.to_dense()`` gives the dense model back, equal to ``sparse=False``'s
            (``torch.equal``; exact zeros may lose their sign).
        max_dense_bytes: a dense paper-block model whose weights would take more bytes than this
            (counted from the layer shapes, before any is built) is refused with
            :class:`~iclconstruct.errors.ArgumentError` naming ``sparse`` instead of running out of
            memory; ``None`` lifts the limit (default ``MAX_DENSE_BYTES`` = 8 GiB).
    """
    if sparse not in (True, False, "auto"):
        raise ICLConstructError(f"sparse must be True, False or 'auto'; got {sparse!r}")
    if sparse is True and block == "pre_ln":
        raise ArgumentError("sparse=True: sparse blocks run the paper block (Eq. 4) only, not block='pre_ln' "
                            "(no LayerNorm in front of attention, no attention biases); use block='paper' or sparse=False")
    if block not in BLOCK_STYLES:
        raise ICLConstructError(f"block={block!r} is not supported yet; available: {', '.join(BLOCK_STYLES)}")
    if dtype not in (torch.float64, torch.float32):
        Constants.for_dtype(dtype)  # always raises here: names dtype (and the error bfloat16/float16 round-off forces)
    if int(max_len) != max_len or max_len < 2:
        raise ICLConstructError(f"max_len must be an integer >= 2; got {max_len!r}")
    program.check_complete()
    program = program.frozen(max_len=max_len)  # the model owns this copy: later edits of the caller's program do not reach it
    if program.readout_slot is not None and spec_for(program) is None:
        # each readout is checked a posteriori against the float64 interpreter with a rigorous round-off
        # bound (numerics.recompute) and refused beyond the stated accuracy (docs/certificate.md,
        # "A-posteriori bound: any program")
        program.meta = {**(program.meta or {}), "aposteriori": recompute_spec()}
    if isinstance(constants, str) and constants != "auto":
        raise ArgumentError(f"constants must be a Constants, 'auto' or None; got {constants!r}")
    if constants == "auto" and block != "paper":
        raise ArgumentError("constants='auto' chooses the paper block's anchors by its certificate; "
                            f"block={block!r} takes explicit constants or None (its defaults)")
    # None: the certificate's choice of anchors in float64 (paper block), the measured defaults otherwise
    search = constants == "auto" or (constants is None and block == "paper" and dtype == torch.float64)
    constants = Constants.for_dtype(dtype, block=block) if constants is None or constants == "auto" else constants
    if activation is not None:
        constants = replace(constants, activation=activation)
    pre_ln = block == "pre_ln"
    lay = program.layout
    D = lay.size if width is None else int(width)
    if D < lay.size:
        raise WidthOverflowError(f"width={D} is smaller than the {lay.size} rows the program uses; raise width")
    check_constants(constants, lay, dtype, D)  # value-independent errors within the stated accuracy
    sched = schedule(program)
    scales = operand_scales(program, constants.div_min)

    plans = [plan for seg in sched.segments for plan in seg.layers]
    constant_search = None
    if search and program.readout_slot is not None:
        constants, constant_search = _choose_anchors(program, sched, plans, scales, constants, lay, D, dtype, max_len)

    def builders(D):
        """Each layer's (attention, MLP) builders, one layer at a time: a layer's units are
        dropped before the next layer's are made (at d = 16 Newton's units alone take GBs)."""
        for plan in plans:
            ab, unscale = _attention(plan, lay, D, constants, max_len, pre_ln)
            yield ab, _mlp(plan, lay, D, constants, unscale, max_len, scales, pre_ln)

    def shapes(D):
        """``(n_heads, d_head, d_mlp)`` over all layers (a pass that keeps no weights)."""
        n_heads, d_head, d_mlp = 1, 2, 1
        for ab, mb in builders(D):
            n_heads, d_head, d_mlp = max(n_heads, ab.n_heads()), max(d_head, ab.d_head()), max(d_mlp, len(mb))
        return n_heads, d_head, d_mlp

    if not pre_ln:  # sizes from the sparse builders, before any dense weight
        sb = sparse_builders(plans, lay, D, constants, max_len, scales)
        n_heads, d_head, d_mlp = sparse_shapes(sb)
        n_dense = dense_param_count(len(plans), D, n_heads, d_head, d_mlp, lay.d + 1, int(max_len))
        if sparse is True or (sparse == "auto" and n_dense > SPARSE_AUTO_PARAMS):
            model = _sparse_model(program, sched, constants, scales, plans, sb, D, n_heads, d_head, d_mlp,
                                  max_len, dtype)
            model.constant_search = constant_search
            return model if device is None else model.to(device)
        del sb
        nbytes = n_dense * torch.empty((), dtype=dtype).element_size()
        if max_dense_bytes is not None and nbytes > max_dense_bytes:
            raise ArgumentError(f"sparse={sparse!r}: the dense model would hold {n_dense:,} parameters "
                                f"({nbytes / 2 ** 30:.1f} GiB > max_dense_bytes={max_dense_bytes:,}); pass sparse=True "
                                "or sparse='auto' (built sparse from the start), or raise max_dense_bytes")
    else:  # pre_ln; the paper block took its shapes from the sparse builders (the same cfg: test_sparse_build)
        n_heads, d_head, d_mlp = shapes(D)
    if pre_ln and width is None and D != max(-(-D // d_head), n_heads) * d_head:
        D = max(-(-D // d_head), n_heads) * d_head  # GPT-2: n_embd = n_head·head_dim
        d_mlp = shapes(D)[2]  # heads as sized at the layout's width, as before the rounding

    def layers():
        """Each layer's weights, built when the model asks for them and installed before the next is
        built, so compiling needs the model's parameters plus one layer of temporaries."""
        for ab, mb in builders(D):
            lw = LayerWeights(heads=ab.heads(d_head), mlp=mb.weights(d_mlp))
            del ab, mb
            yield lw
            del lw  # the model has installed it

    W_E, W_pos = embedding(lay, D, constants, max_len, constants.pre_ln_anchor if pre_ln else None)
    config = ConstructedTransformerConfig(
        n_layers=len(plans), d_model=D, n_heads=n_heads, d_head=d_head, d_mlp=d_mlp, d_vocab=lay.d + 1,
        max_len=int(max_len), segments=tuple((len(seg.layers), seg.repeat) for seg in sched.segments),
        block=block, act_fn=constants.activation, ln_eps=constants.ln_eps, dtype=dtype)
    model = ConstructedTransformer(config, program=program, schedule=sched, constants=constants, layers=layers(),
                                   W_E=W_E, W_pos=W_pos, operand_scales=scales)
    model.constant_search = constant_search
    return model if device is None else model.to(device)


def _choose_anchors(program, sched, plans, scales, constants, lay, D, dtype, max_len):
    """``(constants, table)``: the anchors ``K = M`` whose certificate at one example is smallest
    (:func:`iclconstruct.numerics.autoconst.choose_constants`), from the layer shapes alone."""
    from ..numerics.autoconst import ModelStructure, choose_constants

    n_heads, d_head, d_mlp = sparse_shapes(sparse_builders(plans, lay, D, constants, max_len, scales))
    st = ModelStructure(program=program, layout=lay, constants=constants, dtype=dtype, d_model=D, n_heads=n_heads,
                        d_head=d_head, d_mlp=d_mlp, max_len=int(max_len), plans=plans, _segments=block_segments(sched),
                        operand_scales=scales)
    return choose_constants(st, n_examples=1 if max_len >= 3 else 0)
