"""The recomputation bound on the dependency-pruned schedule: ``O(n)`` cells instead of the interpreter's ``O(n²)``.

:func:`~iclconstruct.numerics.recompute.bounded_interpret` runs every loop iteration over every
column, so checking one streamed prediction after ``n`` examples costs ``O(n²)``. Here the same
exact float64 semantics and the same running error bound (the formulas of
:mod:`iclconstruct.numerics.recompute`) are evaluated only on the (column, layer) cells the
readout depends on — the model's :class:`~iclconstruct.runtime.plan.CellPlan`, in the model's
schedule (the ops of one sublayer read its input; a ``div``'s divisor and a ``sum``'s source are
read at the layer's input, as :func:`~iclconstruct.testing.replay_schedule` runs them).

Why the values are the exact program's: the schedule replayed in exact arithmetic is the program
(the tests compare the two at every sublayer), and the cell plan leaves out only cells whose
values are fixed points or unread (docs/scale.md §1). A skipped cell keeps the value and the bound
of the cell that computed it, which equal the ones it would recompute in exact arithmetic.

A per-example loop with a declared contraction carries the state's error as the full
recomputation does: at each iteration the state's error is set to 0, the iteration's own error
``ℓ`` is propagated, and the columns that rewrite the state get ``L·max_t e + ‖ℓ‖₂``; the body's
other slots are ``inf`` after each iteration.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from .recompute import _U, _contraction, _g, _op_error, _up

__all__ = ["bounded_replay", "loop_iterations"]


def loop_iterations(model, T: int) -> List[Tuple[int, int, int]]:
    """``(segment, first layer, end layer)`` (layers as run) of every iteration of every per-example loop."""
    out, l = [], 0
    for si, (idx, seg) in enumerate(model._segments):
        for _ in range(seg.times(T)):
            if seg.repeat == "examples":
                out.append((si, l, l + len(idx)))
            l += len(idx)
    return out


def _mean_rows(read_k: int, T: int, cols: np.ndarray) -> np.ndarray:
    """``(C, T)``: the interpreter's averaging weights for query columns ``cols`` (``apply_op``'s mean read)."""
    j = np.arange(T)
    member = np.ones(T, dtype=bool) if read_k == 0 else (j % 2 == read_k - 1)
    upto = j[None, :] <= cols[:, None]
    M = member[None, :] & upto
    empty = ~M.any(axis=1)
    M = np.where(empty[:, None], upto, M).astype(np.float64)
    return M / M.sum(axis=1, keepdims=True)


def _cells(op, get, lay, cols: np.ndarray, T: int, sub) -> Tuple[np.ndarray, np.ndarray]:
    """``(value, error)`` ``(B, C, size)`` of ``op.dst`` at ``cols``. ``get(name)`` → full ``(values, errors)``
    as the op reads them; ``sub()`` → the ``(H, E)`` of ``cols`` as the op reads them (local ops)."""
    from ..lang.interpreter import apply_op
    from ..lang.ops import Count, Mov, Sum
    from ..runtime.plan import read_sources

    if isinstance(op, Mov):
        S, Es = get(op.src)
        if op.read.kind in ("offset", "position"):
            idx = read_sources(op.read, T)[0][cols]
            return S[:, idx].copy(), Es[:, idx].copy()
        W = _mean_rows(op.read.k, T, cols)
        val = np.einsum("cj,bjk->bck", W, S)
        err = _up(np.einsum("cj,bjk->bck", W, Es + _g(T + 2) * np.abs(S)), T) * (1 + 2 * _U)
        return val, err
    if isinstance(op, Count):
        v = ((cols + 1) // 2).astype(np.float64)[None, :, None]
        shape = (sub()[0].shape[0], len(cols), lay[op.dst].size)
        return np.broadcast_to(v, shape).copy(), np.zeros(shape)
    if isinstance(op, Sum):
        S, Es = get(op.src)
        is_y = (np.arange(T) % 2 == 1).astype(np.float64)[None, :, None]
        val = op.scale * np.cumsum(S * is_y, axis=1)[:, cols]
        err = abs(float(op.scale)) * _up(np.cumsum(Es * is_y, axis=1)[:, cols]
                                         + _g(T + 1) * np.cumsum(np.abs(S) * is_y, axis=1)[:, cols], T) * (1 + 2 * _U)
        return val, err
    Hs, Ecs = sub()  # Mul, Aff, Div: local to each column
    err = _op_error(op, Hs, Ecs, lay)
    apply_op(op, Hs, lay)
    return lay.view(Hs, op.writes()).copy(), err


def _run_layer(plan, H, E, lay, cols: np.ndarray, T: int, written: Dict[str, set]) -> None:
    """Layer ``plan`` at ``cols`` in the schedule's order: attention ops, then MLP ops, each sublayer's ops
    reading its input; ``div`` divisors and ``sum`` sources read at the layer's input."""
    layer_in: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for op in plan.mlp_ops:
        for name in op.prestage_reads():
            if name not in layer_in:
                layer_in[name] = (lay.view(H, name).copy(), lay.view(E, name).copy())
    for ops, pre in ((plan.attn_ops, False), (plan.mlp_ops, True)):
        if not ops:
            continue
        base_H, base_E = H[:, cols].copy(), E[:, cols].copy()
        outs = []
        for op in ops:
            stage = layer_in if pre else {}
            names = op.prestage_reads() if pre else ()

            def get(name, _names=names, _stage=stage):
                if name in _names:
                    return _stage[name]
                return lay.view(H, name), lay.view(E, name)

            def sub(_names=names, _stage=stage):
                Hs, Es = base_H.copy(), base_E.copy()
                for name in _names:
                    lay.view(Hs, name)[...] = _stage[name][0][:, cols]
                    lay.view(Es, name)[...] = _stage[name][1][:, cols]
                return Hs, Es

            outs.append((op.writes(), *_cells(op, get, lay, cols, T, sub)))
        for dst, val, err in outs:
            lay.view(H, dst)[:, cols] = val
            lay.view(E, dst)[:, cols] = err
            written.setdefault(dst, set()).update(int(c) for c in cols)


def bounded_replay(model, tokens, readout: str = "x") -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(H, E, columns)``: the program's values on the cells the readout depends on (``readout``: ``'x'``
    the readout columns, ``'last'`` the last column; :func:`~iclconstruct.runtime.stream.cell_plan`) and a
    rigorous bound ``E`` on their distance from the exact program; valid at the returned readout ``columns``
    (other entries may be stale)."""
    from ..lang.interpreter import embed_reference
    from ..runtime.stream import cell_plan

    program, lay = model.program, model.layout
    tok = np.asarray(tokens, dtype=np.float64)
    tok = tok[None] if tok.ndim == 2 else tok
    H = embed_reference(program, tok, max_len=model.max_len, check=False)
    E = np.zeros_like(H)
    T = H.shape[1]
    plan = cell_plan(model, T, readout, True)
    hint = _contraction(program, tok)
    starts, ends = {}, {}
    if hint is not None:
        for si, a, b in loop_iterations(model, T):
            starts[a], ends[b - 1] = si, si
    state = hint[0] if hint is not None else ()
    e2: Dict[str, np.ndarray] = {}
    stash: Dict[str, np.ndarray] = {}
    written: Dict[str, set] = {}
    e_in: Dict[str, np.ndarray] = {}
    for l, (bi, cols) in enumerate(zip(plan.layers, plan.columns)):
        if l in starts:  # a contraction loop's iteration begins: carry the state's error, start its own at 0
            written = {}
            for s in state:
                if s not in e2:
                    e2[s] = np.sqrt(_up((lay.view(E, s) ** 2).sum(-1), lay[s].size))
                e_in[s] = e2[s].max(axis=1)
                stash[s] = lay.view(E, s).copy()
                lay.view(E, s)[...] = 0.0
        if len(cols):
            _run_layer(model.plans[bi], H, E, lay, np.asarray(cols, dtype=np.int64), T, written)
        if l in ends:
            si = ends[l]
            for s in state:
                own = np.sqrt(_up((lay.view(E, s) ** 2).sum(-1), lay[s].size))
                new = _up(hint[1] * e_in[s][:, None] + own, 2)
                w = np.zeros(T, dtype=bool)
                w[list(written.get(s, ()))] = True
                e2[s] = np.where(w[None, :], new, e2[s])
                lay.view(E, s)[...] = np.where(w[None, :, None], e2[s][..., None], stash[s])
            body = {op.writes() for bi2 in model._segments[si][0] for op in model.plans[bi2].ops}
            for s in body - set(state):
                lay.view(E, s)[...] = np.inf
    return H, E, np.asarray(plan.readout, dtype=np.int64)
