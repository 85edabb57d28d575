"""The exact numpy meaning of every front-end node (float64), used for constant folding,
for the linear maps the lowering folds into ops, and by :func:`evaluate` — the traced
algorithm run directly on ``(X, y, x_query)`` without any transformer.

Values carry a leading batch axis: ``(B, *shape)``; ``B`` is the number of examples for
per-example values and 1 for everything else (broadcast).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from .expr import EXAMPLE, Expr

__all__ = ["apply", "evaluate"]


def apply(node: Expr, vals) -> np.ndarray:
    """``node``'s value from its arguments' values ``vals`` (each ``(B, *shape)``)."""
    op = node.op
    if op == "add":
        return vals[0] + vals[1]
    if op == "gate":  # is_y·value: the value itself at the ỹ column where an example's update runs
        return vals[0]
    if op == "scale":
        return node.param * vals[0]
    if op == "transpose":
        return np.swapaxes(vals[0], -1, -2)
    if op == "outer":
        return np.einsum("bi,bj->bij", vals[0], vals[1])
    if op == "mul":
        a, b = vals
        sa, sb = node.args[0].shape, node.args[1].shape
        if sa == () and sb != ():
            a = a.reshape(a.shape + (1,) * len(sb))
        if sb == () and sa != ():
            b = b.reshape(b.shape + (1,) * len(sa))
        return a * b
    if op == "matmul":
        a, b = vals
        ra, rb = len(node.args[0].shape), len(node.args[1].shape)
        spec = {(1, 1): "bi,bi->b", (2, 1): "bij,bj->bi", (1, 2): "bi,bij->bj", (2, 2): "bij,bjk->bik"}[(ra, rb)]
        return np.einsum(spec, a, b)
    if op == "div":
        c = vals[1]
        return vals[0] / c.reshape(c.shape + (1,) * len(node.args[0].shape))
    raise KeyError(op)  # pragma: no cover - leaves are handled by the caller


def evaluate(out: Expr, X: np.ndarray, y: np.ndarray, x_query: np.ndarray) -> np.ndarray:
    """The traced algorithm's prediction for one task, exactly in float64 (no transformer).

    ``X (n, d)``, ``y (n,)``, ``x_query (d,)``. Sums and means run over the ``n`` examples
    (a mean over none evaluates its argument at ``x = 0, y = 0``, as the compiled model
    does); a ``ctx.examples()`` loop runs its body once per example in order.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    q = np.asarray(x_query, dtype=np.float64)
    ctx = out.ctx
    memo: Dict[int, np.ndarray] = {}

    def ev(node: Expr, Xe, ye, state) -> np.ndarray:
        key = node.id
        if node.level < EXAMPLE and key in memo:
            return memo[key]
        op = node.op
        if op == "const":
            v = node.param[None]
        elif op == "x":
            v = Xe
        elif op == "y":
            v = ye
        elif op == "query":
            v = q[None]
        elif op == "count":
            v = np.array([float(X.shape[0])])
        elif op in ("sum", "mean"):
            if X.shape[0] == 0:
                arg = ev(node.args[0], np.zeros((1, X.shape[1])), np.zeros(1), state)
                v = (0.0 * arg if op == "sum" else arg)[:1]
            else:
                arg = np.broadcast_to(ev(node.args[0], X, y, state), (X.shape[0],) + node.shape)
                v = ((1.0 if node.param is None else node.param) * arg.sum(0) if op == "sum" else arg.mean(0))[None]
        elif op == "state":
            v = state[node.param]
        elif op == "loop_out":
            v = run_loop(node.param)[node.args[0].param]
        else:
            v = apply(node, [ev(a, Xe, ye, state) for a in node.args])
        if node.level < EXAMPLE:
            memo[key] = v
        return v

    loops: Dict[int, list] = {}

    def run_loop(loop) -> list:
        if id(loop) in loops:
            return loops[id(loop)]
        st = [ev(s0, None, None, None) for s0 in loop.inits]
        for i in range(X.shape[0]):
            new = [ev(u, X[i : i + 1], y[i : i + 1], st) for u in loop.updates]
            st = new
        loops[id(loop)] = st
        return st

    res = ev(out, None, None, None)
    return res.reshape(res.shape[1:]) if res.shape[0] == 1 else res


def at_empty_example(e: Expr, states, seed: int, draws: int = 2):
    """Yield ``(value of e, values of every node)`` at ``x = 0, y = 0`` — what a loop body sees at
    the x̃ columns — with the loop ``states`` drawn at random (``draws`` times, seeded)."""
    rng = np.random.default_rng(seed)
    for _ in range(draws):
        vals = {s.id: rng.standard_normal(s.shape)[None] for s in states}

        def ev(n):
            if n.id in vals:
                return vals[n.id]
            if n.op == "const":
                v = np.asarray(n.param)[None]
            elif n.op == "x":
                v = np.zeros((1,) + n.shape)
            elif n.op == "y":
                v = np.zeros((1,))
            else:
                v = apply(n, [ev(a) for a in n.args])
            vals[n.id] = v
            return v

        yield ev(e), vals
