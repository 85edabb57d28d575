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

from typing import Dict, List, Optional, Tuple

import numpy as np

from .recompute import _U, _declared_contraction, _g, _guards_hold, _mean_weights, _op_error, _up

__all__ = ["bounded_replay", "loop_iterations", "ReplayState"]


def loop_iterations(model, T: int) -> List[Tuple[int, int, int]]:
    """``(segment, first layer, end layer)`` (layers as run) of every iteration of every per-example loop."""
    out, l = [], 0
    for si, (idx, seg) in enumerate(model._segments):
        for _ in range(seg.times(T)):
            if seg.repeat == "examples":
                out.append((si, l, l + len(idx)))
            l += len(idx)
    return out


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
        W = _mean_weights(op.read.k, T, cols)
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


class ReplayState:
    """The bounded replay's state, advanced cell by cell: what :func:`bounded_replay` runs in one go, and what a
    :class:`~iclconstruct.runtime.stream.Stream` advances as it runs its own cells (``run``), so that checking a
    streamed prediction costs the cells that prediction adds, not the whole context.

    ``H``, ``E`` ``(B, capacity, D)``: values and error bounds of the ``T`` columns embedded so far (``extend``);
    ``e2``: per contraction state slot, the 2-norm bound at each column. Loop iterations are opened and closed
    as their layers run (the contraction's bookkeeping, module doc); :meth:`snapshot` / :meth:`restore`
    bracket cells that are to be forgotten (a prediction's query column and the layers after the loop).
    """

    def __init__(self, model, batch: int, capacity: Optional[int] = None):
        self.m = model
        self.lay = model.layout
        self.B = batch
        self.H = np.zeros((batch, capacity or model.max_len, self.lay.size))
        self.E = np.zeros_like(self.H)
        self.tok = np.zeros((batch, 0, self.lay.d + 1))
        self.reset()

    def reset(self) -> None:
        """Forget every cell run: the columns held are embedded afresh, with no error."""
        self.T = 0
        self.H[...], self.E[...] = 0.0, 0.0
        self.hint = _declared_contraction(self.m.program)
        self.state = self.hint[0] if self.hint is not None else ()
        self.e2: Dict[str, np.ndarray] = {}
        self.open = None  # (segment, first layer, end layer) of the iteration in progress
        self._iter: dict = {}
        self.extend(self.tok)

    def extend(self, tokens) -> None:
        """Embed the columns of ``tokens`` (all of them so far) beyond the ones held; checks the guards again."""
        from ..lang.interpreter import embed_reference

        tok = np.asarray(tokens, dtype=np.float64)
        tok = tok[None] if tok.ndim == 2 else tok
        T = tok.shape[1]
        if T > self.T:
            H0 = embed_reference(self.m.program, tok, max_len=self.m.max_len, check=False)
            self.H[:, self.T:T] = H0[:, self.T:T]
            self.E[:, self.T:T] = 0.0
        self.T, self.tok = T, tok
        if self.hint is not None and not _guards_hold(self.m.program, tok):
            # a new example leaves the guard that makes the declared Lipschitz constant true (the run-time
            # check has a slack of 1e-12; this one none): go on entrywise, from bounds that stay valid
            self.close()
            self.hint, self.state = None, ()

    def snapshot(self):
        return (self.H[:, :self.T].copy(), self.E[:, :self.T].copy(), {s: v.copy() for s, v in self.e2.items()},
                self.open, self.T, self.tok, self.hint, self.state, dict(self._iter))

    def restore(self, snap) -> None:
        H, E, self.e2, self.open, self.T, self.tok, self.hint, self.state, self._iter = snap
        self.H[:, :self.T], self.E[:, :self.T] = H, E
        self.H[:, self.T:], self.E[:, self.T:] = 0.0, 0.0

    def _iteration_of(self, l: int, T: int):
        """``(segment, first layer, end layer)`` of the loop iteration layer ``l`` belongs to, or ``None``."""
        if getattr(self, "_its_T", None) != T:
            self._its_T = T
            self._its = {k: it for it in loop_iterations(self.m, T) for k in range(it[1], it[2])}
        return self._its.get(l)

    def _begin(self, it) -> None:
        lay = self.lay
        self.open = it
        self._iter = {"written": {}, "stash": {}, "e_in": {}}
        for s in self.state:
            if s not in self.e2:
                self.e2[s] = np.zeros((self.B, self.H.shape[1]))
                self.e2[s][:, :self.T] = np.sqrt(_up((lay.view(self.E[:, :self.T], s) ** 2).sum(-1), lay[s].size))
            self._iter["e_in"][s] = self.e2[s][:, :self.T].max(axis=1)
            self._iter["stash"][s] = lay.view(self.E, s).copy()
            lay.view(self.E, s)[...] = 0.0

    def close(self) -> None:
        """End the loop iteration in progress (the contraction's step, module doc)."""
        if self.open is None:
            return
        lay, si = self.lay, self.open[0]
        it = self._iter
        for s in self.state:
            own = np.sqrt(_up((lay.view(self.E, s) ** 2).sum(-1), lay[s].size))
            new = _up(self.hint[1] * it["e_in"][s][:, None] + own, 2)
            w = np.zeros(self.H.shape[1], dtype=bool)
            w[list(it["written"].get(s, ()))] = True
            self.e2[s] = np.where(w[None, :], new, self.e2[s])
            lay.view(self.E, s)[...] = np.where(w[None, :, None], self.e2[s][..., None], it["stash"][s])
        body = {op.writes() for bi in self.m._segments[si][0] for op in self.m.plans[bi].ops}
        for s in body - set(self.state):
            lay.view(self.E, s)[...] = np.inf
        self.open = None

    def run(self, cols, l: int, bi: int, T: int) -> None:
        """Layer ``l`` as run (block ``bi``) for a context of ``T`` tokens, at columns ``cols``."""
        it = self._iteration_of(l, T) if self.hint is not None else None
        if it != self.open:
            self.close()
            if it is not None:
                self._begin(it)
        cols = np.asarray(cols, dtype=np.int64)
        if len(cols):
            written = self._iter["written"] if self.open is not None else {}
            H, E = self.H[:, :T], self.E[:, :T]  # views: the layer's reads see exactly T columns
            _run_layer(self.m.plans[bi], H, E, self.lay, cols, T, written)

    def bounds(self, col: int, y_hat) -> np.ndarray:
        """``(B, 1)`` bounds on ``|ŷ − exact|`` at column ``col`` (after :meth:`close`)."""
        from .recompute import readout_bounds

        self.close()
        return readout_bounds(self.m.program, self.H[:, :self.T], self.E[:, :self.T], [col], y_hat)


def bounded_replay(model, tokens, plan) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(H, E, columns)``: the program's values on the cells of ``plan`` (a
    :class:`~iclconstruct.runtime.plan.CellPlan` for these tokens, e.g. ``runtime.stream.cell_plan(model, T,
    'last')``) and a rigorous bound ``E`` on their distance from the exact program; valid at the plan's
    readout ``columns`` (other entries may be stale)."""
    tok = np.asarray(tokens, dtype=np.float64)
    tok = tok[None] if tok.ndim == 2 else tok
    T = tok.shape[1]
    rs = ReplayState(model, tok.shape[0], capacity=T)
    rs.extend(tok)
    for l in plan.busy:  # a stream runs the same layers: those with cells
        rs.run(plan.columns[l], l, plan.layers[l], T)
    rs.close()
    return rs.H[:, :T], rs.E[:, :T], np.asarray(plan.readout, dtype=np.int64)
