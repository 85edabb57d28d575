"""Programs: ordered lists of primitives over named slots, with weight-tied loops.

A :class:`Program` is what a user writes; :func:`iclconstruct.interpret` runs it exactly
(numpy, float64) and :func:`iclconstruct.compile` turns it into a transformer. All
checks that do not depend on data happen here, when the op is added: unknown or freed
slots, slots never written, shape mismatches, reads from later positions.

Example — the running mean of ``y·x`` over the prefix (the "averaging" predictor)::

    p = Program(d=3)
    p.slot("yx", 3)
    p.mul("y", "x", "yx")                 # y·x at every column (0 at x̃ columns)
    ...
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import CausalityError, ICLConstructError, LayoutError, ShapeError, UnwrittenSlotError
from .layout import INPUT_SLOTS, SYSTEM_SLOTS, Layout
from .ops import Aff, Div, Mov, Mul, Op, Read

__all__ = ["Program", "Segment"]

#: system slots a user op may read (never write)
READABLE_SYSTEM = ("pos", "one", "is_y")

TermsArg = Union[Mapping[str, object], Sequence[Tuple[str, object]], None]


@dataclass
class Segment:
    """A run of ops executed ``repeat`` times (``'examples'``: once per (x, y) example in the input)."""

    ops: List[Op] = field(default_factory=list)
    repeat: Union[int, str] = 1

    def times(self, T: int) -> int:
        if self.repeat == "examples":
            return T // 2
        return int(self.repeat)


class Program:
    """An ordered list of ``mov``/``mul``/``div``/``aff`` ops over named slots.

    Args:
        d: input dimension (tokens have ``d + 1`` channels: ``y`` then ``x``).
        x_bound, y_bound: largest ``|x_i|`` and ``|y|`` the program is meant for; inputs
            beyond them raise :class:`~iclconstruct.errors.OutOfRangeError`.
        width: optional fixed residual width (allocation past it raises).
        name: a label used in summaries and saved files.
    """

    def __init__(self, d: int, *, x_bound: float = 10.0, y_bound: float = 10.0,
                 width: Optional[int] = None, name: str = "program"):
        self.layout = Layout(d, width=width, x_bound=x_bound, y_bound=y_bound)
        self.name = name
        self.segments: List[Segment] = [Segment()]
        self._written = set(INPUT_SLOTS) | set(READABLE_SYSTEM)
        self._in_loop = False
        self.readout_slot: Optional[str] = None
        self.readout_columns = "x"
        self._ops_total = 0
        #: free-form description of what built the program (circuits record their arguments)
        self.meta: dict = {}
        #: input guards run by the interpreter and the compiled model alike (records with a
        #: ``check(tokens)`` method, e.g. :class:`~iclconstruct.lang.checks.StepStability`)
        self.guards: list = []

    # ------------------------------------------------------------------ properties
    @property
    def d(self) -> int:
        return self.layout.d

    @property
    def ops(self) -> List[Op]:
        """All ops in program order (loop bodies listed once)."""
        return [op for seg in self.segments for op in seg.ops]

    def __len__(self) -> int:
        return self._ops_total

    def __repr__(self) -> str:
        return f"Program({self.name!r}, d={self.d}, ops={len(self)}, rows={self.layout.size})"

    def listing(self) -> str:
        """A numbered text listing of the program, loops indented."""
        lines, i = [], 0
        for seg in self.segments:
            if not seg.ops:
                continue
            ind = ""
            if seg.repeat != 1:
                lines.append(f"loop x {seg.repeat}:")
                ind = "    "
            for op in seg.ops:
                lines.append(f"{ind}{i:3d}  {op.describe()}")
                i += 1
        return "\n".join(lines)

    # ------------------------------------------------------------------ slots
    def slot(self, name: str, size: int, bound: float = 10.0, at: Optional[int] = None) -> str:
        """Allocate a user slot of ``size`` rows whose values stay within ``±bound``; returns its name."""
        if self._in_loop:
            raise LayoutError("allocate slots before the loop: a weight-tied loop body cannot allocate")
        if name in SYSTEM_SLOTS or name in INPUT_SLOTS:
            raise LayoutError(f"slot name {name!r} is reserved; choose another name")
        self.layout.alloc(name, size, bound=bound, at=at)
        return name

    def free(self, name: str) -> None:
        """Free a slot: later ``slot()`` calls may reuse its rows; reading it afterwards raises."""
        if self._in_loop:
            raise LayoutError("free slots after the loop: a weight-tied loop body cannot free")
        self.layout.free(name)
        self._written.discard(name)

    @contextlib.contextmanager
    def loop(self, times: Union[int, str] = "examples") -> Iterator["Program"]:
        """Ops added inside the ``with`` block form one weight-tied block run ``times`` times.

        ``times='examples'`` repeats the block once per (x, y) example of the input
        (``T // 2`` times), so the compiled model's parameters do not grow with ``n``.
        """
        if self._in_loop:
            raise ICLConstructError("loops cannot be nested")
        if times != "examples" and (int(times) != times or int(times) < 1):
            raise ICLConstructError(f"loop times must be 'examples' or a positive integer; got {times!r}")
        self._in_loop = True
        self.segments.append(Segment(repeat=times))
        try:
            yield self
        finally:
            self._in_loop = False
            self.segments.append(Segment())

    def readout(self, slot: str, columns: str = "x") -> None:
        """Declare the model output: the first row of ``slot`` at x̃ columns (``'x'``) or every column (``'all'``)."""
        s = self._readable(slot, "readout")
        if columns not in ("x", "all"):
            raise ICLConstructError(f"readout columns must be 'x' or 'all'; got {columns!r}")
        if s.size != 1:
            raise ShapeError(f"readout slot {slot!r} must have 1 row; it has {s.size}")
        self.readout_slot = slot
        self.readout_columns = columns

    # ------------------------------------------------------------------ checks
    def _readable(self, name: str, what: str):
        if not isinstance(name, str):
            raise ShapeError(f"{what}: slot names are strings; got {name!r}")
        if name in ("anchor", "pair", "bal"):
            raise LayoutError(f"{what}: slot {name!r} is internal to the compiler and cannot be read")
        s = self.layout.live(name)
        if name not in self._written:
            raise UnwrittenSlotError(f"{what}: slot {name!r} is read before any op writes it; write it first")
        return s

    def _writable(self, name: str, what: str):
        if not isinstance(name, str):
            raise ShapeError(f"{what}: slot names are strings; got {name!r}")
        if name in SYSTEM_SLOTS:
            raise LayoutError(f"{what}: slot {name!r} belongs to the system and cannot be written")
        return self.layout.live(name)

    def _matrix(self, w, rows: int, cols: int, what: str) -> np.ndarray:
        a = np.asarray(w, dtype=np.float64)
        if a.ndim == 0:
            if rows != cols:
                raise ShapeError(f"{what}: a scalar weight needs equal sizes; got {rows} <- {cols}; pass a ({rows}, {cols}) matrix")
            a = float(a) * np.eye(rows)
        elif a.ndim == 1 and rows == cols == a.shape[0]:
            a = np.diag(a)
        if a.shape != (rows, cols):
            raise ShapeError(f"{what}: weight must have shape ({rows}, {cols}); got {a.shape}")
        if not np.isfinite(a).all():
            raise ShapeError(f"{what}: weight contains NaN or infinity")
        return a

    def _terms(self, terms: TermsArg, dst_size: int, what: str):
        items = list(terms.items()) if isinstance(terms, Mapping) else list(terms or [])
        out = []
        for name, w in items:
            s = self._readable(name, what)
            out.append((name, self._matrix(w, dst_size, s.size, f"{what} term {name!r}")))
        return tuple(out)

    def _bias(self, bias, size: int, what: str):
        if bias is None:
            return None
        b = np.asarray(bias, dtype=np.float64)
        if b.ndim == 0:
            b = np.full(size, float(b))
        if b.shape != (size,):
            raise ShapeError(f"{what}: bias must have shape ({size},); got {b.shape}")
        if not np.isfinite(b).all():
            raise ShapeError(f"{what}: bias contains NaN or infinity")
        return b

    def _add(self, op: Op) -> Op:
        self.segments[-1].ops.append(op)
        self._written.add(op.writes())
        self._ops_total += 1
        return op

    # ------------------------------------------------------------------ the four primitives
    def mov(self, src: str, dst: str, *, offset: Optional[int] = None, position: Optional[int] = None,
            mean: Union[bool, str] = False) -> Op:
        """``dst[t] ← src[t − offset]`` (attention, one head). Source first, destination last.

        Exactly one of ``offset`` (k ≥ 0 columns back; ``t − k < 0`` reads column 0),
        ``position`` (absolute column ``p``; columns ``t < p`` read themselves) or
        ``mean=True`` (the RAW averaging read: mean of ``src`` over columns ``0..t``;
        ``mean='y'`` or ``mean='x'`` averages over the ỹ or x̃ columns among them only, falling
        back to all columns while the set is still empty).
        """
        what = "mov"
        chosen = [offset is not None, position is not None, bool(mean)]
        if sum(chosen) == 0:
            offset = 1
        elif sum(chosen) > 1:
            raise ICLConstructError("mov: give exactly one of offset=, position= or mean=True")
        if offset is not None:
            if int(offset) != offset:
                raise ShapeError(f"mov: offset must be an integer; got {offset!r}")
            if offset < 0:
                raise CausalityError(
                    f"mov: offset={offset} would read from a later position; attention is causal, use offset >= 0"
                )
            read = Read("offset", int(offset))
        elif position is not None:
            if int(position) != position or position < 0:
                raise CausalityError(f"mov: position must be a non-negative integer; got {position!r}")
            read = Read("position", int(position))
        else:
            sets = {True: 0, "all": 0, "x": 1, "y": 2}
            if mean not in sets:
                raise ICLConstructError(f"mov: mean must be True, 'all', 'x' or 'y'; got {mean!r}")
            read = Read("mean", sets[mean])
        s = self._readable(src, what)
        t = self._writable(dst, what)
        if s.size != t.size:
            raise ShapeError(f"mov: {src!r} has {s.size} rows but {dst!r} has {t.size}; sizes must match")
        return self._add(Mov(src, dst, read))

    def mul(self, lhs: str, rhs: str, dst: str, shape: Optional[Tuple[int, int, int]] = None, *,
            coef: float = 1.0, plus: TermsArg = None, bias=None) -> Op:
        """``dst ← coef·(A₁ @ A₂) + Σ W·h[s] + bias`` per column (MLP, GeLU product trick).

        ``A₁`` is ``lhs`` read as an ``a×b`` matrix (row-major), ``A₂`` is ``rhs`` as ``b×c``,
        ``dst`` receives the ``a×c`` product. ``shape=(a, b, c)`` may be omitted for a dot
        product, an outer product or a scalar times a vector. ``plus``/``bias`` add affine
        terms in the same MLP (no extra layer).
        """
        what = "mul"
        L = self._readable(lhs, what)
        R = self._readable(rhs, what)
        D = self._writable(dst, what)
        if shape is None:
            shape = _infer_mul_shape(L.size, R.size, D.size)
            if shape is None:
                raise ShapeError(
                    f"mul: cannot infer the shape of {lhs!r} ({L.size} rows) @ {rhs!r} ({R.size} rows) -> "
                    f"{dst!r} ({D.size} rows); pass shape=(a, b, c)"
                )
        if len(shape) != 3 or any(int(v) != v or v < 1 for v in shape):
            raise ShapeError(f"mul: shape must be three positive integers (a, b, c); got {shape!r}")
        a, b, c = (int(v) for v in shape)
        for nm, sl, need, lab in ((lhs, L, a * b, "a*b"), (rhs, R, b * c, "b*c"), (dst, D, a * c, "a*c")):
            if sl.size != need:
                raise ShapeError(
                    f"mul: shape {(a, b, c)} needs {need} rows ({lab}) in {nm!r}, which has {sl.size}"
                )
        if not np.isfinite(coef):
            raise ShapeError(f"mul: coef must be finite; got {coef!r}")
        return self._add(Mul(lhs, rhs, dst, (a, b, c), float(coef), self._terms(plus, D.size, what),
                             self._bias(bias, D.size, what)))

    def div(self, src: str, divisor: str, dst: str, *, coef: float = 1.0, accumulate: bool = False) -> Op:
        """``dst ← coef·src / |divisor|`` per column (LayerNorm, Lemma 8). ``divisor`` has 1 row.

        With ``accumulate=True`` the quotient is *added*: ``dst ← dst + coef·src/|divisor|``
        (the residual connection does the addition, so no extra layer is needed).
        Otherwise ``dst`` must not overlap ``src`` (the layer clears ``dst`` before the MLP
        writes it).
        """
        what = "div"
        S = self._readable(src, what)
        C = self._readable(divisor, what)
        if accumulate:
            self._readable(dst, what)
        D = self._writable(dst, what)
        if C.size != 1:
            raise ShapeError(f"div: divisor {divisor!r} must have 1 row; it has {C.size}")
        if S.size != D.size:
            raise ShapeError(f"div: {src!r} has {S.size} rows but {dst!r} has {D.size}; sizes must match")
        if not accumulate and set(S.rows) & set(D.rows):
            raise LayoutError(f"div: dst {dst!r} overlaps src {src!r}; divide into a separate slot")
        if set(C.rows) & set(D.rows):
            raise LayoutError(f"div: dst {dst!r} overlaps divisor {divisor!r}; divide into a separate slot")
        if not np.isfinite(coef):
            raise ShapeError(f"div: coef must be finite; got {coef!r}")
        return self._add(Div(src, divisor, dst, float(coef), bool(accumulate)))

    def aff(self, dst: str, terms: TermsArg = None, bias=None) -> Op:
        """``dst ← Σ W·h[s] + bias`` per column (``terms``: ``{slot: W}``; W a matrix, vector (diagonal) or scalar)."""
        what = "aff"
        D = self._writable(dst, what)
        t = self._terms(terms, D.size, what)
        b = self._bias(bias, D.size, what)
        return self._add(Aff(dst, t, b))

    # ------------------------------------------------------------------ helpers
    def slot_bound(self, name: str) -> float:
        return self.layout[name].bound

    def check_complete(self) -> None:
        """Raise if the program cannot be compiled or run (no readout, empty)."""
        if self.readout_slot is None:
            raise ICLConstructError("program has no readout; call program.readout(slot)")
        if not self.layout.is_live(self.readout_slot):
            raise ICLConstructError(f"readout slot {self.readout_slot!r} was freed; read out a live slot")


def _infer_mul_shape(nl: int, nr: int, nd: int):
    if nl == nr and nd == 1:
        return (1, nl, 1)  # dot product
    if nl == 1 and nd == nr:
        return (1, 1, nr)  # scalar * row vector
    if nr == 1 and nd == nl:
        return (nl, 1, 1)  # column vector * scalar
    if nd == nl * nr:
        return (nl, 1, nr)  # outer product
    return None
