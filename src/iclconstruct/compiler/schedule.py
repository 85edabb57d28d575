"""Packing ops into layers (Lemma 7, parallel RAW).

A layer of Eq. 4 has two *stages*: the attention sublayer (stage ``2l``) and the MLP
sublayer (stage ``2l + 1``). Ops that read the same input and write disjoint rows can
share a stage. :func:`schedule` places each op, in program order, at the earliest stage
that its kind allows and that keeps the program's meaning:

* ``mov`` → attention (one head per distinct read; offset-0 copies join the self head);
* ``aff`` → attention (the *self head*: hard attention to the own column, any linear map
  of it, exact) or MLP (GeLU bypass), whichever comes first;
* ``mul`` → MLP (GeLU product units);
* ``count`` → attention (self head) or MLP, like ``aff``;
* ``sum`` → the MLP of a layer whose attention does its averaging read (a two-stage op);
* ``div`` → the MLP of a *div layer*, whose attention writes the ``pair`` rows
  ``(+M·c, −M·c)`` and clears the destination; that MLP hosts only ``div`` ops by the
  same divisor, because it sees every row divided by ``|c|``.

Dependencies are computed on *rows*, so slots that reuse freed rows are handled: an op
that reads rows another op writes goes strictly later (read-after-write); an op that
writes rows an earlier op reads goes no earlier (write-after-read: ops in one stage all
read the stage's input); two writes of the same rows are ordered strictly.

Each segment (a weight-tied loop body, or the straight code around it) is scheduled on
its own; a segment boundary is a barrier.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple, Union

from ..lang.layout import Layout
from ..lang.ops import Aff, Count, Div, Mov, Op, Sum
from ..lang.program import Program, repeat_times

__all__ = ["LayerPlan", "SegmentPlan", "Schedule", "schedule"]


@dataclass
class LayerPlan:
    """What one layer does, and its full footprint (every slot it writes, the compiler's own included).

    Attributes:
        attn_ops: ``mov`` and ``aff`` ops run by the attention sublayer.
        mlp_ops: ops run by the MLP sublayer (``mul``/``aff``, or only ``div`` in a div layer).
        divisor: name of the divisor slot if this is a div layer, else ``None``.
        reset: the attention restores the LayerNorm anchors and clears ``pair``
            (needed after a div layer).
        cleared: slots the attention writes before its MLP writes them: the destinations of
            overwriting ``div`` ops (set to 0) and of ``sum`` ops (their averaging read).
    """

    attn_ops: List[Op] = field(default_factory=list)
    mlp_ops: List[Op] = field(default_factory=list)
    divisor: Optional[str] = None
    reset: bool = False
    cleared: Tuple[str, ...] = ()

    @property
    def ops(self) -> List[Op]:
        return self.attn_ops + self.mlp_ops

    @property
    def divisor_min(self) -> float:
        """The lower bound of ``|divisor|`` the layer's ``div`` ops declare (``Div.min_abs``; 0: none)."""
        return max((op.min_abs for op in self.mlp_ops if isinstance(op, Div) and op.divisor == self.divisor),
                   default=0.0)

    @property
    def system_writes(self) -> Tuple[str, ...]:
        """System slots the attention rewrites: ``anchor`` and ``pair`` in div and reset layers."""
        return ("anchor", "pair") if self.divisor is not None or self.reset else ()

    def writes(self, sublayer: Optional[str] = None) -> Tuple[str, ...]:
        """Slots written by the ``'attn'`` or ``'mlp'`` sublayer (both if ``None``).

        The attention's writes include the compiler's: :attr:`cleared` and :attr:`system_writes`.
        """
        attn = tuple(op.writes() for op in self.attn_ops) + self.cleared + self.system_writes
        mlp = tuple(op.writes() for op in self.mlp_ops)
        return _unique({"attn": attn, "mlp": mlp, None: attn + mlp}[sublayer])

    def reads(self, sublayer: Optional[str] = None) -> Tuple[str, ...]:
        """Slots read by the ``'attn'`` or ``'mlp'`` sublayer (both if ``None``).

        The attention's reads include the compiler's: the position units and the constant
        its heads' queries and keys read, the divisor of a div layer (Lemma 8 set-up) and
        the constant a reset multiplies into the anchors.
        """
        attn = tuple(n for op in self.attn_ops for n in op.reads())
        if self.attn_ops or self.divisor is not None or self.reset:
            attn += ("pos", "one")
        if self.divisor is not None:
            attn += (self.divisor,)
        attn += tuple(op.src for op in self.mlp_ops if isinstance(op, Sum))  # a sum's averaging read
        mlp = tuple(n for op in self.mlp_ops for n in op.reads())
        return _unique({"attn": attn, "mlp": mlp, None: attn + mlp}[sublayer])

    def describe(self) -> str:
        att = ", ".join(op.describe() for op in self.attn_ops) or "-"
        if self.divisor is not None:
            att = f"[div setup |{self.divisor}|] " + att
        if self.reset:
            att = "[reset anchors] " + att
        mlp = ", ".join(op.describe() for op in self.mlp_ops) or "-"
        return f"attn: {att}\n      mlp:  {mlp}"


def _unique(names) -> Tuple[str, ...]:
    return tuple(dict.fromkeys(names))


@dataclass
class SegmentPlan:
    """The layers of one program segment, run ``repeat`` times (as :class:`~iclconstruct.lang.program.Segment`)."""

    layers: List[LayerPlan]
    repeat: Union[int, str]

    def times(self, T: int) -> int:
        """Runs on ``T`` tokens (:meth:`iclconstruct.lang.program.Segment.times`)."""
        return repeat_times(self.repeat, T)


@dataclass
class Schedule:
    segments: List[SegmentPlan]

    def unrolled(self, T: int) -> List[Tuple[int, int, LayerPlan]]:
        """``(segment, layer-in-segment, plan)`` for every layer run on ``T`` tokens."""
        out = []
        for si, seg in enumerate(self.segments):
            for _ in range(seg.times(T)):
                for li, plan in enumerate(seg.layers):
                    out.append((si, li, plan))
        return out


def _rows(lay: Layout, names) -> Set[int]:
    out: Set[int] = set()
    for n in names:
        out |= set(lay.rows(n))
    return out


def _footprint(op: Op, lay: Layout) -> List[Tuple[int, Set[int], Set[int]]]:
    """``(stage offset, rows read, rows written)`` relative to the op's main stage."""
    w = _rows(lay, [op.writes()])
    if isinstance(op, Div):
        if op.accumulate:  # no clearing: the attention stage only reads the divisor
            return [(-1, _rows(lay, [op.divisor]), set()), (0, _rows(lay, [op.src, op.dst]), set(w))]
        return [(-1, _rows(lay, [op.divisor]), set(w)), (0, _rows(lay, [op.src]), set(w))]
    if isinstance(op, Sum):  # the averaging read in attention, then the product with the count
        return [(-1, _rows(lay, [op.src]), set(w)), (0, _rows(lay, [op.count] if op.count else []), set(w))]
    return [(0, _rows(lay, op.reads()), w)]


def _allowed_parity(op: Op) -> Tuple[int, ...]:
    if isinstance(op, Mov):
        return (0,)
    if isinstance(op, (Aff, Count)):
        return (0, 1)
    return (1,)


def _schedule_segment(ops: List[Op], lay: Layout) -> List[LayerPlan]:
    placed: List[Tuple[int, Set[int], Set[int]]] = []
    where: List[int] = []
    mlp_mode: Dict[int, Optional[str]] = {}  # MLP stage -> None (normal) or divisor name
    for op in ops:
        fp = _footprint(op, lay)
        lb = 1 if isinstance(op, (Div, Sum)) else 0
        for delta, R, W in fp:
            for s2, R2, W2 in placed:
                if W2 & R or W2 & W:
                    lb = max(lb, s2 - delta + 1)
                if R2 & W:
                    lb = max(lb, s2 - delta)
        s = lb
        while True:
            if s % 2 in _allowed_parity(op):
                if s % 2 == 0:
                    break
                mode = mlp_mode.get(s, "free")
                want = op.divisor if isinstance(op, Div) else None
                if mode == "free" or mode == want:
                    mlp_mode[s] = want
                    break
            s += 1
        where.append(s)
        for delta, R, W in fp:
            placed.append((s + delta, R, W))
    if not ops:
        return []
    n_layers = max(where) // 2 + 1
    layers = [LayerPlan() for _ in range(n_layers)]
    for op, s in zip(ops, where):
        plan = layers[s // 2]
        (plan.attn_ops if s % 2 == 0 else plan.mlp_ops).append(op)
    for s, mode in mlp_mode.items():
        if mode is not None:
            plan = layers[s // 2]
            plan.divisor = mode
            plan.cleared = tuple(op.writes() for op in plan.mlp_ops if not op.accumulate)
    for plan in layers:  # a sum's averaging read writes its destination in the attention
        sums = tuple(op.writes() for op in plan.mlp_ops if isinstance(op, Sum))
        if sums:
            plan.cleared = tuple(plan.cleared) + sums
    return layers


def schedule(program: Program) -> Schedule:
    """Pack ``program`` into layers; returns a :class:`Schedule` (one plan per segment)."""
    lay = program.layout
    segs: List[SegmentPlan] = []
    for seg in program.segments:
        layers = _schedule_segment(seg.ops, lay)
        if layers:
            segs.append(SegmentPlan(layers, seg.repeat))
    # a layer that follows a div layer restores the anchors (a div layer's own setup
    # overwrites them anyway). Segment starts always reset when the program divides:
    # a loop may wrap around a div layer or run zero times. Resetting is idempotent.
    any_div = any(p.divisor is not None for seg in segs for p in seg.layers)
    for seg in segs:
        for i, plan in enumerate(seg.layers):
            prev_div = i > 0 and seg.layers[i - 1].divisor is not None
            if any_div and plan.divisor is None and (i == 0 or prev_div):
                plan.reset = True
    # a trailing div layer leaves the anchors silenced; the readout does not care
    return Schedule(segs)
