"""The four primitives of the paper as data (§3, Lemma 1).

An op names the slots it reads and writes; it knows nothing about rows. The
argument order is always *source(s) first, destination last* — the paper's
definition ``mov(H; s, t, ...)`` — which fixes the paper's traces, whose ``mov`` calls
list the target first (a slip of the paper, see ``docs/paper_map.md``).

==========  ====================================================  =================
op          meaning, per column ``t`` (writes overwrite)           realised by
==========  ====================================================  =================
``Mov``     ``dst[t] ← src[r(t)]`` with ``r(t) = max(t − k, 0)``   attention head
            (offset), ``min(p, t)`` (position) or the mean over
            ``j ≤ t`` — all columns, or only x̃ or ỹ ones (the
            RAW averaging read over a set of earlier positions)
``Mul``     ``dst ← coef·(A₁ @ A₂) + Σ W·h[s] + b``, ``A₁`` (a×b)   MLP (Lemma 4)
            row-major in ``lhs``, ``A₂`` (b×c) in ``rhs``
``Div``     ``dst ← src / |divisor|`` (or ``dst += coef·src/|c|``)  LayerNorm (Lemma 8)
``Aff``     ``dst ← Σ W·h[s] + b``                                 attention self-head or MLP (Lemma 5)
``Count``   ``dst ← #{examples seen at or before t}``              self head: affine in the
                                                                   position units (exact)
``Sum``     ``dst ← scale·Σ src[j]`` over the ỹ columns ``j ≤ t``   averaging read (RAW) times the
                                                                   count: attention + MLP (Lemma 4)
==========  ====================================================  =================

The clamped reads of ``Mov`` are exactly what hard attention does when the wanted
column does not exist (before the start of the sequence, or not yet seen); the
interpreter reproduces them so that both paths agree everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

__all__ = ["Op", "Mov", "Mul", "Div", "Aff", "Read", "Count", "Sum"]

Terms = Tuple[Tuple[str, np.ndarray], ...]


@dataclass(frozen=True)
class Read:
    """Which column(s) a ``Mov`` reads: ``kind`` is ``'offset'``, ``'position'`` or ``'mean'``.

    For ``'mean'``, ``k`` names the set averaged over: 0 all columns ``j ≤ t``, 1 the x̃
    columns, 2 the ỹ columns (if the set has no column yet, all columns ``j ≤ t``).
    """

    kind: str
    k: int = 0

    #: names of the averaging sets, indexed by ``k``
    MEAN_SETS = ("all", "x", "y")

    def describe(self) -> str:
        if self.kind == "offset":
            return "t" if self.k == 0 else f"t-{self.k}"
        if self.kind == "position":
            return f"@{self.k}"
        return "mean(≤t)" if self.k == 0 else f"mean({self.MEAN_SETS[self.k]}̃ ≤t)"


@dataclass(frozen=True, eq=False)
class Op:
    """Base class: subclasses define ``reads``/``writes`` (slot names) and ``describe``."""

    def reads(self) -> Tuple[str, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def writes(self) -> str:
        """The slot the op writes (every op has exactly one destination, ``dst``)."""
        return self.dst

    @property
    def kind(self) -> str:
        return type(self).__name__.lower()

    def prestage_reads(self) -> Tuple[str, ...]:
        """Slots this op reads in the attention sublayer *before* its own (MLP) stage (``Div``, ``Sum``)."""
        return ()

    @property
    def clears_dst_in_attention(self) -> bool:
        """True if the attention sublayer in front of the op's MLP already overwrites ``dst``."""
        return False


@dataclass(frozen=True, eq=False)
class Mov(Op):
    src: str
    dst: str
    read: Read = field(default_factory=lambda: Read("offset", 1))

    def reads(self):
        return (self.src,)

    def describe(self) -> str:
        return f"mov({self.src}[{self.read.describe()}] -> {self.dst})"


@dataclass(frozen=True, eq=False)
class Mul(Op):
    lhs: str
    rhs: str
    dst: str
    shape: Tuple[int, int, int]
    coef: float = 1.0
    plus: Terms = ()
    bias: Optional[np.ndarray] = None

    def reads(self):
        return (self.lhs, self.rhs) + tuple(s for s, _ in self.plus)

    def describe(self) -> str:
        a, b, c = self.shape
        extra = "".join(f" + W·{s}" for s, _ in self.plus) + (" + b" if self.bias is not None else "")
        coef = "" if self.coef == 1.0 else f"{self.coef:g}·"
        return f"mul({coef}{self.lhs} ({a}x{b}) @ {self.rhs} ({b}x{c}){extra} -> {self.dst})"


@dataclass(frozen=True, eq=False)
class Div(Op):
    src: str
    divisor: str
    dst: str
    coef: float = 1.0
    accumulate: bool = False
    #: a declared lower bound of ``|divisor|`` (its exact value, e.g. ridge's ``c ≥ 1``): the model refuses a
    #: computed divisor below it (less its stated accuracy) and the certificate divides by it (0: none)
    min_abs: float = 0.0

    def reads(self):
        return (self.src, self.divisor) + ((self.dst,) if self.accumulate else ())

    def prestage_reads(self):
        return (self.divisor,)

    @property
    def clears_dst_in_attention(self) -> bool:
        return not self.accumulate

    def describe(self) -> str:
        coef = "" if self.coef == 1.0 else f"{self.coef:g}·"
        arrow = "+=>" if self.accumulate else "->"
        return f"div({coef}{self.src} / |{self.divisor}| {arrow} {self.dst})"


@dataclass(frozen=True, eq=False)
class Aff(Op):
    dst: str
    terms: Terms
    bias: Optional[np.ndarray] = None

    def reads(self):
        return tuple(s for s, _ in self.terms)

    def describe(self) -> str:
        parts = [f"W·{s}" for s, _ in self.terms] + (["b"] if self.bias is not None else [])
        return f"aff({' + '.join(parts) or '0'} -> {self.dst})"


@dataclass(frozen=True, eq=False)
class Count(Op):
    """``dst[t] ← number of (x, y) examples at or before column t`` = ``⌊(t + 1)/2⌋`` (ỹ columns ``j ≤ t``).

    A function of position only: the compiler writes it as an affine map of the position
    units and the ``is_y`` flag, ``(P·pos₀ + is_y)/2`` with ``P = max_len`` (exact up to rounding).
    """

    dst: str

    def reads(self):
        return ()

    def describe(self) -> str:
        return f"count(-> {self.dst})"


@dataclass(frozen=True, eq=False)
class Sum(Op):
    """``dst[t] ← Σ_{ỹ columns j ≤ t} src[j]``: the exact prefix sum over the examples seen so far.

    Realised as the RAW averaging read over the ỹ columns (attention, Definition C.2) times
    the example count (one GeLU product in the MLP, Lemma 4). ``0`` before the first example.
    ``count`` names a slot written by :class:`Count` (more accurate: the count then comes
    from a row of magnitude ``n`` instead of the position unit scaled by ``max_len/2``).
    ``scale`` multiplies the sum (the coefficient of the product): ``scale·Σ src`` is formed
    without the raw sum ever sitting in the residual stream, so a sum that grows with ``n``
    can be carried in units of, e.g., ``1/max_n`` and keep the column's norm (hence
    LayerNorm's read error, Lemma 6) small.
    """

    src: str
    dst: str
    count: Optional[str] = None
    scale: float = 1.0

    def reads(self):
        return (self.src,) + ((self.count,) if self.count else ())

    def prestage_reads(self):
        return (self.src,)

    @property
    def clears_dst_in_attention(self) -> bool:
        return True

    def describe(self) -> str:
        by = f" x {self.count}" if self.count else ""
        sc = "" if self.scale == 1.0 else f"{self.scale:g}·"
        return f"sum({sc}{self.src}[ỹ ≤t]{by} -> {self.dst})"
