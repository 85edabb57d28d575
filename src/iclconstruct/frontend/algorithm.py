"""``@ic.algorithm``: a learning algorithm written as numpy-like Python → a transformer.

    @ic.algorithm(d=4, x_bound=6.0, y_bound=30.0)
    def two_step_gd(ctx):
        S = ctx.sum(ctx.x.outer(ctx.x))        # XᵀX over the examples seen so far
        b = ctx.sum(ctx.y * ctx.x)             # Xᵀy
        w = ctx.zeros(4)
        for _ in range(2):
            w = w - 0.04 * (S @ w - b)
        return w                               # prediction wᵀx at every x̃ column

    model = two_step_gd.compile()              # a ConstructedTransformer

The function is traced once (:mod:`.trace`), lowered to a :class:`~iclconstruct.Program`
(:mod:`.lower`) and compiled by :func:`iclconstruct.compile` (Lemma 7 packing).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch

from ..errors import ContextTooLongError, ShapeError
from .expr import EXAMPLE, STATE, Expr, FrontendError
from .lower import lower
from .semantics import evaluate as _evaluate
from .trace import Context

__all__ = ["algorithm", "Algorithm"]


class Algorithm:
    """A traced learning algorithm: :meth:`program`, :meth:`compile`, :meth:`interpret`, :meth:`evaluate`.

    Args:
        fn: ``fn(ctx) -> w`` (a ``(d,)`` weight vector; the prediction is ``wᵀx``) or ``-> ŷ``
            (a scalar expression, the prediction itself, which may use ``ctx.query``).
        d: input dimension.
        x_bound, y_bound: largest ``|x_i|``, ``|y|`` (defaults 6 and ``10(√d + 1)``, as the circuits).
        max_n: most examples in a context (sums are bounded by ``max_n`` times their terms).
        name: a label (default: the function's name).
        max_bound: the largest slot bound the lowering accepts (default
            :data:`~iclconstruct.frontend.lower.MAX_BOUND` ``= 1e6``, where the product trick's error
            stops being small); a construction whose bounds are derived from its own arguments
            (``1/lam``) may raise it, taking the accuracy cost knowingly.
    """

    def __init__(self, fn: Callable, d: int, x_bound: Optional[float] = None, y_bound: Optional[float] = None,
                 max_n: int = 64, name: Optional[str] = None, max_bound: Optional[float] = None):
        if isinstance(d, bool) or int(d) != d or d < 1:
            raise ShapeError(f"ic.algorithm: d must be a positive integer; got {d!r}")
        if isinstance(max_n, bool) or int(max_n) != max_n or max_n < 1:
            raise ShapeError(f"ic.algorithm: max_n must be a positive integer; got {max_n!r}")
        self.fn = fn
        self.d = int(d)
        self.x_bound = 6.0 if x_bound is None else float(x_bound)
        self.y_bound = 10.0 * (math.sqrt(d) + 1.0) * self.x_bound / 6.0 if y_bound is None else float(y_bound)
        for nm, v in (("x_bound", self.x_bound), ("y_bound", self.y_bound)):
            if not (math.isfinite(v) and v > 0):
                raise ShapeError(f"ic.algorithm: {nm} must be a finite positive number; got {v!r}")
        self.max_n = int(max_n)
        from .lower import MAX_BOUND

        self.max_bound = MAX_BOUND if max_bound is None else float(max_bound)
        if not self.max_bound > 0:
            raise ShapeError(f"ic.algorithm: max_bound must be a positive number; got {max_bound!r}")
        self.name = name or getattr(fn, "__name__", "algorithm")
        self._traced = None
        self._program = None

    def __repr__(self) -> str:
        return f"Algorithm({self.name!r}, d={self.d}, x_bound={self.x_bound:g}, y_bound={self.y_bound:g}, max_n={self.max_n})"

    # ------------------------------------------------------------------ tracing
    def trace(self):
        """``(ctx, prediction node)``: the traced expression DAG (cached)."""
        if self._traced is None:
            ctx = Context(self.d, self.x_bound, self.y_bound, self.max_n)
            out = self.fn(ctx)
            self._traced = (ctx, self._prediction(ctx, out))
        return self._traced

    def _prediction(self, ctx: Context, out) -> Expr:
        if not isinstance(out, Expr):
            try:
                out = ctx.const(out)
            except (TypeError, ValueError):
                raise ShapeError(f"{self.name} returned {type(out).__name__}; return a traced (d,) weight vector or "
                                 "a scalar prediction") from None
        if out.level in (EXAMPLE, STATE):
            raise FrontendError(
                f"{self.name} returns {out.describe()}, which depends on the current example (ctx.x / ctx.y) "
                "outside any sum: aggregate it with ctx.sum / ctx.mean or carry it through ctx.examples()")
        if out.shape == (self.d,):
            if out.query:
                raise ShapeError(f"{self.name} returns {out.describe()}: a weight vector must not use ctx.query "
                                 "(return the scalar prediction instead)")
            return ctx._product("matmul", out, ctx.query)
        if out.shape == ():
            return out
        raise ShapeError(f"{self.name} returns {out.describe()} of shape {out.shape}; return a weight vector of "
                         f"shape ({self.d},) (prediction wᵀx) or a scalar prediction")

    # ------------------------------------------------------------------ the three paths
    def program(self):
        """The :class:`~iclconstruct.Program` the algorithm lowers to (slots, bounds and ops chosen for you)."""
        if self._program is None:
            ctx, pred = self.trace()
            p = lower(ctx, pred, self)
            p.meta = {**(p.meta or {}), "algorithm": self.name, "d": self.d, "x_bound": self.x_bound, "y_bound": self.y_bound,
                      "max_n": self.max_n}
            self._program = p
        return self._program

    def _check_n(self, T: int) -> None:
        if T // 2 > self.max_n:
            raise ContextTooLongError(f"{T // 2} examples exceed max_n={self.max_n} of {self.name}; build it with "
                                      f"ic.algorithm(..., max_n={T // 2}) or more (larger max_n costs accuracy)")

    def compile(self, *, constants=None, dtype: torch.dtype = torch.float64, max_len: Optional[int] = None,
                sparse=False, device=None):
        """A :class:`~iclconstruct.ConstructedTransformer` running the algorithm (see :func:`iclconstruct.compile`).

        ``max_len`` (default ``2·max_n + 1``: ``max_n`` examples and a query) is the longest
        token sequence; beyond ``max_n`` examples the ``examples_seen`` count leaves its bound and raises.
        """
        from ..compiler.build import compile as _compile

        return _compile(self.program(), constants=constants, dtype=dtype,
                        max_len=2 * self.max_n + 1 if max_len is None else max_len, sparse=sparse, device=device)

    def interpret(self, tokens) -> np.ndarray:
        """The program run exactly by :func:`iclconstruct.interpret`: the readout at every x̃ column ``(B, n_x)``."""
        from ..lang.interpreter import interpret as _interpret

        T = np.shape(tokens)[-2]
        self._check_n(T)
        return _interpret(self.program(), tokens).output

    def evaluate(self, X, y, x_query) -> float:
        """The traced expression evaluated directly on one task (numpy float64, no program, no transformer)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.d:
            raise ShapeError(f"X must be (n, {self.d}); got shape {X.shape}")
        ctx, pred = self.trace()
        return float(_evaluate(pred, X, y, x_query))


def algorithm(fn: Optional[Callable] = None, *, d: int, x_bound: Optional[float] = None,
              y_bound: Optional[float] = None, max_n: int = 64, name: Optional[str] = None,
              max_bound: Optional[float] = None):
    """Decorator: ``@ic.algorithm(d=4, x_bound=6.0, y_bound=30.0)`` turns ``fn(ctx)`` into an :class:`Algorithm`.

    Inside ``fn``: ``ctx.x``, ``ctx.y`` (the current example), ``ctx.sum``, ``ctx.mean``,
    ``ctx.count()`` (over the examples seen so far), ``ctx.examples()`` (a sequential loop),
    ``ctx.query``, ``ctx.zeros``, ``ctx.eye``, ``ctx.const``, ``ctx.bound``, ``ctx.name``. See ``docs/frontend.md``.
    """
    def wrap(f):
        return Algorithm(f, d, x_bound=x_bound, y_bound=y_bound, max_n=max_n, name=name, max_bound=max_bound)

    return wrap(fn) if fn is not None else wrap
