"""Streaming and all-prefix evaluation on the dependency-pruned schedule.

* :func:`predict_prefixes` — one pass over ``x̃_1, ỹ_1, …, x̃_n, ỹ_n`` that computes only the
  cells the readout at the x̃ columns depends on (:func:`~iclconstruct.runtime.plan.plan_cells`).
  For the wavefront circuits that is the diagonal (example ``k``, iteration ``k``):
  ``O(n)`` block evaluations instead of the full pass's ``O(n²)``.
* :class:`Stream` — ``s.add(x, y)`` appends one example and runs its new cells at once;
  ``s.predict(x_query)`` evaluates only the query column's cells (and the layers after the
  loop, which depend on how many examples there are). Cells already computed are kept,
  with every column's state after each of its cells, so a new column can read an old one
  as it was at any layer (the key/value cache). When a longer context would need an old
  column at a cell that was not run, the stream recomputes from the start instead of
  answering from stale state (never the case for the circuits shipped here).

Both run the model's own blocks (:func:`~iclconstruct.runtime.engine.run_cells`) and return,
in exact arithmetic, exactly what the full forward pass returns.
"""
from __future__ import annotations

import bisect
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import ContextTooLongError, ShapeError
from ..tokens import encode
from .checks import RangeMonitor
from .engine import _keys
from .plan import CellPlan, change_flags, plan_cells

__all__ = ["cell_plan", "predict_prefixes", "run_pruned", "Stream", "memo_layers"]


def _flags(model, T: int, paper_layout: bool):
    """Change flags for at least ``T`` tokens, cached on the model (they are causal: see
    :func:`~iclconstruct.runtime.plan.change_flags`); grown in powers of two up to ``max_len``."""
    cache = model.__dict__.setdefault("_change_flags", {})
    have = cache.get(paper_layout)
    if have is None or have[0] < T:
        cap = min(model.max_len, max(T, 1 << max(6, (T - 1).bit_length())))
        cache[paper_layout] = (cap, change_flags(model.schedule, model.layout, cap, paper_layout))
    return cache[paper_layout][1]


def cell_plan(model, T: int, readout: str = "x", paper_layout: bool = True, lo: int = 0) -> CellPlan:
    """The pruned schedule of ``model`` for ``T`` tokens (cached on the model).

    ``readout``: ``'x'`` the program's readout columns (x̃ columns, or all for ``columns='all'``);
    ``'last'`` only the last column. ``paper_layout``: the tokens follow Eq. 12 (zeros in the
    label channel of x̃ columns and in the x channels of ỹ columns). ``lo``: plan only
    columns ``≥ lo`` up to the end of the first per-example loop (see ``plan_cells``).
    """
    cache = model.__dict__.setdefault("_cell_plans", {})
    key = (T, readout, paper_layout, lo)
    if key not in cache:
        if readout == "last":
            cols = [T - 1]
        elif model.program.readout_columns == "x":
            cols = list(range(0, T, 2))
        else:
            cols = list(range(T))
        if len(cache) > 8:
            cache.pop(next(iter(cache)))
        cache[key] = plan_cells(model.schedule, model.layout, T, cols, model.program.readout_slot,
                                block_of=model.unrolled(T), paper_layout=paper_layout, lo=lo,
                                flags=_flags(model, T, paper_layout))
    return cache[key]


def memo_layers(model, T: int) -> int:
    """Layers as run whose cells do not depend on ``T``: up to the end of the first per-example loop."""
    n = 0
    for idx, seg in model._segments:
        n += len(idx) * seg.times(T)
        if seg.repeat == "examples":
            break
    return n


def _embed(model, t: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return t @ model.W_E + model.W_pos[positions]


def run_pruned(model, tokens, *, readout: str = "x", check: bool = True):
    """Readout of ``model(tokens)`` computed on the pruned schedule: the full pass's output
    at the program's readout columns (``readout='x'``) or at the last column (``'last'``)."""
    from .engine import run_cells

    t, numpy_in = model._prepare(tokens)
    T = t.shape[1]
    paper = bool((t[:, 0::2, 0] == 0).all() and (t[:, 1::2, 1:] == 0).all())  # Eq. 12 zeros
    plan = cell_plan(model, T, readout, paper)
    with torch.no_grad():
        h = _embed(model, t, torch.arange(T, device=t.device))
        h = run_cells(model, h, plan, check=check)
        out = model.layout.view(h[:, plan.readout], model.program.readout_slot)[..., 0]
    if check:  # the a-posteriori accuracy check (ridge), on the states at the readout columns
        model._check_predictions(tokens, h[:, plan.readout], out, columns=plan.readout)
    return out.detach().cpu().numpy() if numpy_in else out


def predict_prefixes(model, X, y, *, check: bool = True):
    """``out[:, k]``: prediction for ``x_{k+1}`` from the first ``k`` examples (pruned; see module doc)."""
    numpy_in = not isinstance(X, torch.Tensor)
    tok = encode(X, y, None, dtype=None if numpy_in else model.dtype)
    out = run_pruned(model, tok, check=check)
    return out[0] if np.ndim(X) == 2 else out


class Stream:
    """Incremental evaluation of a compiled model: ``add(x, y)`` examples, ``predict(x_query)`` any time.

    ``s.predict(xq)`` equals ``model.predict(X_seen, y_seen, xq)`` (the full pass's readout at
    the query column) for the examples added so far. Inputs: ``x`` ``(d,)`` or ``(B, d)``,
    ``y`` scalar or ``(B,)``, numpy or torch (torch in, torch out, on the model's device).
    The batch size is fixed by the first call.
    """

    def __init__(self, model, *, check: bool = True):
        self.model = model
        self.check = check
        self.B: Optional[int] = None
        self.torch_io = False
        self.tokens: List[torch.Tensor] = []  # (B, d+1) per column
        self.host: List[np.ndarray] = []  # the same columns as the caller passed them, float64 (a-posteriori check)
        self.hist: List[Tuple[List[int], List[torch.Tensor]]] = []  # per column: layers run, state after each
        self.sets: List[np.ndarray] = []  # columns run at each memo-able layer so far
        self.rebuilds = 0
        self.evaluated = 0  # (column, layer) cells run so far (a cost counter)
        #: the recomputation check's state (numerics.replay_bound.ReplayState), advanced with the stream's own
        #: cells, for programs checked by recomputation in this dtype; None otherwise (or until the first add)
        self._ref = None

    # ------------------------------------------------------------------ inputs
    @property
    def n(self) -> int:
        """Examples added so far."""
        return len(self.tokens) // 2

    def _rows(self, a, name: str, width: int) -> torch.Tensor:
        m = self.model
        is_t = isinstance(a, torch.Tensor)
        t = a if is_t else torch.as_tensor(np.asarray(a, dtype=np.float64))
        t = t.to(device=m.W_E.device, dtype=torch.float64)  # the model's dtype once checked (_columns)
        if width == 0:
            t = t.reshape(-1) if t.dim() <= 1 else t
            if t.dim() != 1:
                raise ShapeError(f"{name} must be a scalar or (B,); got shape {tuple(t.shape)}")
        else:
            if t.dim() == 1:
                t = t.unsqueeze(0)
            if t.dim() != 2 or t.shape[-1] != width:
                raise ShapeError(f"{name} must be ({width},) or (B, {width}); got shape {tuple(t.shape)}")
        B = t.shape[0]
        if self.B is None:
            self.B, self.torch_io = B, is_t
        elif B != self.B:
            raise ShapeError(f"{name} has batch {B} but this stream was started with batch {self.B}")
        return t

    def _columns(self, x, y=None) -> Tuple[torch.Tensor, np.ndarray]:
        """The new columns in the model's dtype, and as passed (float64, on the host)."""
        d = self.model.d
        xt = self._rows(x, "x_query" if y is None else "x", d)
        cols = [torch.cat([torch.zeros_like(xt[:, :1]), xt], dim=1)]
        if y is not None:
            yt = self._rows(y, "y", 0)
            cols.append(torch.cat([yt[:, None], torch.zeros_like(xt)], dim=1))
        tok = torch.stack(cols, dim=1)
        T = len(self.tokens) + tok.shape[1]
        if T > self.model.max_len:
            raise ContextTooLongError(
                f"{T} tokens exceed max_len={self.model.max_len} of the position units; "
                f"compile with max_len >= {T} or start a new stream")
        self.model._prepare(tok)  # range, finiteness and the circuit's own input checks
        return tok.to(self.model.dtype), tok.detach().to("cpu", torch.float64).numpy()

    # ------------------------------------------------------------------ cells
    def _state(self, hist, j: int, l: int) -> torch.Tensor:
        layers, states = hist[j]
        i = bisect.bisect_left(layers, l) - 1
        return states[i]

    def _run(self, hist, cols: np.ndarray, l: int, bi: int, T: int, mon) -> None:
        m = self.model
        if self.__dict__.get("_src_T") != T:  # read sources depend on T only
            self._src, self._src_T = {}, T
        keys = _keys(m, bi, cols, T, self._src)
        hq = torch.stack([self._state(hist, int(t), l) for t in cols], dim=1)
        hk = torch.stack([self._state(hist, int(j), l) for j in keys], dim=1)
        mask = torch.as_tensor(keys[None, :] > cols[:, None], device=hq.device)
        blk = m.blocks[bi]
        out = mon.layer(blk, hq, l, bi, m._null_hooks, kv=hk, mask=mask) if mon is not None else \
            blk(hq, m._null_hooks, l, kv=hk, mask=mask)
        for i, t in enumerate(cols):
            hist[int(t)][0].append(l)
            hist[int(t)][1].append(out[:, i])
        self.evaluated += len(cols)
        if self._ref is not None:  # the same cells, exactly, in float64 with error bounds
            self._ref.run(cols, l, bi, T)

    def _recompute_checked(self) -> bool:
        from ..numerics.aposteriori import accuracy_for, spec_for

        spec = spec_for(self.model.program)
        return bool(self.check and spec is not None and spec["kind"] == "recompute"
                    and accuracy_for(spec, self.model.dtype) is not None)

    def _replay(self):
        """The recomputation check's replay state (created at the first call)."""
        from ..numerics.replay_bound import ReplayState

        if self._ref is None:
            self._ref = ReplayState(self.model, self.B)
        return self._ref

    def _new_hist(self, tok: torch.Tensor, start: int):
        m = self.model
        pos = torch.arange(start, start + tok.shape[1], device=tok.device)
        h = _embed(m, tok, pos)
        return [([-1], [h[:, i]]) for i in range(tok.shape[1])]

    def _advance(self, plan: CellPlan, T_commit: int, hist, T_old: int, mon) -> None:
        """Run the memo-able cells of ``plan`` on columns ``T_old..T_commit-1`` and record them."""
        Lm = memo_layers(self.model, plan.T)
        empty = np.zeros(0, dtype=int)
        self.sets += [empty] * (Lm - len(self.sets))
        for l in plan.busy:
            if l >= Lm:
                break
            E = plan.columns[l]
            new = E[(E >= T_old) & (E < T_commit)]
            if len(new):
                self._run(hist, new, l, plan.layers[l], plan.T, mon)
                self.sets[l] = np.union1d(self.sets[l], new)

    def _satisfied(self, plan: CellPlan) -> bool:
        """Every earlier cell the incremental plan relies on was run."""
        for l, J in plan.required:
            if l >= len(self.sets) or not np.isin(J, self.sets[l]).all():
                return False
        return True

    def _sync(self, T: int, T_commit: int, hist, mon, T_old: int) -> CellPlan:
        """Plan ``T`` tokens (readout at the last) incrementally from ``T_old``; run the new cells."""
        m = self.model
        plan = cell_plan(m, T, "last", lo=T_old) if T_old > 0 else cell_plan(m, T, "last")
        if T_old > 0 and not self._satisfied(plan):
            self.rebuilds += 1
            plan = cell_plan(m, T, "last")
            tok = torch.stack(self.tokens[:T_old], dim=1)
            hist[:T_old] = self._new_hist(tok, 0)
            if self._ref is not None:
                self._ref.reset()
            self.sets, T_old = [], 0
        self._advance(plan, T_commit, hist, T_old, mon)
        return plan

    # ------------------------------------------------------------------ public
    def add(self, x, y) -> "Stream":
        """Append example ``(x, y)`` and run the cells its two columns need."""
        tok, host = self._columns(x, y)
        m = self.model
        mon = RangeMonitor(m) if self.check else None
        with torch.no_grad():
            T0 = len(self.tokens)
            hist = list(self.hist) + self._new_hist(tok, T0)
            self.tokens += [tok[:, 0], tok[:, 1]]
            self.host += [host[:, 0], host[:, 1]]
            T = len(self.tokens)
            if self._recompute_checked():
                self._replay().extend(np.stack(self.host, axis=1))
            self._sync(T + 1, T, hist, mon, T0)  # planned as the next prediction will be
            if self._ref is not None:
                self._ref.close()
            self.hist = hist[:T]
        if mon is not None:
            mon.verify()
        return self

    def predict(self, x_query):
        """The full pass's prediction at the query column after the examples added so far."""
        tok, host = self._columns(x_query)
        m = self.model
        mon = RangeMonitor(m) if self.check else None
        with torch.no_grad():
            T = len(self.tokens) + 1
            hist = self.hist
            hist.append(self._new_hist(tok, T - 1)[0])
            lens: List[int] = []
            ref_bounds, snap = None, None
            if self._recompute_checked():  # the query's cells are forgotten afterwards: so is their reference
                snap = self._replay().snapshot()
                self._ref.extend(np.stack(self.host + [host[:, 0]], axis=1))
            try:
                plan = self._sync(T, T - 1, hist, mon, T - 1)
                Lm = memo_layers(m, T)
                lens = [len(a) for a, _ in hist]
                # the query column's memo-able cells, then every later layer (they depend on n)
                for l in plan.busy:
                    E = plan.columns[l]
                    cols = E[E == T - 1] if l < Lm else E
                    if len(cols):
                        self._run(hist, cols, l, plan.layers[l], T, mon)
                h = self._state(hist, T - 1, len(plan.columns))
                out = m.layout.view(h, m.program.readout_slot)[..., 0]
                if self._ref is not None:
                    ref_bounds = self._ref.bounds(T - 1, out.detach().to("cpu", torch.float64).numpy())
            finally:
                if snap is not None:
                    self._ref.restore(snap)
                hist.pop()
                for (a, b), k in zip(hist, lens):  # forget the cells that depend on the query or on n
                    del a[k:], b[k:]
        if mon is not None:
            mon.verify()
        if ref_bounds is not None:  # the recomputation check, on the cells this stream ran (numerics.replay_bound)
            from ..numerics.aposteriori import refuse, verification_from_bounds

            refuse(m.program, verification_from_bounds(m.program, m.dtype, [T - 1], out, ref_bounds))
        elif self.check:  # the a-posteriori accuracy check (ridge) at the query column
            toks = np.stack(self.host + [host[:, 0]], axis=1)
            m._check_predictions(toks, h[:, None], out[:, None], columns=[T - 1])
        out = out if self.torch_io else out.detach().cpu().numpy()
        return out[0] if self.B == 1 and not self.torch_io and np.ndim(x_query) == 1 else out
