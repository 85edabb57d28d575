"""The float64 RAW interpreter: the reference semantics of every program.

It executes the ops of a :class:`~iclconstruct.lang.program.Program` one after another on
the hidden state ``H`` (numpy, ``(B, T, D)``), exactly — no approximation constants —
following the read–arithmetic–write operator of Definition C.2 (constructions.md §3).
Compiled models are tested against it at every boundary.

Checks (``check=True``): inputs finite and within the program's bounds, every written
slot within its declared bound, every ``div`` divisor at least ``div_min`` in
magnitude. They raise the library's exceptions naming the op and the slot, so a
program that would leave the range of its approximation constants fails loudly here
and in the compiled model alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..numerics.constants import Constants
from .checks import check_divisor, check_inputs, check_written
from ..errors import ContextTooLongError, NonFiniteError, ShapeError
from .layout import Layout
from .ops import Aff, Div, Mov, Mul, Op
from .program import Program

__all__ = ["interpret", "Trace", "apply_op", "embed_reference"]


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
        s = self.layout[name]
        return (self.H if H is None else H)[..., s.start : s.stop]


def embed_reference(program: Program, tokens: np.ndarray, *, max_len: Optional[int] = None,
                    check: bool = True) -> np.ndarray:
    """Initial ``H`` for ``tokens`` ``(B, T, d+1)``: inputs in ``y``/``x``, ``one`` and ``is_y`` set.

    Position units and LayerNorm anchors are compiler internals; the reference leaves them 0.
    """
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
    if max_len is not None and T > max_len:
        raise ContextTooLongError(f"{T} tokens exceed the model's max_len={max_len}; compile with a larger max_len")
    if check:
        _check_inputs(program, tok)
        for guard in getattr(program, "guards", ()):
            guard.check(tok)
    H = np.zeros((B, T, lay.size))
    H[..., lay["y"].start] = tok[..., 0]
    H[..., lay["x"].start : lay["x"].stop] = tok[..., 1:]
    H[..., lay["one"].start] = 1.0
    H[..., lay["is_y"].start] = np.arange(T) % 2
    return H


def _check_inputs(program: Program, tok: np.ndarray) -> None:
    absmax = lambda a: float(np.abs(a).max()) if a.size else 0.0
    check_inputs(program.layout, absmax(tok[..., :1]), absmax(tok[..., 1:]))


def _rows(lay: Layout, name: str) -> slice:
    s = lay[name]
    return slice(s.start, s.stop)


def apply_op(op: Op, H: np.ndarray, lay: Layout) -> None:
    """Execute ``op`` on ``H`` in place (exact semantics)."""
    if isinstance(op, Mov):
        src = H[..., _rows(lay, op.src)].copy()
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
        H[..., _rows(lay, op.dst)] = val
    elif isinstance(op, Mul):
        a, b, c = op.shape
        A = H[..., _rows(lay, op.lhs)].reshape(H.shape[:2] + (a, b))
        Bm = H[..., _rows(lay, op.rhs)].reshape(H.shape[:2] + (b, c))
        val = op.coef * np.matmul(A, Bm).reshape(H.shape[:2] + (a * c,))
        for s, W in op.plus:
            val = val + H[..., _rows(lay, s)] @ W.T
        if op.bias is not None:
            val = val + op.bias
        H[..., _rows(lay, op.dst)] = val
    elif isinstance(op, Div):
        c = np.abs(H[..., _rows(lay, op.divisor)])
        q = op.coef * H[..., _rows(lay, op.src)] / c
        if op.accumulate:
            H[..., _rows(lay, op.dst)] += q
        else:
            H[..., _rows(lay, op.dst)] = q
    elif isinstance(op, Aff):
        val = np.zeros(H.shape[:2] + (lay[op.dst].size,))
        for s, W in op.terms:
            val = val + H[..., _rows(lay, s)] @ W.T
        if op.bias is not None:
            val = val + op.bias
        H[..., _rows(lay, op.dst)] = val
    else:  # pragma: no cover
        raise TypeError(f"unknown op {op!r}")


def check_op(op: Op, H: np.ndarray, lay: Layout, constants: Constants, where: str, *, before: bool) -> None:
    """Range checks around ``op``: divisor magnitude (before) and the written slot's bound (after)."""
    if before:
        if isinstance(op, Div):
            c = np.abs(H[..., _rows(lay, op.divisor)])
            check_divisor(where, op.describe(), op.divisor, float(c.min()) if c.size else np.inf, constants.div_min)
        return
    dst = lay[op.writes()]
    vals = H[..., dst.start : dst.stop]
    check_written(where, op.describe(), dst, float(np.abs(vals).max()) if vals.size else 0.0)


def interpret(program: Program, tokens, *, constants: Optional[Constants] = None, check: bool = True,
              record: bool = False, steps: Optional[Sequence[Sequence[Op]]] = None) -> Trace:
    """Run ``program`` on ``tokens`` ``(B, T, d+1)`` exactly, in float64.

    Args:
        program: the program.
        tokens: ``(B, T, d+1)`` (numpy or torch), e.g. from :func:`iclconstruct.tokens.encode`.
        constants: only used for ``div_min`` in the checks.
        check: raise on inputs or values outside their declared bounds, and on small divisors.
        record: keep a snapshot of ``H`` after every op (or every entry of ``steps``).
        steps: execute these groups of ops in this order instead of program order (used to
            replay a compiled model's schedule layer by layer); each group is one snapshot.
    """
    constants = constants or Constants()
    tok = tokens.detach().cpu().numpy() if hasattr(tokens, "detach") else np.asarray(tokens)
    H = embed_reference(program, tok, check=check)
    lay = program.layout
    snaps: List[np.ndarray] = []
    T = H.shape[1]
    if steps is None:
        groups: List[Tuple[str, Sequence[Op]]] = []
        idx = 0
        for seg in program.segments:
            for it in range(seg.times(T) if seg.ops else 0):
                for j, op in enumerate(seg.ops):
                    tag = f"op {idx + j}" + (f" (loop iteration {it})" if seg.repeat != 1 else "")
                    groups.append((tag, [op]))
            idx += len(seg.ops)
    else:
        groups = [(f"step {i}", g) for i, g in enumerate(steps)]
    H_prev = H.copy()  # input of the previous group (stage replay: a div reads its divisor there)
    for tag, group in groups:
        H_in = H.copy()
        if steps is None:
            if check:
                check_op(group[0], H, lay, constants, tag, before=True)
            apply_op(group[0], H, lay)
        else:  # ops of one sublayer run in parallel: all read the same input
            for op in group:
                Hi = H_in.copy()
                if isinstance(op, Div):  # the divisor was read by the attention stage before
                    c = lay[op.divisor]
                    Hi[..., c.start : c.stop] = H_prev[..., c.start : c.stop]
                if check:
                    check_op(op, Hi, lay, constants, tag, before=True)
                apply_op(op, Hi, lay)
                dst = lay[op.writes()]
                H[..., dst.start : dst.stop] = Hi[..., dst.start : dst.stop]
        H_prev = H_in
        if check:
            for op in group:
                check_op(op, H, lay, constants, tag, before=False)
        if record:
            snaps.append(H.copy())
    out = None
    if program.readout_slot is not None:
        r = lay[program.readout_slot].start
        out = H[..., r]
        if program.readout_columns == "x":
            out = out[:, 0::2]
    return Trace(H=H, output=out, layout=lay, snapshots=snaps)
