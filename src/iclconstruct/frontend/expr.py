"""Traced values: the expression DAG that an ``@ic.algorithm`` function builds.

Every arithmetic operation on a traced value creates an :class:`Expr` node that knows
its shape, a per-entry interval ``[lo, hi]`` that contains every value it can take
(interval analysis from ``x_bound``/``y_bound``/``max_n``), its *level* and the source
line that created it. Nodes are hash-consed by their :class:`~.trace.Context`
(common-subexpression reuse): building the same expression twice returns the same node.

Levels say where a value lives in the token sequence (the paper's Eq. 12 layout, docs/concepts.md):

=========  ==========================================================================
``CONST``  the same at every column (``ctx.zeros``, ``ctx.eye``, ``ctx.const``)
``EXAMPLE`` a function of the current example ``(ctx.x, ctx.y)``, at its ỹ column
``STATE``  a loop-carried value inside ``ctx.examples()``
``PREFIX`` a function of the examples seen so far (``ctx.sum``/``mean``/``count``)
=========  ==========================================================================

and ``query`` marks values that read the current x̃ column's input ``ctx.query``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..errors import CausalityError, ICLConstructError, ShapeError

__all__ = ["Expr", "CONST", "EXAMPLE", "STATE", "PREFIX", "FrontendError"]

CONST, EXAMPLE, STATE, PREFIX = 0, 1, 2, 3
LEVEL_NAMES = {CONST: "constant", EXAMPLE: "per-example", STATE: "loop state", PREFIX: "aggregate"}


class FrontendError(ICLConstructError, ValueError):
    """A front-end algorithm cannot be compiled as written (the message names the expression and line)."""


def _interval_mul(alo, ahi, blo, bhi):
    c = np.stack([alo * blo, alo * bhi, ahi * blo, ahi * bhi])
    return c.min(0), c.max(0)


class Expr:
    """A traced tensor of shape ``()``, ``(n,)`` or ``(n, m)``; use it like a numpy array.

    Supports ``+``, ``-``, ``*`` (by a number, a scalar expression, or elementwise),
    ``/`` (by a number or a provably positive scalar expression, Lemma 8), ``@``
    (matrix–vector, vector–vector, matrix–matrix), :meth:`outer` and :attr:`T`.
    """

    __array_ufunc__ = None  # numpy arrays on the left defer to our operators (np.eye(3) @ x)

    def __init__(self, ctx, op: str, args: Tuple["Expr", ...], shape: Tuple[int, ...], lo, hi, level: int,
                 query: bool, param=None, where: str = "", symmetric: bool = False):
        self.ctx = ctx
        self.op = op
        self.args = args
        self.shape = tuple(shape)
        self.lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), self.shape).copy()
        self.hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), self.shape).copy()
        self.level = level
        self.query = query
        self.param = param
        self.where = where
        self.symmetric = symmetric
        self.user_bound: Optional[float] = None
        self.bound_note: Optional[Tuple[Optional[str], str]] = None  # ctx.bound's (arg, source line)
        self.user_interval: Optional[Tuple[float, float]] = None  # ctx.bound's (lo, hi)
        self.user_name: Optional[str] = None  # ctx.name: the slot's name
        self.id = -1

    # ------------------------------------------------------------------ facts
    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=int)) if self.shape else 1

    @property
    def bound(self) -> float:
        """Largest ``|value|`` of any entry (from the interval analysis, or ``ctx.bound``)."""
        return float(max(np.abs(self.lo).max(initial=0.0), np.abs(self.hi).max(initial=0.0)))

    def describe(self) -> str:
        """``'<op> of shape …, created at file:line `code`'`` for error messages."""
        shape = "scalar" if not self.shape else "x".join(map(str, self.shape))
        return f"`{self.op}` ({shape}) at {self.where}"

    def __repr__(self) -> str:
        return f"Expr({self.op}, shape={self.shape}, bound={self.bound:.4g}, {LEVEL_NAMES[self.level]})"

    def __bool__(self):
        raise FrontendError(f"{self.describe()}: a traced value has no truth value; Python `if`/`while` on data "
                            "cannot be compiled (branch on constants only)")

    def __len__(self) -> int:
        if not self.shape:
            raise ShapeError(f"{self.describe()}: a scalar has no length")
        return self.shape[0]

    # ------------------------------------------------------------------ arithmetic
    def _lift(self, other) -> "Expr":
        return other if isinstance(other, Expr) else self.ctx.const(other)

    def __add__(self, other):
        return self.ctx._binary("add", self, self._lift(other))

    def __radd__(self, other):
        return self.ctx._binary("add", self._lift(other), self)

    def __sub__(self, other):
        return self.ctx._binary("add", self, -self._lift(other))

    def __rsub__(self, other):
        return self.ctx._binary("add", self._lift(other), -self)

    def __neg__(self):
        return self.ctx._scale(self, -1.0)

    def __pos__(self):
        return self

    def __mul__(self, other):
        if _is_number(other):
            return self.ctx._scale(self, float(other))
        return self.ctx._product("mul", self, self._lift(other))

    def __rmul__(self, other):
        if _is_number(other):
            return self.ctx._scale(self, float(other))
        return self.ctx._product("mul", self._lift(other), self)

    def __truediv__(self, other):
        if _is_number(other):
            if float(other) == 0.0:
                raise FrontendError(f"{self.describe()}: division by the number 0")
            return self.ctx._scale(self, 1.0 / float(other))
        return self.ctx._divide(self, self._lift(other))

    def __rtruediv__(self, other):
        return self.ctx._divide(self._lift(other), self)

    def __matmul__(self, other):
        return self.ctx._product("matmul", self, self._lift(other))

    def __rmatmul__(self, other):
        return self.ctx._product("matmul", self._lift(other), self)

    def outer(self, other) -> "Expr":
        """The outer product ``self otherᵀ`` of two vectors (``(n,)``, ``(m,)`` → ``(n, m)``)."""
        return self.ctx._product("outer", self, self._lift(other))

    @property
    def T(self) -> "Expr":
        """Transpose (a vector or scalar is its own transpose)."""
        if len(self.shape) < 2 or self.symmetric:
            return self
        return self.ctx._transpose(self)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def check_level_mix(ctx, op: str, args, where: str) -> Tuple[int, bool]:
    """Level and query flag of a node built from ``args``; raise on causally impossible mixes."""
    for a in args:
        if getattr(a, "dead", False):
            raise FrontendError(f"{a.describe()} was computed inside the ctx.examples() loop body and used after "
                                f"it at {where}; only variables assigned in the loop carry over")
    level = max(a.level for a in args)
    query = any(a.query for a in args)
    levels = {a.level for a in args}
    if EXAMPLE in levels and PREFIX in levels:
        ex = next(a for a in args if a.level == EXAMPLE)
        ag = next(a for a in args if a.level == PREFIX)
        raise CausalityError(
            f"`{op}` at {where} combines the current example ({ex.describe()}) with an aggregate over all "
            f"examples ({ag.describe()}): example i would read examples after it. Aggregate the per-example "
            "part first (e.g. ctx.sum(x.outer(x)) @ w instead of ctx.sum(x * (x @ w))), or use ctx.examples()")
    if STATE in levels and PREFIX in levels:
        ag = next(a for a in args if a.level == PREFIX)
        raise CausalityError(f"`{op}` at {where} uses the aggregate {ag.describe()} inside a ctx.examples() loop: "
                             "the state after example i cannot read later examples; compute it after the loop")
    if query and (EXAMPLE in levels or STATE in levels):
        raise CausalityError(f"`{op}` at {where} combines ctx.query with a per-example value: an example cannot "
                             "read the query that comes after it; use ctx.query only in the returned prediction")
    return level, query


def interval_of(op: str, a: Expr, b: Expr):
    """Interval of a product of ``a`` and ``b`` (``op`` in ``mul``/``matmul``/``outer``); squares are ``≥ 0``."""
    same = a is b or (a.op == "transpose" and a.args[0] is b) or (b.op == "transpose" and b.args[0] is a)
    if op == "outer":
        lo, hi = _interval_mul(a.lo[:, None], a.hi[:, None], b.lo[None, :], b.hi[None, :])
        if a is b:
            i = np.arange(a.shape[0])
            sq = np.maximum(a.lo ** 2, a.hi ** 2)
            lo[i, i] = np.where((a.lo <= 0) & (a.hi >= 0), 0.0, np.minimum(a.lo ** 2, a.hi ** 2))
            hi[i, i] = sq
        return lo, hi
    if op == "mul":  # elementwise or scalar x tensor
        if a.shape == ():
            return _interval_mul(a.lo, a.hi, b.lo, b.hi)
        if b.shape == ():
            return _interval_mul(a.lo, a.hi, b.lo, b.hi)
        lo, hi = _interval_mul(a.lo, a.hi, b.lo, b.hi)
        if a is b:
            lo = np.where((a.lo <= 0) & (a.hi >= 0), 0.0, np.minimum(a.lo ** 2, a.hi ** 2))
        return lo, hi
    # matmul: promote vectors to matrices
    A_lo, A_hi = (a.lo[None, :], a.hi[None, :]) if a.lo.ndim == 1 else (a.lo, a.hi)
    B_lo, B_hi = (b.lo[:, None], b.hi[:, None]) if b.lo.ndim == 1 else (b.lo, b.hi)
    lo3, hi3 = _interval_mul(A_lo[:, :, None], A_hi[:, :, None], B_lo[None, :, :], B_hi[None, :, :])
    if same and a.lo.ndim == 1 and b.lo.ndim == 1:  # x @ x: a sum of squares
        lo3 = np.where((a.lo <= 0) & (a.hi >= 0), 0.0, np.minimum(a.lo ** 2, a.hi ** 2))[None, :, None]
    lo, hi = lo3.sum(1), hi3.sum(1)
    shape = (a.shape[:-1] if a.lo.ndim == 2 else ()) + (b.shape[1:] if b.lo.ndim == 2 else ())
    return lo.reshape(shape), hi.reshape(shape)


def product_shape(op: str, a: Expr, b: Expr, where: str) -> Tuple[int, ...]:
    """Result shape of ``a op b``; raise :class:`ShapeError` naming both operands."""
    sa, sb = a.shape, b.shape
    bad = ShapeError(f"`{op}` at {where}: shapes {sa or 'scalar'} and {sb or 'scalar'} do not fit "
                     f"({a.describe()} and {b.describe()})")
    if op == "outer":
        if len(sa) != 1 or len(sb) != 1:
            raise bad
        return (sa[0], sb[0])
    if op == "mul":
        if sa == () or sb == ():
            return sb if sa == () else sa
        if sa != sb:
            raise bad
        return sa
    if len(sa) == 0 or len(sb) == 0 or sa[-1] != sb[0]:
        raise bad
    return sa[:-1] + sb[1:]
