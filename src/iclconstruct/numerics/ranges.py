"""Range analysis: a bound on every operand of every product, from the program alone.

The product trick (Lemma 4) normalises each operand by a scale ``s`` and is accurate to
``≈ s_x·s_y·(7/(6N²) + c·u·N)``, so the scale should be the operand's *actual* range at
that op, not the (often much larger) declared bound of its slot — e.g. the SGD circuit's
``u = √(2·lr)·x`` lives in a slot that briefly holds the raw ``x``. This pass propagates
magnitude bounds (∞-norm over a slot's rows) through the ops in program order, with a
fixed point over each loop (its weights serve every iteration), each bound capped by the
slot's declared bound (which the run-time checks enforce). The compiler uses the result
for each product's scales, and the certificate reads the same scales back.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from ..lang.ops import Aff, Div, Mov, Mul, Op

__all__ = ["operand_scales"]

_FIXED = {"one": 1.0, "is_y": 1.0, "pos": 1.0}


def _terms_bound(B: Dict[str, float], terms, bias, size: int) -> float:
    v = np.zeros(size)
    for s, W in terms:
        v += np.abs(np.asarray(W, dtype=np.float64)).sum(axis=1) * B.get(s, 0.0)
    if bias is not None:
        v += np.abs(np.asarray(bias, dtype=np.float64)).reshape(-1)
    return float(v.max(initial=0.0))


def _step(op: Op, B: Dict[str, float], lay, div_min: float) -> float:
    size = lay[op.dst].size
    if isinstance(op, Mov):
        v = B.get(op.src, 0.0)
    elif isinstance(op, Aff):
        v = _terms_bound(B, op.terms, op.bias, size)
    elif isinstance(op, Mul):
        v = abs(op.coef) * op.shape[1] * B.get(op.lhs, 0.0) * B.get(op.rhs, 0.0) + _terms_bound(B, op.plus, op.bias, size)
    elif isinstance(op, Div):
        v = abs(op.coef) * B.get(op.src, 0.0) / div_min + (B.get(op.dst, 0.0) if op.accumulate else 0.0)
    else:  # count, sum and other ops: their slot's declared bound
        v = lay[op.dst].bound
    return min(v, lay[op.dst].bound)


def operand_scales(program, div_min: float = 0.1) -> Dict[int, Tuple[float, float]]:
    """``{id(op): (s_lhs, s_rhs)}`` for every ``mul``: bounds on its operands' magnitudes where it runs.

    Each is at most the operand slot's declared bound, and never 0 (an operand that is
    provably 0 keeps its declared bound as scale).
    """
    lay = program.layout
    B: Dict[str, float] = {s.name: 0.0 for s in lay.user_slots()}
    B.update(_FIXED)
    B["x"], B["y"] = lay["x"].bound, lay["y"].bound
    seen: Dict[int, Tuple[float, float]] = {}

    def visit(op: Op) -> None:
        if isinstance(op, Mul):
            sl = B.get(op.lhs, 0.0) or lay[op.lhs].bound
            sr = B.get(op.rhs, 0.0) or lay[op.rhs].bound
            old = seen.get(id(op), (0.0, 0.0))
            seen[id(op)] = (max(old[0], sl), max(old[1], sr))
        B[op.dst] = max(B.get(op.dst, 0.0), _step(op, B, lay, div_min)) if _in_loop.get(id(op)) else _step(op, B, lay, div_min)

    _in_loop: Dict[int, bool] = {}
    for seg in program.segments:
        loop = seg.repeat != 1
        for op in seg.ops:
            _in_loop[id(op)] = loop
        if not loop:
            for op in seg.ops:
                visit(op)
            continue
        # a loop may run 0 times: keep the bounds from before it (max), and iterate to a fixed point
        before = dict(B)
        for _ in range(2 * len(seg.ops) + 4):
            snap = dict(B)
            for op in seg.ops:
                visit(op)
            for k, v in before.items():
                B[k] = max(B.get(k, 0.0), v)
            if B == snap:
                break
        else:  # no fixed point in time: fall back to the declared bounds of what the loop writes
            for op in seg.ops:
                B[op.dst] = lay[op.dst].bound
                if isinstance(op, Mul):
                    seen[id(op)] = (lay[op.lhs].bound, lay[op.rhs].bound)
    return seen
