"""The float64 RAW interpreter: the reference semantics of every program.

It executes the ops of a :class:`~iclconstruct.lang.program.Program` one after another on
the hidden state ``H`` (numpy, ``(B, T, D)``), exactly — no approximation constants —
following the read–arithmetic–write operator of Definition C.2 (``docs/concepts.md`` §3).
Compiled models are tested against it at every boundary.

Checks (``check=True``): inputs finite and within the program's bounds, every written
slot within its declared bound, every ``div`` divisor at least ``div_min`` in
magnitude. They raise the library's exceptions naming the op and the slot, so a
program that would leave the range of its approximation constants fails loudly here
and in the compiled model alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ..numerics.constants import Constants
from .checks import BOUND_SLACK, bound_advice, check_divisor, check_guards, check_inputs, check_written
from ..errors import ContextTooLongError, NonFiniteError, ShapeError
from .embedding import DEFAULT_MAX_LEN, system_rows
from .layout import Layout
from .ops import Aff, Count, Div, Mov, Mul, Op, Sum
from .program import Program
from .validate import as_int, as_real_array

__all__ = ["interpret", "Trace", "apply_op", "check_op", "embed_reference", "readout"]


@dataclass
class Trace:
    """Result of :func:`interpret`.

    Attributes:
        H: final hidden state ``(B, T, D)``.
        output: the readout, ``(B, n_x)`` at x̃ columns or ``(B, T)`` for ``columns='all'``.
        snapshots: ``H`` after each unit of ``steps`` (only with ``record=True``).
        layout: the program's layout (to read slots: ``trace.slot('w')``).
    """

    H: np.ndarray
    output: Optional[np.ndarray]
    layout: Layout
    snapshots: List[np.ndarray] = field(default_factory=list)

    def slot(self, name: str, H: Optional[np.ndarray] = None) -> np.ndarray:
        """Values of slot ``name``, ``(B, T, size)``."""
        return self.layout.view(self.H if H is None else H, name)


def embed_reference(program: Program, tokens: np.ndarray, *, max_len: Optional[int] = None,
                    check: bool = True) -> np.ndarray:
    """Initial ``H`` for ``tokens`` ``(B, T, d+1)``: inputs in ``y``/``x``; ``pos``, ``one`` and
    ``is_y`` as the compiled model's embedding sets them (:func:`~iclconstruct.lang.embedding.system_rows`).

    The LayerNorm anchors, ``pair`` and ``bal`` are compiler internals; the reference leaves them 0.
    ``max_len`` (default: ``program.max_len``, set for a compiled model's program, else
    :data:`~iclconstruct.lang.embedding.DEFAULT_MAX_LEN`) is the ``P`` of the position units.
    """
    max_len = _position_scale(program, max_len)
    tok = np.asarray(tokens, dtype=np.float64)
    lay = program.layout
    if tok.ndim == 2:
        tok = tok[None]
    if tok.ndim != 3 or tok.shape[-1] != lay.d + 1:
        raise ShapeError(
            f"tokens must be (B, T, d+1) = (B, T, {lay.d + 1}) for this program; got shape {tuple(tok.shape)}"
        )
    if not np.isfinite(tok).all():
        raise NonFiniteError("tokens contain NaN or infinity; pass finite inputs")
    B, T, _ = tok.shape
    if T > max_len:
        raise ContextTooLongError(f"{T} tokens exceed max_len={max_len} of the position units; "
                                  f"pass (or compile with) max_len >= {T}")
    if check:
        _check_inputs(program, tok)
    H = np.zeros((B, T, lay.size))
    lay.view(H, "y")[...] = tok[..., :1]
    lay.view(H, "x")[...] = tok[..., 1:]
    for name, values in system_rows(np.arange(T), max_len).items():
        lay.view(H, name)[...] = values
    return H


def _check_inputs(program: Program, tok: np.ndarray) -> None:
    absmax = lambda a: float(np.abs(a).max()) if a.size else 0.0
    check_inputs(program.layout, absmax(tok[..., :1]), absmax(tok[..., 1:]))
    check_guards(program.guards, tok)


def _add_affine(val: np.ndarray, H: np.ndarray, lay: Layout, terms, bias) -> np.ndarray:
    """``val + Σ W·h[slot] + bias``: the affine part shared by ``mul`` (``plus=``) and ``aff``."""
    for s, W in terms:
        val = val + lay.view(H, s) @ W.T
    if bias is not None:
        val = val + bias
    return val


def apply_op(op: Op, H: np.ndarray, lay: Layout) -> None:
    """Execute ``op`` on ``H`` in place (exact semantics)."""
    if isinstance(op, Mov):
        src = lay.view(H, op.src).copy()
        T = H.shape[1]
        if op.read.kind == "offset":
            idx = np.maximum(np.arange(T) - op.read.k, 0)
            val = src[:, idx]
        elif op.read.kind == "position":
            idx = np.minimum(op.read.k, np.arange(T))
            val = src[:, idx]
        else:
            j = np.arange(T)
            member = np.ones(T) if op.read.k == 0 else (j % 2 == op.read.k - 1).astype(float)
            count = np.cumsum(member)
            empty = count == 0  # no member yet: hard attention spreads over all columns
            weight = np.where(empty[None, :], 1.0, member[:, None] * 1.0)  # (j, t) -> weight
            weight = np.where(j[:, None] <= j[None, :], weight, 0.0)
            weight = weight / weight.sum(axis=0, keepdims=True)
            val = np.einsum("jt,bjk->btk", weight, src)
        lay.view(H, op.dst)[...] = val
    elif isinstance(op, Mul):
        a, b, c = op.shape
        A = lay.view(H, op.lhs).reshape(H.shape[:2] + (a, b))
        Bm = lay.view(H, op.rhs).reshape(H.shape[:2] + (b, c))
        val = op.coef * np.matmul(A, Bm).reshape(H.shape[:2] + (a * c,))
        lay.view(H, op.dst)[...] = _add_affine(val, H, lay, op.plus, op.bias)
    elif isinstance(op, Div):
        c = np.abs(lay.view(H, op.divisor))
        q = op.coef * lay.view(H, op.src) / c
        if op.accumulate:
            lay.view(H, op.dst)[...] += q
        else:
            lay.view(H, op.dst)[...] = q
    elif isinstance(op, Aff):
        val = np.zeros(H.shape[:2] + (lay[op.dst].size,))
        lay.view(H, op.dst)[...] = _add_affine(val, H, lay, op.terms, op.bias)
    elif isinstance(op, Count):
        T = H.shape[1]
        lay.view(H, op.dst)[...] = ((np.arange(T) + 1) // 2).astype(np.float64)[None, :, None]
    elif isinstance(op, Sum):
        is_y = (np.arange(H.shape[1]) % 2 == 1).astype(np.float64)[None, :, None]
        lay.view(H, op.dst)[...] = op.scale * np.cumsum(lay.view(H, op.src) * is_y, axis=1)
    else:  # pragma: no cover
        raise TypeError(f"unknown op {op!r}")


def check_op(op: Op, H: np.ndarray, lay: Layout, constants: Constants, where: str, *, before: bool,
             program: Optional[Program] = None) -> None:
    """Range checks around ``op``: divisor magnitude (before) and the written slot's bound (after)."""
    if before:
        if isinstance(op, Div):
            c = np.abs(lay.view(H, op.divisor))
            check_divisor(where, op.describe(), op.divisor, float(c.min()) if c.size else np.inf, constants.div_min,
                          op.min_abs, BOUND_SLACK * max(1.0, op.min_abs), advice=bound_advice(program, op.divisor))
        return
    vals = lay.view(H, op.writes())
    check_written(where, op.describe(), lay[op.writes()], float(np.abs(vals).max()) if vals.size else 0.0,
                  advice=bound_advice(program, op.writes()))


def _position_scale(program: Program, max_len: Optional[int]) -> int:
    if max_len is None:
        max_len = getattr(program, "max_len", None) or DEFAULT_MAX_LEN
    return as_int(max_len, "max_len", min=2)


def interpret(program: Program, tokens, *, constants: Optional[Constants] = None, check: bool = True,
              record: bool = False, max_len: Optional[int] = None) -> Trace:
    """Run ``program`` on ``tokens`` ``(B, T, d+1)`` exactly, in float64, one op after another.

    Args:
        program: the program.
        tokens: ``(B, T, d+1)`` (numpy or torch), e.g. from :func:`iclconstruct.tokens.encode`.
        constants: only used for ``div_min`` in the checks.
        check: raise on inputs or values outside their declared bounds, on inputs the
            program's guards refuse, and on small divisors.
        record: keep a snapshot of ``H`` after every op.
        max_len: the ``P`` of the position units in ``pos`` (as :func:`iclconstruct.compile`'s
            ``max_len``); longer inputs raise. Default: ``program.max_len`` — for
            ``model.program`` the model's own, so both paths see the same ``pos`` — else 1025.

    To replay a compiled model's schedule sublayer by sublayer, see
    :func:`iclconstruct.testing.replay_schedule`.
    """
    constants = constants or Constants()
    tok = as_real_array(tokens, "tokens")  # refuses complex, object, meta-device and None inputs
    max_len = _position_scale(program, max_len)
    H = embed_reference(program, tok, max_len=max_len, check=check)
    lay = program.layout
    snaps: List[np.ndarray] = []
    T = H.shape[1]
    idx = 0
    for seg in program.segments:
        for it in range(seg.times(T) if seg.ops else 0):
            for j, op in enumerate(seg.ops):
                tag = f"op {idx + j}" + (f" (loop iteration {it})" if seg.repeat != 1 else "")
                if check:
                    check_op(op, H, lay, constants, tag, before=True)
                apply_op(op, H, lay)
                if check:
                    check_op(op, H, lay, constants, tag, before=False, program=program)
                if record:
                    snaps.append(H.copy())
        idx += len(seg.ops)
    return Trace(H=H, output=readout(program, H), layout=lay, snapshots=snaps)


def readout(program: Program, H):
    """The program's readout from a residual tensor ``H`` ``(B, T, D)`` (numpy or torch): the
    first row of the readout slot at x̃ columns ``(B, ⌈T/2⌉)`` or at every column ``(B, T)``."""
    if program.readout_slot is None:
        return None
    out = H[..., program.layout.row(program.readout_slot)]
    return out[:, 0::2] if program.readout_columns == "x" else out
