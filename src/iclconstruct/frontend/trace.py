"""Tracing: ``@ic.algorithm`` runs a Python function once on symbolic values.

The function receives a :class:`Context` ``ctx`` and builds :class:`~.expr.Expr` nodes
with numpy-like code; Python loops unroll, ``ctx.examples()`` becomes one weight-tied
block per example. Every node records the source line that created it, so errors name
the expression and the line (``file.py:12 `w = w - 0.1 * (S @ w - b)```).
"""
from __future__ import annotations

import linecache
import os
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import CausalityError, OutOfRangeError, ShapeError
from ..lang.validate import as_float
from .expr import (CONST, EXAMPLE, PREFIX, STATE, Expr, FrontendError, _is_number, check_level_mix, interval_of,
                   product_shape)
from .semantics import apply

__all__ = ["Context", "Loop"]

_HERE = os.path.dirname(os.path.abspath(__file__))


def _where() -> str:
    """``file:line `code``` of the first caller outside the front end."""
    f = sys._getframe(1)
    while f is not None and os.path.dirname(os.path.abspath(f.f_code.co_filename)) == _HERE:
        f = f.f_back
    if f is None:  # pragma: no cover
        return "?"
    code = linecache.getline(f.f_code.co_filename, f.f_lineno).strip()
    return f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}" + (f" `{code}`" if code else "")


class Loop:
    """A traced ``ctx.examples()`` loop: initial values, state placeholders, updates, gates."""

    def __init__(self):
        self.inits: List[Expr] = []
        self.states: List[Expr] = []
        self.updates: List[Expr] = []
        self.gate: List[bool] = []
        self.names: List[str] = []


class _Examples:
    """The iterator behind ``for x, y in ctx.examples():`` (runs the body once, at trace time)."""

    def __init__(self, ctx: "Context"):
        self.ctx = ctx
        self.calls = 0

    def __iter__(self):
        return self

    def __next__(self):
        frame = sys._getframe(1)
        ctx = self.ctx
        self.calls += 1
        if self.calls == 1:
            self.before = {k: v for k, v in frame.f_locals.items() if isinstance(v, Expr)}
            self.mark = len(ctx.nodes)
            self.where = _where()
            ctx._in_body = True
            return ctx.x, ctx.y
        ctx._in_body = False
        after = {k: v for k, v in frame.f_locals.items() if isinstance(v, Expr)}
        ctx._close_loop(self, after)
        raise StopIteration


class Context:
    """What an algorithm function sees: the current example, reductions, constants, bounds.

    Attributes:
        d: input dimension.
        x: the current example's input ``x_i`` (``(d,)``), at its ỹ column.
        y: the current example's label ``y_i`` (scalar).
        query: the input of the current x̃ column (``(d,)``): the point to predict at.
    """

    def __init__(self, d: int, x_bound: float, y_bound: float, max_n: int):
        self.d, self.x_bound, self.y_bound, self.max_n = d, x_bound, y_bound, max_n
        self.nodes: List[Expr] = []
        self._cse: Dict[tuple, Expr] = {}
        self.loop: Optional[Loop] = None
        self._in_body = False
        self.uses_mean = False

    # ------------------------------------------------------------------ node factory
    def _node(self, op, args, shape, lo, hi, level, query, param=None, key=None, symmetric=False,
              where: Optional[str] = None) -> Expr:
        for a in args:
            if getattr(a, "dead", False):
                raise FrontendError(f"{a.describe()} was computed inside the ctx.examples() loop body and used after "
                                    f"it at {where or _where()}; only variables assigned in the loop carry over")
        ck = None
        if key is not None:
            ck = (op, tuple(a.id for a in args), key)
            hit = self._cse.get(ck)
            if hit is not None:
                return hit
        e = Expr(self, op, tuple(args), shape, lo, hi, level, query, param, where or _where(), symmetric)
        e.id = len(self.nodes)
        self.nodes.append(e)
        if ck is not None:
            self._cse[ck] = e
        return e

    def const(self, value) -> Expr:
        """A constant scalar, vector or matrix (baked into the weights)."""
        if isinstance(value, Expr):
            return value
        a = np.asarray(value, dtype=np.float64)
        if a.ndim > 2:
            raise ShapeError(f"ctx.const at {_where()}: only scalars, vectors and matrices; got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ShapeError(f"ctx.const at {_where()}: the constant contains NaN or infinity")
        sym = a.ndim == 2 and a.shape[0] == a.shape[1] and np.array_equal(a, a.T)
        return self._node("const", (), a.shape, a, a, CONST, False, param=a.copy(), symmetric=sym)

    def zeros(self, *shape) -> Expr:
        """``ctx.zeros(4)`` or ``ctx.zeros(4, 4)``: a constant of zeros."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return self.const(np.zeros(tuple(int(s) for s in shape)))

    def eye(self, n: int) -> Expr:
        """The ``n×n`` identity matrix."""
        return self.const(np.eye(int(n)))

    # ------------------------------------------------------------------ inputs
    @property
    def x(self) -> Expr:
        b = self.x_bound
        return self._node("x", (), (self.d,), -b, b, EXAMPLE, False, key="x", where="ctx.x")

    @property
    def y(self) -> Expr:
        b = self.y_bound
        return self._node("y", (), (), -b, b, EXAMPLE, False, key="y", where="ctx.y")

    @property
    def query(self) -> Expr:
        if self._in_body:
            raise CausalityError(f"ctx.query at {_where()} inside ctx.examples(): an example cannot read the query "
                                 "that comes after it")
        b = self.x_bound
        return self._node("query", (), (self.d,), -b, b, PREFIX, True, key="query", where="ctx.query")

    # ------------------------------------------------------------------ reductions
    def _reduce(self, op: str, e, scale: float = 1.0) -> Expr:
        where = _where()
        e = self.const(e) if not isinstance(e, Expr) else e
        if self._in_body:
            raise CausalityError(f"ctx.{op} at {where} inside ctx.examples(): the state after example i cannot "
                                 "read every example; compute aggregates outside the loop")
        if e.query or e.level > EXAMPLE:
            raise CausalityError(
                f"ctx.{op}(...) at {where}: its argument {e.describe()} depends on "
                f"{'ctx.query' if e.query else 'an aggregate or loop state'}, so the term of example i would read "
                "a future example (or the query after it). Sum per-example terms built from ctx.x, ctx.y and constants")
        if op == "sum":
            n = self.max_n
            lo, hi = np.minimum(0.0, n * e.lo), np.maximum(0.0, n * e.hi)
            if scale < 0:
                lo, hi = scale * hi, scale * lo
            else:
                lo, hi = scale * lo, scale * hi
            return self._node(op, (e,), e.shape, lo, hi, PREFIX, False, param=scale, key=(op, scale), where=where,
                              symmetric=e.symmetric)
        self.uses_mean = True
        return self._node(op, (e,), e.shape, e.lo, e.hi, PREFIX, False, key=op, where=where, symmetric=e.symmetric)

    def sum(self, e, *, scale: float = 1.0) -> Expr:
        """``scale·Σ_i e(x_i, y_i)`` over the examples seen so far (exact; 0 before the first).

        ``scale`` (a constant, default 1) is folded into the product that forms the sum, so the
        unscaled sum is never written: carry a sum that grows with ``n`` in units of, e.g.,
        ``1/ctx.max_n`` to keep the residual column small (LayerNorm reads every MLP input with
        a relative error that grows with the column's squared norm, Lemma 6).
        """
        return self._reduce("sum", e, as_float(scale, "ctx.sum: scale"))

    def mean(self, e) -> Expr:
        """``(1/k) Σ_{i ≤ k} e(x_i, y_i)`` over the ``k`` examples seen so far (``e(0, 0)`` while ``k = 0``)."""
        return self._reduce("mean", e)

    def count(self) -> Expr:
        """The number of examples seen so far, ``k`` (at most ``max_n``)."""
        return self._node("count", (), (), 0.0, float(self.max_n), PREFIX, False, key="count", where="ctx.count()")

    def examples(self):
        """``for x, y in ctx.examples():`` — one weight-tied block per example, in order (SGD-style).

        Variables assigned in the body are carried from example to example; they must start
        as constants (``ctx.zeros``, ``ctx.const``). Their bound must be provable or given
        with ``ctx.bound`` inside the body.
        """
        if self.loop is not None:
            raise FrontendError(f"ctx.examples() at {_where()}: an algorithm may loop over the examples only once")
        if self._in_body:  # pragma: no cover
            raise FrontendError("ctx.examples() loops cannot be nested")
        return _Examples(self)

    def bound(self, e: Expr, value, *, arg: Optional[str] = None) -> Expr:
        """Declare ``|e| ≤ value`` entrywise, or ``lo ≤ e ≤ hi`` with ``value = (lo, hi)``; returns ``e``.

        Tightens the interval analysis where it cannot see the truth (e.g. iterates of a
        loop). The magnitude ``max(|lo|, |hi|)`` is checked at run time: a value beyond it raises
        :class:`~iclconstruct.errors.OutOfRangeError`, never a silent error. A one-sided claim
        (``ctx.bound(1 + x @ u, (1.0, c_max))``: the Sherman–Morrison divisor is ``≥ 1``)
        also lets ``/`` divide by ``e``; its lower end becomes the division's declared minimum
        (``Div.min_abs``), which the interpreter and the model check and the certificate uses. The message
        names this call's source line, or ``arg``: the name of the argument of *your* function
        that ``value`` comes from (``ctx.bound(M @ b, w_bound, arg="w_bound")``), so that
        your caller is told which of their arguments to change.
        """
        if arg is not None and not (isinstance(arg, str) and arg.isidentifier()):
            raise FrontendError(f"ctx.bound at {_where()}: arg must be an argument name (a string); got {arg!r}")
        if not isinstance(e, Expr):
            raise ShapeError(f"ctx.bound at {_where()}: the first argument must be a traced value; got {type(e).__name__}")
        one_sided = not _is_number(value)
        lo, hi = (-float(value), float(value)) if not one_sided else (float(value[0]), float(value[1]))
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > 0 and lo < hi):
            raise OutOfRangeError(f"ctx.bound at {_where()}: the bound must be finite with hi > 0; got {value!r}")
        _apply_claim(e, lo, hi)
        e.user_bound = max(abs(lo), abs(hi))
        e.user_interval = (lo, hi)
        e.bound_note = (arg, _where())
        return e

    def name(self, e: Expr, name: str) -> Expr:
        """Give ``e`` a user-visible name; returns ``e``.

        The value gets a slot of its own under that name (where it is read as an operand, or
        is a loop variable's update, a loop's result or the prediction), so listings,
        :mod:`iclconstruct.viz` labels, ``model.layout[name]`` and run-time range errors use it.
        A loop variable named ``w`` has state slot ``w`` (and ``wprev`` where the previous state needs
        a slot of its own). A name used twice gets a numeric suffix the second time.
        """
        if not isinstance(e, Expr):
            raise ShapeError(f"ctx.name at {_where()}: the first argument must be a traced value; got {type(e).__name__}")
        if not (isinstance(name, str) and name.isidentifier()):
            raise FrontendError(f"ctx.name at {_where()}: the name must be an identifier string; got {name!r}")
        from ..lang.layout import INPUT_SLOTS, SYSTEM_SLOTS

        if name in SYSTEM_SLOTS or name in INPUT_SLOTS or name == "examples_seen":
            raise FrontendError(f"ctx.name at {_where()}: {name!r} is a reserved slot name; choose another")
        e.user_name = name
        return e

    # ------------------------------------------------------------------ operations
    @property
    def _folding(self) -> bool:
        # no constant folding inside a loop body: a loop variable's initial value is a
        # constant there, but stands for the state
        return not self._in_body

    def _fold(self, op, args, shape, param=None) -> Expr:
        tmp = Expr(self, op, tuple(args), shape, 0.0, 0.0, CONST, False, param)
        v = apply(tmp, [np.asarray(a.param)[None] for a in args])[0]
        return self.const(v)

    def _binary(self, op: str, a: Expr, b: Expr) -> Expr:
        where = _where()
        if a.shape != b.shape:
            if a.op == "const" and a.shape == ():
                a = self.const(np.full(b.shape, float(a.param)))
            elif b.op == "const" and b.shape == ():
                b = self.const(np.full(a.shape, float(b.param)))
            else:
                raise ShapeError(f"`+`/`-` at {where}: shapes {a.shape or 'scalar'} and {b.shape or 'scalar'} differ "
                                 f"({a.describe()} and {b.describe()})")
        if a.op == "const" and b.op == "const" and self._folding:
            return self._fold("add", (a, b), a.shape)
        level, query = check_level_mix(self, "+", (a, b), where)
        if a.id > b.id:
            a, b = b, a  # canonical order for CSE
        return self._node("add", (a, b), a.shape, a.lo + b.lo, a.hi + b.hi, level, query, key="", where=where,
                          symmetric=a.symmetric and b.symmetric)

    def _scale(self, a: Expr, c: float) -> Expr:
        if c == 1.0:
            return a
        if a.op == "const" and self._folding:
            return self.const(c * np.asarray(a.param))
        lo, hi = (c * a.lo, c * a.hi) if c >= 0 else (c * a.hi, c * a.lo)
        return self._node("scale", (a,), a.shape, lo, hi, a.level, a.query, param=c, key=c, symmetric=a.symmetric)

    def _transpose(self, a: Expr) -> Expr:
        if a.op == "const" and self._folding:
            return self.const(np.asarray(a.param).T)
        return self._node("transpose", (a,), a.shape[::-1], a.lo.T, a.hi.T, a.level, a.query, key="")

    def _product(self, op: str, a: Expr, b: Expr) -> Expr:
        where = _where()
        shape = product_shape(op, a, b, where)
        if a.op == "const" and b.op == "const" and self._folding:
            return self._fold(op, (a, b), shape)
        level, query = check_level_mix(self, {"mul": "*", "matmul": "@", "outer": "outer"}[op], (a, b), where)
        lo, hi = interval_of(op, a, b)
        sym = op == "outer" and a is b or (op == "mul" and (a.shape == () and b.symmetric or b.shape == () and a.symmetric))
        return self._node(op, (a, b), shape, lo, hi, level, query, key="", where=where, symmetric=sym)

    def _divide(self, a: Expr, c: Expr) -> Expr:
        where = _where()
        if c.shape != ():
            raise ShapeError(f"`/` at {where}: the divisor {c.describe()} must be a scalar expression")
        if c.op == "const":
            return self._scale(a, 1.0 / float(c.param))
        if not float(c.lo) > 0:
            raise FrontendError(
                f"`/` at {where}: the divisor {c.describe()} is not provably positive (interval analysis gives "
                f"[{float(c.lo):.4g}, {float(c.hi):.4g}]); division by LayerNorm (Lemma 8) divides by |c|. "
                "Divide by something like 1 + x @ x, or by a constant")
        level, query = check_level_mix(self, "/", (a, c), where)
        corners = np.stack([a.lo / c.lo, a.lo / c.hi, a.hi / c.lo, a.hi / c.hi])
        return self._node("div", (a, c), a.shape, corners.min(0), corners.max(0), level, query, key="", where=where,
                          symmetric=a.symmetric)

    # ------------------------------------------------------------------ loops
    def _close_loop(self, it: _Examples, after: Dict[str, Expr]) -> None:
        loop = Loop()
        carried = [(k, it.before[k], v) for k, v in after.items() if k in it.before and it.before[k] is not v
                   and v.id >= it.mark]
        if not carried:
            raise FrontendError(f"ctx.examples() at {it.where}: the loop body assigns no variable defined before the "
                                "loop; assign the state, e.g. `w = w - 0.1 * x * (x @ w - y)`")
        for name, init, out in carried:
            if init.op != "const":
                raise FrontendError(f"ctx.examples() at {it.where}: loop variable `{name}` must start as a constant "
                                    f"(ctx.zeros, ctx.const); it starts as {init.describe()}")
            if init.shape != out.shape:
                raise ShapeError(f"ctx.examples() at {it.where}: loop variable `{name}` changes shape from "
                                 f"{init.shape} to {out.shape} in the body ({out.describe()})")
        body = self.nodes[it.mark:]
        init_ids = {init.id: i for i, (_, init, _) in enumerate(carried)}
        # state intervals: the user's bound on the update, else a fixed point of the interval analysis
        lo = [init.lo.copy() for _, init, _ in carried]
        hi = [init.hi.copy() for _, init, _ in carried]
        for i, (_, init, out) in enumerate(carried):
            if out.user_bound is not None:
                lo[i] = np.minimum(lo[i], -out.user_bound)
                hi[i] = np.maximum(hi[i], out.user_bound)
        self.loop = loop
        for rounds in range(30):
            saved = (dict(self._cse), len(self.nodes))
            states = [self._node("state", (), init.shape, lo[i], hi[i], STATE, False, param=i, where=f"`{name}`")
                      for i, (name, init, _) in enumerate(carried)]
            for st_, (_, _, out) in zip(states, carried):  # a state's slot is refused as its update's bound is
                st_.bound_note = out.bound_note
            updates = [self._rebuild(out, init_ids, states, it.mark, {}) for _, _, out in carried]
            grew = False
            for i, u in enumerate(updates):
                if carried[i][2].user_bound is not None:
                    u.lo = np.maximum(u.lo, lo[i])
                    u.hi = np.minimum(u.hi, hi[i])
                    continue
                if (u.lo < lo[i]).any() or (u.hi > hi[i]).any():
                    grew = True
                    lo[i] = np.minimum(lo[i], u.lo)
                    hi[i] = np.maximum(hi[i], u.hi)
                    if rounds >= 2:  # widening: a contraction's bound is reached in finitely many steps
                        m = 2.0 * max(np.abs(lo[i]).max(), np.abs(hi[i]).max())
                        lo[i], hi[i] = np.full_like(lo[i], -m), np.full_like(hi[i], m)
            if not grew:
                break
            self._cse, _ = saved[0], None
            del self.nodes[saved[1]:]
        else:
            name = next(n for i, (n, _, o) in enumerate(carried) if o.user_bound is None)
            raise FrontendError(
                f"loop variable `{name}` of ctx.examples() at {it.where} is unbounded for the compiler: interval "
                "analysis cannot show that the update keeps it bounded. Declare its bound in the body, e.g. "
                f"`{name} = ctx.bound({name} - ..., 10.0)` (checked at run time)")
        loop.inits = [init for _, init, _ in carried]
        loop.states = states
        loop.updates = updates
        loop.names = [n for n, _, _ in carried]
        loop.gate = [not _identity_at_zero(self, u, states, i) for i, u in enumerate(updates)]
        # the user's variables now hold the original body nodes: turn them into the loop's results
        for n in body:
            n.dead = True
        self._cse = {k: v for k, v in self._cse.items() if not getattr(v, "dead", False)}
        for i, (name, _, out) in enumerate(carried):
            out.dead = False
            out.op, out.args, out.param = "loop_out", (states[i],), loop
            out.level, out.query = PREFIX, False
            out.lo, out.hi = lo[i].copy(), hi[i].copy()

    def _rebuild(self, node: Expr, init_ids, states, mark, memo) -> Expr:
        """Re-create a body node with the loop variables' initial values replaced by the state."""
        if node.id in init_ids:
            return states[init_ids[node.id]]
        if node.id < mark or node.op in ("const", "x", "y"):
            return node
        if node.id in memo:
            return memo[node.id]
        args = [self._rebuild(a, init_ids, states, mark, memo) for a in node.args]
        op = node.op
        if op == "add":
            r = self._binary("add", *args)
        elif op == "scale":
            r = self._scale(args[0], node.param)
        elif op == "transpose":
            r = self._transpose(args[0])
        elif op in ("mul", "matmul", "outer"):
            r = self._product(op, *args)
        elif op == "div":
            r = self._divide(*args)
        else:  # pragma: no cover - reductions inside the body were refused when traced
            raise FrontendError(f"{node.describe()} cannot appear inside ctx.examples()")
        if node.user_bound is not None:
            _apply_claim(r, *node.user_interval)
            r.user_bound = node.user_bound
            r.user_interval = node.user_interval
            r.bound_note = node.bound_note
        if node.user_name is not None:
            r.user_name = node.user_name
        memo[node.id] = r
        return r


def _apply_claim(e: Expr, lo: float, hi: float) -> None:
    """Intersect ``e``'s interval with the claim ``[lo, hi]`` (a claim that contradicts the analysis wins)."""
    e.lo = np.maximum(e.lo, lo)
    e.hi = np.minimum(e.hi, hi)
    bad = e.lo > e.hi
    if bad.any():
        e.lo[bad], e.hi[bad] = lo, hi


def _identity_at_zero(ctx: Context, upd: Expr, states, i: int) -> bool:
    """Does the update leave the state unchanged at ``x = 0, y = 0`` (checked on two random states)?"""
    from .semantics import at_empty_example

    return all(np.array_equal(v, vals[states[i].id]) for v, vals in at_empty_example(upd, states, seed=i))
