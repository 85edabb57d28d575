"""Which (column, layer) cells the readout depends on: the dependency-pruned schedule.

A compiled model runs every layer on every column. Two facts, both read off the
:class:`~iclconstruct.compiler.schedule.Schedule` (no circuit is special-cased), let most
of that work go:

* **Fixed points.** A weight-tied loop body applies the same function in every
  iteration. If nothing that an iteration at column ``t`` reads changed since the
  previous iteration, its outputs equal the previous iteration's (Definition C.2 is a
  deterministic function of what it reads), so the iteration need not run. A forward pass
  over *change flags* finds these cells: at iteration 1 everything the body writes is
  "changed"; later an op's output is changed iff one of its inputs (own column, or the
  column a head reads, or any column a mean reads) is. For the wavefront circuits this
  proves that the ỹ column of example ``k`` is final after iteration ``k``
  (docs/scale.md §1, "The dependency-pruned schedule").
* **Liveness.** A backward pass from the readout marks which values are needed. A needed
  value at a fixed-point cell is needed one iteration earlier instead (deferral); a
  needed value at a changed cell makes the whole unit (a straight layer, or one loop
  iteration) run there, and then *every* input of every op of that unit is needed, so
  an evaluated unit writes correct values into all rows it writes.

Values are tracked on *atoms*: maximal row ranges that no slot boundary splits, so reused
rows are handled. The LayerNorm bookkeeping of the compiler (the ``anchor`` and ``pair``
rows of Lemmas 6 and 8) takes part as pseudo-ops: every MLP reads them, div layers and
reset layers write them. A head that reads a value written earlier in the same loop
iteration (a "mid-iteration" read) needs its source column to run in that very
iteration, in lockstep, so such sources are evaluated, never deferred.

The result, :class:`CellPlan`, lists for every layer as run the columns to evaluate.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..lang.embedding import system_rows
from ..lang.layout import Layout
from ..lang.ops import Aff, Div, Mov, Mul, Read, Sum
from ..compiler.schedule import LayerPlan, Schedule

__all__ = ["CellPlan", "plan_cells", "change_flags", "read_sources", "Effect"]


# ---------------------------------------------------------------------------- reads on columns
def read_sources(read: Read, T: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Column(s) a head with ``read`` attends to from each query ``t < T``.

    Returns ``(idx, None)`` for a single source per query (offset / position reads, the
    clamping of hard attention included), or ``(None, member)`` for a mean read, where
    ``member`` marks the averaged set (all columns while the set is still empty).
    """
    t = np.arange(T)
    if read.kind == "offset":
        return np.maximum(t - read.k, 0), None
    if read.kind == "position":
        return np.minimum(read.k, t), None
    if read.k == 0:
        return None, np.ones(T, dtype=bool)
    return None, (t % 2) == (read.k - 1)


def _gather(flag: np.ndarray, read: Optional[Read]) -> np.ndarray:
    """Per query ``t``: does any column ``t`` reads through ``read`` carry ``flag``?"""
    if read is None:
        return flag
    T = flag.shape[0]
    idx, member = read_sources(read, T)
    if idx is not None:
        return flag[idx]
    cum_all = np.logical_or.accumulate(flag)
    has = np.cumsum(member) > 0
    cum_mem = np.logical_or.accumulate(flag & member)
    return np.where(has, cum_mem, cum_all)


def _scatter(q: np.ndarray, read: Optional[Read]) -> np.ndarray:
    """Columns read (through ``read``) by some query in ``q``: the adjoint of :func:`_gather`."""
    if read is None:
        return q.copy()
    T = q.shape[0]
    idx, member = read_sources(read, T)
    out = np.zeros(T, dtype=bool)
    if idx is not None:
        out[idx[q]] = True
        return out
    has = np.cumsum(member) > 0
    rev = lambda a: np.logical_or.accumulate(a[::-1])[::-1]
    out |= member & rev(q & has)
    out |= rev(q & ~has)
    return out


# ---------------------------------------------------------------------------- effects
@dataclass
class Effect:
    """One write of a sublayer: ``writes`` (atom ids) from ``reads`` (``(atom ids, Read or None)``)."""

    stage: int  # 2·layer-in-unit (attention) or 2·layer-in-unit + 1 (MLP)
    writes: Tuple[int, ...]
    reads: Tuple[Tuple[Tuple[int, ...], Optional[Read]], ...]
    op: object = None  # the program op, or None for the compiler's LayerNorm bookkeeping
    zero: bool = False  # bookkeeping that writes zeros (silenced anchors, cleared targets)


class _Atoms:
    """Maximal row ranges that no slot boundary of the layout splits."""

    def __init__(self, lay: Layout):
        cuts = {0, lay.size}
        for s in lay.slots():
            r = lay.rows(s.name)
            cuts |= {r[0], r[-1] + 1}
        self.cuts = np.array(sorted(cuts))
        self.lay = lay

    def __len__(self) -> int:
        return len(self.cuts) - 1

    def of(self, name: str) -> Tuple[int, ...]:
        r = self.lay.rows(name)
        lo = int(np.searchsorted(self.cuts, r[0]))
        hi = int(np.searchsorted(self.cuts, r[-1] + 1))
        return tuple(range(lo, hi))


def _layer_effects(plan: LayerPlan, li: int, at: _Atoms) -> List[Effect]:
    A, M = 2 * li, 2 * li + 1
    out: List[Effect] = []
    own = lambda names: tuple((at.of(n), None) for n in names)
    for op in plan.attn_ops:
        if isinstance(op, Mov):
            rd = None if (op.read.kind == "offset" and op.read.k == 0) else op.read
            out.append(Effect(A, at.of(op.dst), ((at.of(op.src), rd),), op))
        else:
            out.append(Effect(A, at.of(op.dst), own(op.reads()), op))
    if plan.divisor is not None:
        out.append(Effect(A, at.of("pair"), own([plan.divisor])))
        out.append(Effect(A, at.of("anchor"), (), zero=True))
        for op in plan.mlp_ops:
            if not op.accumulate:
                out.append(Effect(A, at.of(op.dst), (), zero=True))
    elif plan.reset:
        out.append(Effect(A, at.of("anchor"), own(["one"])))
        out.append(Effect(A, at.of("pair"), (), zero=True))
    ln = own(["anchor", "pair"])  # Lemma 6 / 8: every MLP reads the column through LayerNorm
    for op in plan.mlp_ops:
        if isinstance(op, Sum):  # the averaging read over the ỹ columns writes dst in the attention;
            # the MLP multiplies it (own column) by the count
            out.append(Effect(A, at.of(op.dst), ((at.of(op.src), Read("mean", 2)),), op))
            out.append(Effect(M, at.of(op.dst), own([op.dst] + ([op.count] if op.count else [])) + ln, op))
            continue
        out.append(Effect(M, at.of(op.dst), own(op.reads()) + ln, op))
    return out


@dataclass
class _Unit:
    """A straight layer or a loop body: the granule that runs (or not) at a column."""

    effects: List[Effect]
    writes: Tuple[int, ...]
    ext_own: Tuple[int, ...]                     # own atoms read at the unit's input
    ext_remote: List[Tuple[Tuple[int, ...], Read]]  # other columns' atoms read at the unit's input
    mid_remote: List[Read]                        # reads of values written earlier in the unit

    @staticmethod
    def of(effects: List[Effect]) -> "_Unit":
        written: Dict[int, int] = {}  # atom -> first stage writing it
        for e in effects:
            for a in e.writes:
                written.setdefault(a, e.stage)
        ext_own, ext_remote, mid = set(), [], []
        for e in effects:
            for atoms, rd in e.reads:
                inner = [a for a in atoms if a in written and written[a] < e.stage]
                outer = tuple(a for a in atoms if not (a in written and written[a] < e.stage))
                if rd is None:
                    ext_own |= set(outer)
                else:
                    if outer:
                        ext_remote.append((outer, rd))
                    if inner:
                        mid.append(rd)
        return _Unit(effects, tuple(sorted(written)), tuple(sorted(ext_own)), ext_remote, mid)



# ---------------------------------------------------------------------------- value facts
def _is_zero(b) -> bool:
    return b is None or not np.any(b)


def _identity_term(terms, at: "_Atoms"):
    """The slot ``s`` if ``terms`` is exactly ``1·h[s]`` (one term, identity matrix), else None."""
    if len(terms) != 1:
        return None
    name, W = terms[0]
    W = np.asarray(W)
    if W.ndim == 2 and W.shape[0] == W.shape[1] and np.array_equal(W, np.eye(W.shape[0])):
        return name
    return None


def _initial_zero(at: "_Atoms", T: int, paper_layout: bool) -> Dict[int, np.ndarray]:
    """Atoms known to be exactly 0 after the embedding: user slots and ``pair`` start at 0; the
    system rows are read off :func:`~iclconstruct.lang.embedding.system_rows`; with the Eq. 12
    layout, ``y`` is 0 at x̃ columns and ``x`` at ỹ columns."""
    t = np.arange(T)
    Z = {a: np.ones(T, dtype=bool) for a in range(len(at))}
    odd = t % 2 == 1
    never = np.zeros(T, dtype=bool)
    facts = {"y": ~odd if paper_layout else never, "x": odd if paper_layout else never,
             "anchor": never, "bal": never}
    for name, v in system_rows(t, max(T, 1)).items():
        facts[name] = (v == 0).all(axis=-1)
    for name, zero in facts.items():
        for a in at.of(name):
            Z[a] = zero.copy()
    return Z


def _all(Z, atoms, T) -> np.ndarray:
    out = np.ones(T, dtype=bool)
    for a in atoms:
        out &= Z[a]
    return out


def _zero_out(e: Effect, Z: Dict[int, np.ndarray], at: "_Atoms", T: int) -> np.ndarray:
    """Columns where ``e`` writes exactly 0, given the zero facts ``Z`` at its stage input."""
    op = e.op
    if op is None:
        return np.full(T, e.zero)
    if isinstance(op, Mov):
        z = _all(Z, at.of(op.src), T)
        rd = None if (op.read.kind == "offset" and op.read.k == 0) else op.read
        return ~_gather(~z, rd)
    if isinstance(op, Mul):
        if not _is_zero(op.bias):
            return np.zeros(T, dtype=bool)
        z = _all(Z, at.of(op.lhs), T) | _all(Z, at.of(op.rhs), T)
        for name, _ in op.plus:
            z &= _all(Z, at.of(name), T)
        return z
    if isinstance(op, Aff):
        if not _is_zero(op.bias):
            return np.zeros(T, dtype=bool)
        z = np.ones(T, dtype=bool)
        for name, _ in op.terms:
            z &= _all(Z, at.of(name), T)
        return z
    if isinstance(op, Div):
        z = _all(Z, at.of(op.src), T)
        return z & _all(Z, at.of(op.dst), T) if op.accumulate else z
    return np.zeros(T, dtype=bool)  # count, sum: not known to be 0


def _copy_of(e: Effect, Z, SRC, at: "_Atoms", T: int) -> np.ndarray:
    """Per column, the atom whose iteration-start value ``e`` writes unchanged (``-1``: none).

    Recognised: a ``mov`` whose read lands on its own column, ``aff``/``mul`` whose only
    non-zero term is ``1·h[s]``, a ``div`` accumulating 0. Only single-atom slots.
    """
    none = np.full(T, -1)
    op = e.op
    if op is None or len(e.writes) != 1:
        return none
    single = lambda name: at.of(name)[0] if len(at.of(name)) == 1 else None
    if isinstance(op, Mov):
        a = single(op.src)
        if a is None:
            return none
        if op.read.kind == "mean":
            return none
        idx, _ = read_sources(op.read, T)
        return np.where(idx == np.arange(T), SRC[a], -1)
    if isinstance(op, Aff):
        s = _identity_term(op.terms, at)
        a = single(s) if s is not None else None
        return SRC[a].copy() if (a is not None and _is_zero(op.bias)) else none
    if isinstance(op, Mul):
        s = _identity_term(op.plus, at)
        a = single(s) if s is not None else None
        if a is None or not _is_zero(op.bias):
            return none
        prod_zero = _all(Z, at.of(op.lhs), T) | _all(Z, at.of(op.rhs), T)
        return np.where(prod_zero, SRC[a], -1)
    if isinstance(op, Div) and op.accumulate:
        a = single(op.dst)
        if a is None:
            return none
        return np.where(_all(Z, at.of(op.src), T), SRC[a], -1)
    return none


def _run_zero(unit: "_Unit", Z: Dict[int, np.ndarray], at: "_Atoms", T: int):
    """One pass of ``unit`` over zero facts; returns ``(Z after, per-effect (Z at input, zero out))``."""
    Z = dict(Z)
    info = []
    for st in sorted({e.stage for e in unit.effects}):
        snap = dict(Z)
        for e in unit.effects:
            if e.stage != st:
                continue
            zo = _zero_out(e, snap, at, T)
            info.append((snap, zo))
            for a in e.writes:
                Z[a] = zo
    return Z, info

# ---------------------------------------------------------------------------- the plan
@dataclass
class CellPlan:
    """The pruned schedule for ``T`` tokens.

    Attributes:
        T: tokens. layers: block index of every layer as run (``model.unrolled(T)``).
        columns: for every layer as run, the sorted columns to evaluate there.
        readout: the columns whose readout is wanted.
        required: for an incremental plan, the earlier (layer, columns) cells it relies on.
        busy: the layers (as run) that evaluate at least one column.
    """

    T: int
    layers: List[int]
    columns: List[np.ndarray]
    readout: np.ndarray
    required: List[Tuple[int, np.ndarray]] = field(default_factory=list)

    @property
    def busy(self) -> List[int]:
        if not hasattr(self, "_busy"):
            self._busy = [l for l, c in enumerate(self.columns) if len(c)]
        return self._busy

    @property
    def cells(self) -> int:
        """(column, layer) cells evaluated (the full pass evaluates ``T × len(layers)``)."""
        return int(sum(len(c) for c in self.columns))


def _units(schedule: Schedule, at: _Atoms, T: int):
    """``(unit, times, layers per iteration, is_loop, per-example)`` per straight layer / loop."""
    cached = schedule.__dict__.get("_cell_units")
    if cached is None or cached[0] is not at.lay:
        out = []
        for seg in schedule.segments:
            nl = len(seg.layers)
            if seg.repeat == 1:
                for p in seg.layers:
                    out.append((_Unit.of(_layer_effects(p, 0, at)), None, 1, False, False))
            else:
                eff = [e for li, p in enumerate(seg.layers) for e in _layer_effects(p, li, at)]
                out.append((_Unit.of(eff), seg, nl, True, seg.repeat == "examples"))
        cached = (at.lay, out)
        schedule.__dict__["_cell_units"] = cached
    return [(u, 1 if seg is None else seg.times(T), nl, lp, ex) for u, seg, nl, lp, ex in cached[1]]


def change_flags(schedule: Schedule, layout: Layout, T: int, paper_layout: bool = True) -> Dict[int, np.ndarray]:
    """Forward pass: per loop unit, ``(times, atoms, T)`` flags "differs from the previous iteration".

    Iteration 1 compares with the value before the loop. Flags of column ``t`` at iteration
    ``b`` depend only on columns ``≤ t`` and iterations ``≤ b`` (causality), so the flags for a
    longer sequence contain those of every shorter one.
    """
    at = _Atoms(layout)
    n_atoms = len(at)
    segs = _units(schedule, at, T)
    Z = _initial_zero(at, T, paper_layout)
    changed: Dict[int, np.ndarray] = {}
    for si, (unit, times, nl, is_loop, _) in enumerate(segs):
        if not is_loop:
            Z, _ = _run_zero(unit, Z, at, T)
            continue
        if times == 0:
            continue
        Zin = dict(Z)
        while True:  # must-zero in every iteration: fixpoint over the loop's back edge
            Zend, info = _run_zero(unit, Zin, at, T)
            nxt = {a: Z[a] & Zend[a] if a in unit.writes else Z[a] for a in Z}
            if all(np.array_equal(nxt[a], Zin[a]) for a in Z):
                break
            Zin = nxt
        Z_entry = Zin
        cur = np.zeros((n_atoms, T), dtype=bool)
        hist = np.zeros((times, n_atoms, T), dtype=bool)
        stages = sorted({e.stage for e in unit.effects})
        cols = np.arange(T)
        for b in range(times):
            start = cur.copy()
            SRC = {a: np.full(T, a) for a in range(n_atoms)}
            k = 0
            for st in stages:
                snap = cur.copy()
                snap_src = dict(SRC)
                for e in unit.effects:
                    if e.stage != st:
                        continue
                    zin, zo = info[k]
                    k += 1
                    cp = _copy_of(e, zin, snap_src, at, T)
                    if b == 0:
                        out = np.where(cp >= 0, cp != e.writes[0], np.ones(T, dtype=bool))
                        if len(e.writes) == 1:
                            out = np.where(zo & (cp < 0), ~Z_entry[e.writes[0]], out)
                    else:
                        generic = np.zeros(T, dtype=bool)
                        for atoms, rd in e.reads:
                            for a in atoms:
                                generic |= _gather(snap[a], rd)
                        out = np.where(cp >= 0, start[np.maximum(cp, 0), cols], generic & ~zo)
                    for a in e.writes:
                        cur[a] = out
                        SRC[a] = cp if len(e.writes) == 1 else np.full(T, -1)
            hist[b] = cur
            if b >= 1 and not cur.any():
                break  # nothing changes any more: later iterations are all fixed points
        changed[si] = hist
        Z = Zend
    return changed


def plan_cells(schedule: Schedule, layout: Layout, T: int, readout_cols: Sequence[int], readout_slot: str,
               block_of: Optional[Sequence[int]] = None, paper_layout: bool = True, lo: int = 0,
               flags: Optional[Dict[int, np.ndarray]] = None) -> CellPlan:
    """The columns each layer must evaluate so that ``readout_slot`` is exact at ``readout_cols``.

    Exact means: equal, in exact arithmetic, to the full pass over all ``T`` columns (see the
    module docstring for the two rules). ``block_of`` maps layers as run to block indices.
    ``paper_layout``: the tokens follow Eq. 12 (``y = 0`` at x̃ columns, ``x = 0`` at ỹ
    columns), which the zero facts may use.

    ``lo > 0`` plans incrementally: columns ``< lo`` were already run up to the end of the first
    per-example loop, so there only columns ``≥ lo`` are planned, and what they need from the
    older columns is returned as ``CellPlan.required``: the (layer, columns) cells that must
    have run for those values to be exact. Layers after that loop are planned in full.
    ``flags``: :func:`change_flags` for ``T`` or a longer sequence (computed if omitted).
    """
    at = _Atoms(layout)
    n_atoms = len(at)
    segs = _units(schedule, at, T)
    full = flags if flags is not None else change_flags(schedule, layout, T, paper_layout)
    changed = {si: h[: segs[si][1], :, :T] for si, h in full.items()}
    memo_seg = next((si for si, s in enumerate(segs) if s[4]), len(segs) - 1)
    base, L = [], 0
    for unit, times, nl, is_loop, _ in segs:
        base.append(L)
        L += times * nl
    cols = np.arange(T)
    win = cols >= lo
    nd = {a: np.zeros(T, dtype=bool) for a in range(n_atoms)}
    req = {a: np.zeros(T, dtype=bool) for a in range(n_atoms)}  # needed values of old columns
    required: List[Tuple[int, np.ndarray]] = []
    ro = np.zeros(T, dtype=bool)
    ro[np.asarray(readout_cols, dtype=int)] = True
    for a in at.of(readout_slot):
        nd[a] = ro.copy()

    def split():  # needs on columns < lo become requirements
        for a in range(n_atoms):
            old = nd[a] & ~win
            if old.any():
                req[a] |= old
                nd[a] = nd[a] & win

    def resolve_loop(si, e, entry):
        """Requirements at the end of iteration ``e`` of loop ``si`` -> cells, or the loop entry."""
        unit, times, nl = segs[si][:3]
        for a in range(n_atoms):
            J = np.flatnonzero(req[a])
            if not len(J):
                continue
            req[a][:] = False
            if a not in unit.writes or e == 0:
                entry[a][J] = True
                continue
            sub = changed[si][:e, a][:, J]
            hit = sub.any(0)
            entry[a][J[~hit]] = True
            last = e - 1 - np.argmax(sub[::-1], axis=0)
            for b in np.unique(last[hit]):
                required.append((base[si] + int(b) * nl, J[hit & (last == b)]))

    per_seg_cols: List[List[np.ndarray]] = []
    busy: List[int] = []  # layers as run with at least one column (collected here: O(cells), not O(layers))
    for si in range(len(segs) - 1, -1, -1):
        unit, times, nl, is_loop, _ = segs[si]
        windowed = lo > 0 and si <= memo_seg
        if windowed:
            split()
        entry = {a: np.zeros(T, dtype=bool) for a in range(n_atoms)}
        if windowed and is_loop:
            resolve_loop(si, times, entry)
        elif windowed:  # a straight layer: needed values it writes must come from its cells
            for a in unit.writes:
                if req[a].any():
                    required.append((base[si], np.flatnonzero(req[a])))
                    req[a][:] = False
        empty = np.zeros(0, dtype=int)
        cols_of_iter: List[np.ndarray] = [empty] * times
        for b in range(times - 1, -1, -1):
            ch = changed[si][b] if is_loop else None
            mid = np.zeros(T, dtype=bool)
            while True:
                run = mid.copy()
                for a in unit.writes:
                    run |= nd[a] if ch is None else (nd[a] & ch[a])
                if windowed:
                    run &= win
                new_mid = mid.copy()
                for rd in unit.mid_remote:
                    new_mid |= _scatter(run, rd)
                if windowed:
                    new_mid &= win
                if np.array_equal(new_mid, mid):
                    break
                mid = new_mid
            for a in unit.writes:  # deferral: needed but unchanged -> needed one iteration earlier
                nd[a] = nd[a] & ~run
            for a in unit.ext_own:
                nd[a] = nd[a] | run
            for atoms, rd in unit.ext_remote:
                src = _scatter(run, rd)
                for a in atoms:
                    nd[a] = nd[a] | src
            cols_of_iter[b] = np.flatnonzero(run)
            if len(cols_of_iter[b]):
                busy.extend(range(base[si] + b * nl, base[si] + (b + 1) * nl))
            if windowed:
                split()
                if is_loop:
                    resolve_loop(si, b, entry)
                    if not mid.any() and not any(nd[a].any() for a in unit.writes):
                        break  # nothing of the window is needed earlier in this loop
        if windowed:
            for a in range(n_atoms):
                req[a] |= entry[a]
        per_seg_cols.append(cols_of_iter if nl == 1 else list(itertools.chain.from_iterable(zip(*[cols_of_iter] * nl))))
    per_seg_cols.reverse()
    columns = list(itertools.chain.from_iterable(per_seg_cols))
    layers = list(block_of) if block_of is not None else []
    plan = CellPlan(T=T, layers=layers, columns=columns, readout=np.flatnonzero(ro), required=required)
    plan._busy = sorted(busy)
    return plan
