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
import copy
import math
from dataclasses import dataclass, field
from typing import Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ArgumentError, CausalityError, ICLConstructError, LayoutError, ShapeError, UnwrittenSlotError
from .validate import as_float, as_int
from .guards import InputGuard
from .layout import INPUT_SLOTS, SYSTEM_SLOTS, Layout
from .ops import Aff, Count, Div, Mov, Mul, Op, Read, Sum

__all__ = ["Program", "Segment", "repeat_times", "EVENT_KINDS"]

#: system slots a user op may read (never write)
READABLE_SYSTEM = ("pos", "one", "is_y")

TermsArg = Union[Mapping[str, object], Sequence[Tuple[str, object]], None]


@dataclass
class Segment:
    """A run of ops executed ``repeat`` times (``'examples'``: once per (x, y) example in the input)."""

    ops: List[Op] = field(default_factory=list)
    repeat: Union[int, str] = 1

    def times(self, T: int) -> int:
        """How often the segment runs on ``T`` tokens (the one place loop counts are computed)."""
        return repeat_times(self.repeat, T)


def repeat_times(repeat: Union[int, str], T: int) -> int:
    """``T // 2`` (one run per example) for ``repeat='examples'``, else ``repeat``."""
    return T // 2 if repeat == "examples" else int(repeat)


#: kinds of :attr:`Program.events`, in the order a program may record them
EVENT_KINDS = ("slot", "free", "loop", "end", "op", "guard", "readout")


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
        self._frozen = False
        #: the ``P`` of the position units ``pos`` (set on the frozen copy a compiled model owns;
        #: ``None``: the interpreter's default, :data:`~iclconstruct.lang.embedding.DEFAULT_MAX_LEN`)
        self.max_len: Optional[int] = None
        #: everything the program was built from, in order: ``(kind, *args)`` tuples with kind
        #: in :data:`EVENT_KINDS` — ``('slot', name, size, bound, start)``, ``('free', name)``,
        #: ``('loop', times)``, ``('end',)``, ``('op', op)``, ``('guard', guard)``,
        #: ``('readout', slot, columns)``. :meth:`replay` rebuilds the program from it.
        self.events: List[tuple] = []
        self._count_slots: set = set()  # slots whose last writer is count()
        #: conditions on the input examples the program refuses to run outside (data, saved with it)
        self.guards: List[InputGuard] = []
        #: free-form description of what built the program (circuits record their arguments)
        self.meta: dict = {}

    # ------------------------------------------------------------------ properties
    @property
    def d(self) -> int:
        return self.layout.d

    @property
    def ops(self) -> List[Op]:
        """All ops in program order (loop bodies listed once)."""
        return [op for seg in self.segments for op in seg.ops]

    def __len__(self) -> int:
        return sum(len(seg.ops) for seg in self.segments)

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
        self._mutable("slot")
        if self._in_loop:
            raise LayoutError("allocate slots before the loop: a weight-tied loop body cannot allocate")
        if name in SYSTEM_SLOTS or name in INPUT_SLOTS:
            raise LayoutError(f"slot name {name!r} is reserved; choose another name")
        s = self.layout.alloc(name, size, bound=bound, at=at)
        self.events.append(("slot", s.name, s.size, s.bound, self.layout.first_row(s.name)))
        return name

    def free(self, name: str) -> None:
        """Free a slot: later ``slot()`` calls may reuse its rows; reading it afterwards raises."""
        self._mutable("free")
        if self._in_loop:
            raise LayoutError("free slots after the loop: a weight-tied loop body cannot free")
        self.layout.free(name)
        self._written.discard(name)
        self._count_slots.discard(name)
        self.events.append(("free", name))

    @contextlib.contextmanager
    def loop(self, times: Union[int, str] = "examples") -> Iterator["Program"]:
        """Ops added inside the ``with`` block form one weight-tied block run ``times`` times.

        ``times='examples'`` repeats the block once per (x, y) example of the input
        (``T // 2`` times), so the compiled model's parameters do not grow with ``n``.
        """
        self._mutable("loop")
        if self._in_loop:
            raise ICLConstructError("loops cannot be nested")
        if times != "examples":
            try:
                times = as_int(times, "loop times", min=1)
            except ArgumentError:
                raise ICLConstructError(f"loop times must be 'examples' or a positive integer; got {times!r}") from None
        self._in_loop = True
        self.segments.append(Segment(repeat=times))
        self.events.append(("loop", times))
        try:
            yield self
        finally:
            self._in_loop = False
            self.segments.append(Segment())
            self.events.append(("end",))

    def readout(self, slot: str, columns: str = "x") -> None:
        """Declare the model output: the first row of ``slot`` at x̃ columns (``'x'``) or every column (``'all'``)."""
        self._mutable("readout")
        s = self._readable(slot, "readout")
        if columns not in ("x", "all"):
            raise ICLConstructError(f"readout columns must be 'x' or 'all'; got {columns!r}")
        if s.size != 1:
            raise ShapeError(f"readout slot {slot!r} must have 1 row; it has {s.size}")
        self.readout_slot = slot
        self.readout_columns = columns
        self.events.append(("readout", slot, columns))

    def guard(self, guard: InputGuard) -> InputGuard:
        """Refuse inputs that violate ``guard`` (checked by the interpreter and the compiled model alike)."""
        self._mutable("guard")
        if not isinstance(guard, InputGuard):
            raise ICLConstructError(f"guard must be an iclconstruct.lang.guards.InputGuard; got {guard!r}")
        self.guards.append(guard)
        self.events.append(("guard", guard))
        return guard

    # ------------------------------------------------------------------ copies
    @classmethod
    def replay(cls, events, *, d: int, x_bound: float = 10.0, y_bound: float = 10.0,
               width: Optional[int] = None, name: str = "program") -> "Program":
        """A new program built by replaying ``events`` (see :attr:`events`) through the public API.

        Every construction-time check runs again, so a corrupted event list raises the same
        errors as the corresponding hand-written program would.
        """
        p = cls(d, x_bound=x_bound, y_bound=y_bound, width=width, name=name)
        loop = None
        for ev in events:
            kind = ev[0]
            if kind == "slot":
                p.slot(ev[1], ev[2], bound=ev[3], at=ev[4])
            elif kind == "free":
                p.free(ev[1])
            elif kind == "loop":
                loop = p.loop(ev[1])
                loop.__enter__()
            elif kind == "end":
                if loop is None:
                    raise ICLConstructError("replay: an 'end' event without an open loop")
                loop.__exit__(None, None, None)
                loop = None
            elif kind == "op":
                p._add(p._checked(ev[1]))
            elif kind == "guard":
                p.guard(ev[1])
            elif kind == "readout":
                p.readout(ev[1], columns=ev[2])
            else:
                raise ICLConstructError(f"replay: unknown event kind {kind!r}; expected one of {EVENT_KINDS}")
        if loop is not None:
            raise ICLConstructError("replay: a loop is never closed (missing 'end' event)")
        return p

    def copy(self) -> "Program":
        """An independent, editable copy (same events, same ``meta``)."""
        c = Program.replay(self.events, d=self.d, x_bound=self.layout["x"].bound, y_bound=self.layout["y"].bound,
                           width=self.layout.width, name=self.name)
        c.meta = copy.deepcopy(self.meta)
        c.max_len = self.max_len
        return c

    def frozen(self, max_len: Optional[int] = None) -> "Program":
        """A copy that refuses every further change to its slots, ops, loops, guards and readout.

        A compiled model keeps one, so editing the program after :func:`iclconstruct.compile`
        cannot desynchronise the model from what it saves. (``meta``, a free-form
        description, stays assignable.) ``max_len`` records the model's position scale, so
        that :func:`~iclconstruct.lang.interpreter.interpret` gives ``pos`` the model's values.
        """
        c = self.copy()
        c.max_len = self.max_len if max_len is None else int(max_len)
        c._frozen = True
        c.layout.freeze()
        c.segments = tuple(Segment(tuple(seg.ops), seg.repeat) for seg in c.segments)
        c.events = tuple(c.events)
        c.guards = tuple(c.guards)
        return c

    @property
    def is_frozen(self) -> bool:
        return self._frozen

    def _mutable(self, what: str) -> None:
        if self._frozen:
            raise ICLConstructError(
                f"{what}: this program is frozen (it belongs to a compiled model); edit the Program you "
                f"compiled, or program.copy(), and compile again"
            )

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
        return _readonly(a)

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
        return _readonly(b)

    def _add(self, op: Op) -> Op:
        self._mutable(op.kind)
        if self._in_loop and not isinstance(op, Count):
            self._check_loop_count_write(op)
        self.segments[-1].ops.append(op)
        self._written.add(op.writes())
        self._count_slots.discard(op.writes())
        if isinstance(op, Count):
            self._count_slots.add(op.dst)
        self.events.append(("op", op))
        return op

    def _check_loop_count_write(self, op: Op) -> None:
        """Refuse overwriting, inside a loop body, a count slot that an earlier ``sum(count=)`` of the
        body reads before the body writes it: from the second iteration on, that sum would read
        this op's value instead of the count (the model multiplies by the slot; the sum is exact)."""
        dst = op.writes()
        written_before = False
        for prev in self.segments[-1].ops:
            if isinstance(prev, Sum) and prev.count == dst and not written_before:
                raise ICLConstructError(
                    f"{op.kind}: {dst!r} is the count= of {prev.describe()} earlier in this loop body, which "
                    f"reads it before the body writes it; from the second iteration on it would read this "
                    f"{op.kind} instead of a count. Write {dst!r} with program.count() before the sum inside "
                    f"the loop, or use another slot"
                )
            if prev.writes() == dst:
                written_before = True

    def _checked(self, op: Op) -> Op:
        """``op`` re-validated against this program (as if it were written with the public API)."""
        if isinstance(op, Mov):
            r = op.read
            kw = {"offset": r.k} if r.kind == "offset" else {"position": r.k} if r.kind == "position" else \
                {"mean": Read.MEAN_SETS[r.k]}
            return self._build_mov(op.src, op.dst, **kw)
        if isinstance(op, Mul):
            return self._build_mul(op.lhs, op.rhs, op.dst, op.shape, coef=op.coef, plus=op.plus, bias=op.bias)
        if isinstance(op, Div):
            return self._build_div(op.src, op.divisor, op.dst, coef=op.coef, accumulate=op.accumulate, min_abs=op.min_abs)
        if isinstance(op, Aff):
            return self._build_aff(op.dst, op.terms, op.bias)
        if isinstance(op, Count):
            return self._build_count(op.dst)
        if isinstance(op, Sum):
            return self._build_sum(op.src, op.dst, count=op.count, scale=op.scale)
        raise ICLConstructError(f"unknown op {op!r}; expected Mov, Mul, Div, Aff, Count or Sum")

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
        return self._add(self._build_mov(src=src, dst=dst, offset=offset, position=position, mean=mean))

    def _build_mov(self, src: str, dst: str, *, offset: Optional[int] = None, position: Optional[int] = None,
                   mean: Union[bool, str] = False) -> Op:
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
        return Mov(src, dst, read)

    def mul(self, lhs: str, rhs: str, dst: str, shape: Optional[Tuple[int, int, int]] = None, *,
            coef: float = 1.0, plus: TermsArg = None, bias=None) -> Op:
        """``dst ← coef·(A₁ @ A₂) + Σ W·h[s] + bias`` per column (MLP, GeLU product trick).

        ``A₁`` is ``lhs`` read as an ``a×b`` matrix (row-major), ``A₂`` is ``rhs`` as ``b×c``,
        ``dst`` receives the ``a×c`` product. ``shape=(a, b, c)`` may be omitted for a dot
        product, an outer product or a scalar times a vector. ``plus``/``bias`` add affine
        terms in the same MLP (no extra layer).
        """
        return self._add(self._build_mul(lhs=lhs, rhs=rhs, dst=dst, shape=shape, coef=coef, plus=plus, bias=bias))

    def _build_mul(self, lhs: str, rhs: str, dst: str, shape: Optional[Tuple[int, int, int]] = None, *,
                   coef: float = 1.0, plus: TermsArg = None, bias=None) -> Op:
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
        return Mul(lhs, rhs, dst, (a, b, c), float(coef), self._terms(plus, D.size, what),
                   self._bias(bias, D.size, what))

    def div(self, src: str, divisor: str, dst: str, *, coef: float = 1.0, accumulate: bool = False,
            min_abs: float = 0.0) -> Op:
        """``dst ← coef·src / |divisor|`` per column (LayerNorm, Lemma 8). ``divisor`` has 1 row.

        With ``accumulate=True`` the quotient is *added*: ``dst ← dst + coef·src/|divisor|``
        (the residual connection does the addition, so no extra layer is needed).
        Otherwise ``dst`` must not overlap ``src`` (the layer clears ``dst`` before the MLP
        writes it). ``min_abs``: a lower bound of ``|divisor|`` that holds for every input
        (ridge's ``c = 1 + xᵀA⁻¹x ≥ 1``); the interpreter and the model refuse a divisor below it,
        and the certificate (docs/certificate.md) divides by it instead of ``Constants.div_min``.
        """
        return self._add(self._build_div(src=src, divisor=divisor, dst=dst, coef=coef, accumulate=accumulate,
                                         min_abs=min_abs))

    def _build_div(self, src: str, divisor: str, dst: str, *, coef: float = 1.0, accumulate: bool = False,
                   min_abs: float = 0.0) -> Op:
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
        if isinstance(min_abs, bool) or not isinstance(min_abs, (int, float, np.floating)) or not (
                math.isfinite(min_abs) and min_abs >= 0):
            raise ShapeError(f"div: min_abs must be a finite number >= 0 (a lower bound of |{divisor}|); got {min_abs!r}")
        return Div(src, divisor, dst, float(coef), bool(accumulate), float(min_abs))

    def aff(self, dst: str, terms: TermsArg = None, bias=None) -> Op:
        """``dst ← Σ W·h[s] + bias`` per column (``terms``: ``{slot: W}``; W a matrix, vector (diagonal) or scalar)."""
        return self._add(self._build_aff(dst=dst, terms=terms, bias=bias))

    def _build_aff(self, dst: str, terms: TermsArg = None, bias=None) -> Op:
        what = "aff"
        D = self._writable(dst, what)
        t = self._terms(terms, D.size, what)
        b = self._bias(bias, D.size, what)
        return Aff(dst, t, b)

    # ------------------------------------------------------------------ reductions over the examples
    def count(self, dst: str) -> Op:
        """``dst ← ⌊(t + 1)/2⌋``: the number of (x, y) examples at or before column ``t`` (exact).

        An affine map of the position units (attention self head or MLP bypass); ``dst``
        needs 1 row and a bound of at least the number of examples the model will see.
        """
        return self._add(self._build_count(dst))

    def _build_count(self, dst: str) -> Op:
        D = self._writable(dst, "count")
        if D.size != 1:
            raise ShapeError(f"count: dst {dst!r} must have 1 row; it has {D.size}")
        return Count(dst)

    def sum(self, src: str, dst: str, *, count: Optional[str] = None, scale: float = 1.0) -> Op:
        """``dst ← scale·Σ src`` over the ỹ columns ``j ≤ t``: the exact sum over the examples seen so far.

        The RAW averaging read over the ỹ columns (Definition C.2) times the example count
        (Lemma 4): one attention and the MLP of the same layer. ``src`` is summed where the
        examples are (ỹ columns); ``dst``'s bound must cover the largest sum. ``count``: a
        slot last written by :meth:`count` to multiply with (more accurate than the default,
        which forms the count from the position units inside the MLP). ``scale`` (default 1):
        a constant factor, the coefficient of that product, so the unscaled sum is never
        written; carry a sum that grows with ``n`` in small units (e.g. ``1/max_n``) to keep
        the column, and LayerNorm's read error (Lemma 6), small.
        """
        return self._add(self._build_sum(src, dst, count=count, scale=scale))

    def _build_sum(self, src: str, dst: str, *, count: Optional[str] = None, scale: float = 1.0) -> Op:
        S = self._readable(src, "sum")
        D = self._writable(dst, "sum")
        if count is not None:
            self._readable(count, "sum")
            if count not in self._count_slots:
                raise ICLConstructError(f"sum: count={count!r} must be a slot last written by program.count()")
        if S.size != D.size:
            raise ShapeError(f"sum: {src!r} has {S.size} rows but {dst!r} has {D.size}; sizes must match")
        if set(self.layout.rows(src)) & set(self.layout.rows(dst)):
            raise LayoutError(f"sum: dst {dst!r} overlaps src {src!r}; sum into a separate slot")
        if count is not None and set(self.layout.rows(count)) & set(self.layout.rows(dst)):
            # the averaging read writes the mean into dst in the attention, before the MLP multiplies
            # it by the count: the count would be gone (the model would compute mean·mean)
            raise LayoutError(f"sum: dst {dst!r} overlaps count={count!r}; the mean overwrites the count before the "
                              f"product reads it — sum into a separate slot")
        scale = as_float(scale, "sum: scale")
        return Sum(src, dst, count, scale)

    # ------------------------------------------------------------------ helpers
    def check_complete(self) -> None:
        """Raise if the program cannot be compiled or run (no readout, empty)."""
        if self._in_loop:
            raise ICLConstructError("the program's loop is still open; compile or run it after the `with p.loop():` block")
        if self.readout_slot is None:
            raise ICLConstructError("program has no readout; call program.readout(slot)")
        if not self.layout.is_live(self.readout_slot):
            raise ICLConstructError(f"readout slot {self.readout_slot!r} was freed; read out a live slot")


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only float64 copy: an op's matrices cannot change after it is recorded."""
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


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
