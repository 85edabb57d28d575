"""The residual stream as named slots (the hidden state ``H`` of Eq. 4, token layout of Eq. 12).

This module is the only place that knows row numbers. A :class:`Layout` hands out
*slots*: named, contiguous runs of rows of the hidden state ``H`` (here stored as
``(B, T, D)``, so "rows" are the last axis). Everything else in the library speaks in
slot names; :meth:`Layout.rows` turns a name into row indices at the very end.

System slots (created by every layout, owned by the compiler):

==========  ====  ==========================================================
name        rows  content at every column ``j`` (written by the embedding)
==========  ====  ==========================================================
``y``       1     label channel (token channel 0): ``y_i`` at ỹ columns, else 0
``x``       d     input channels (token channels 1..d): ``x_i`` at x̃ columns, else 0
``pos``     2     position units ``(j/P, (j/P)^2)`` used by hard attention
``one``     1     the constant 1 (biases of attention-written maps)
``is_y``    1     1 at ỹ columns (odd ``j``), 0 at x̃ columns
``anchor``  2     ``(+K, -K)``: pins LayerNorm's scale (Lemma 6)
``pair``    2     ``(+M|c|, -M|c|)`` during a ``div`` layer, else 0 (Lemma 8)
``bal``     1     minus the sum of all other rows: keeps the column mean at 0
==========  ====  ==========================================================

Why ``bal``: LayerNorm subtracts the column mean. If the mean were undone inside the
MLP (from the anchors), every pre-activation would be a difference of terms of size
``≈K`` and the product trick would amplify that round-off by ``N``. With the column
sum held at exactly 0 (every sublayer writes a zero-sum update), ``LayerNorm(h) = h/σ``
and the MLP reads ``h`` with relative precision.

User slots are allocated after them. A freed slot's rows may be reused by a later
slot; every row keeps the list of names that ever lived there (``row_labels``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from ..errors import ArgumentError, LayoutError, SlotOverlapError, UnknownSlotError, WidthOverflowError
from .validate import MAX_D, MAX_ROWS, as_float, as_int

__all__ = ["Slot", "Layout", "SYSTEM_SLOTS", "INPUT_SLOTS"]

#: slots the embedding writes from the tokens
INPUT_SLOTS = ("y", "x")
#: slots that only the compiler writes (never a user op)
SYSTEM_SLOTS = ("pos", "one", "is_y", "anchor", "pair", "bal")
#: system slots whose values have no fixed bound (the LayerNorm bookkeeping of Lemmas 6 and 8)
_INFINITE_OK = ("anchor", "pair", "bal")


@dataclass(frozen=True)
class Slot:
    """A named run of rows ``start : start + size`` with a magnitude bound.

    ``bound`` is the largest ``|value|`` the slot may hold: the approximation constants
    give their stated error only inside it, products are scaled by it, and runtime checks
    raise :class:`~iclconstruct.errors.OutOfRangeError` when a value exceeds it.
    """

    name: str
    start: int
    size: int
    bound: float = 10.0

    @property
    def stop(self) -> int:
        return self.start + self.size

    @property
    def rows(self) -> range:
        return range(self.start, self.stop)


@dataclass
class Layout:
    """Named slots of a residual stream of width ``width`` (``None``: grows as needed).

    Args:
        d: input dimension (the token has ``d + 1`` channels).
        width: fixed residual width ``D``; allocation past it raises
            :class:`WidthOverflowError`. ``None`` lets the layout grow.
        x_bound, y_bound: magnitude bounds of the input slots.
    """

    d: int
    width: Optional[int] = None
    x_bound: float = 10.0
    y_bound: float = 10.0
    _slots: Dict[str, Slot] = field(default_factory=dict, repr=False)
    _live: Dict[str, Slot] = field(default_factory=dict, repr=False)
    _labels: List[List[str]] = field(default_factory=list, repr=False)
    _frozen: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self.d = as_int(self.d, "d", min=1, max=MAX_D)
            if self.width is not None:
                self.width = as_int(self.width, "width", min=1, max=MAX_ROWS)
            self.x_bound = as_float(self.x_bound, "x_bound", positive=True)
            self.y_bound = as_float(self.y_bound, "y_bound", positive=True)
        except ArgumentError as exc:
            raise LayoutError(str(exc)) from None
        self.alloc("y", 1, bound=self.y_bound)
        self.alloc("x", self.d, bound=self.x_bound)
        self.alloc("pos", 2, bound=1.0)
        self.alloc("one", 1, bound=1.0)
        self.alloc("is_y", 1, bound=1.0)
        self.alloc("anchor", 2, bound=float("inf"))
        self.alloc("pair", 2, bound=float("inf"))
        self.alloc("bal", 1, bound=float("inf"))

    # ------------------------------------------------------------------ allocation
    @property
    def size(self) -> int:
        """Rows in use so far (the width the compiled model needs)."""
        return len(self._labels)

    def alloc(self, name: str, size: int, bound: float = 10.0, at: Optional[int] = None) -> Slot:
        """Allocate a slot of ``size`` rows.

        ``at`` pins the first row; otherwise the lowest free run of rows is used
        (rows of freed slots are reused). Raises :class:`SlotOverlapError` if ``at``
        collides with a live slot, :class:`LayoutError` for a duplicate name or bad size.
        """
        self._mutable(f"alloc({name!r})")
        if not isinstance(name, str) or not name:
            raise LayoutError(f"slot name must be a non-empty string; got {name!r}")
        if name in self._slots:
            raise LayoutError(f"slot {name!r} already exists; choose another name")
        try:
            size = as_int(size, f"slot {name!r}: size", min=1, max=MAX_ROWS)
            bound = as_float(bound, f"slot {name!r}: bound", positive=True, finite=name not in _INFINITE_OK)
        except ArgumentError as exc:
            raise LayoutError(str(exc)) from None
        if at is not None:  # a negative row would alias rows counted from the end of the stream
            try:
                at = as_int(at, f"slot {name!r}: at", min=0, max=MAX_ROWS - size)
            except ArgumentError as exc:
                raise LayoutError(f"{exc} (at= is the first row of the slot, counted from 0)") from None
        if at is None:
            at = self._first_fit(size)
        else:
            clash = self._clash(at, size)
            if clash is not None:
                raise SlotOverlapError(
                    f"slot {name!r} at rows {at}:{at + size} overlaps live slot {clash.name!r} "
                    f"(rows {clash.start}:{clash.stop}); free it first or pick other rows"
                )
        if at + size > MAX_ROWS:
            raise WidthOverflowError(
                f"slot {name!r} would end at row {at + size}, past the largest supported residual width "
                f"{MAX_ROWS}; use smaller slots or free slots that are no longer needed"
            )
        if self.width is not None and at + size > self.width:
            raise WidthOverflowError(
                f"slot {name!r} needs rows {at}:{at + size} but the residual width is {self.width}; "
                f"raise width or free slots that are no longer needed"
            )
        slot = Slot(name, int(at), size, float(bound))
        while len(self._labels) < slot.stop:
            self._labels.append([])
        for r in slot.rows:
            self._labels[r].append(name)
        self._slots[name] = slot
        self._live[name] = slot
        return slot

    def free(self, name: str) -> None:
        """Release a user slot; its rows may be reused by later allocations."""
        self._mutable(f"free({name!r})")
        if name in SYSTEM_SLOTS or name in INPUT_SLOTS:
            raise LayoutError(f"slot {name!r} belongs to the system and cannot be freed")
        self._require_live(name)
        del self._live[name]

    def freeze(self) -> None:
        """Refuse every later ``alloc``/``free`` (the layout of a compiled model)."""
        self._frozen = True

    def _mutable(self, what: str) -> None:
        if self._frozen:
            raise LayoutError(f"{what}: this layout is frozen (it belongs to a compiled model); "
                              f"edit the Program you compiled and compile again")

    def _clash(self, start: int, size: int) -> Optional[Slot]:
        for s in self._live.values():
            if start < s.stop and s.start < start + size:
                return s
        return None

    def _first_fit(self, size: int) -> int:
        start = 0
        for s in sorted(self._live.values(), key=lambda s: s.start):
            if s.start - start >= size:
                return start
            start = max(start, s.stop)
        return start

    # ------------------------------------------------------------------ queries
    def _require_live(self, name: str) -> Slot:
        if name in self._live:
            return self._live[name]
        if name in self._slots:
            raise UnknownSlotError(f"slot {name!r} was freed; allocate a new slot instead of reading it")
        known = ", ".join(sorted(self._live)) or "none"
        raise UnknownSlotError(f"unknown slot {name!r}; live slots are: {known}")

    def __getitem__(self, name: str) -> Slot:
        """The slot called ``name`` (live or freed)."""
        if name in self._slots:
            return self._slots[name]
        return self._require_live(name)

    def __contains__(self, name: str) -> bool:
        return name in self._slots

    def is_live(self, name: str) -> bool:
        return name in self._live

    def live(self, name: str) -> Slot:
        """The live slot ``name``; raises :class:`UnknownSlotError` if unknown or freed."""
        return self._require_live(name)

    def rows(self, name: str) -> List[int]:
        """Row indices of slot ``name``."""
        return list(self[name].rows)

    # ------------------------------------------------------------------ rows as vectors
    # The only row arithmetic of the library: everything else goes through these.
    def first_row(self, name: str) -> int:
        """Row of entry 0 of slot ``name`` (for saved layouts and labels; prefer :meth:`row`)."""
        return self[name].start

    def row(self, name: str, i: int = 0) -> int:
        """Row of entry ``i`` of slot ``name``."""
        s = self[name]
        if not 0 <= i < s.size:
            raise LayoutError(f"slot {name!r} has {s.size} entries; entry {i} does not exist")
        return s.start + i

    def rows_array(self, name: str, entries=None) -> np.ndarray:
        """Rows of ``entries`` (default: all) of slot ``name`` as an int64 array (:meth:`row`, vectorised)."""
        s = self[name]
        if entries is None:
            return np.arange(s.start, s.stop, dtype=np.int64)
        e = np.asarray(entries, dtype=np.int64)
        if e.size and (e.min() < 0 or e.max() >= s.size):
            raise LayoutError(f"slot {name!r} has {s.size} entries; entries {e.min()}..{e.max()} do not all exist")
        return s.start + e

    def slice(self, name: str) -> slice:
        """``slice`` of the rows of slot ``name`` (for the last axis of a residual tensor)."""
        s = self[name]
        return slice(s.start, s.stop)

    def view(self, H, name: str):
        """Slot ``name`` of a residual tensor ``H`` (``(..., D)``, numpy or torch): ``(..., size)``.

        A view, so ``lay.view(H, 'w')[...] = v`` writes into ``H``.
        """
        return H[..., self.slice(name)]

    def unit(self, name: str, i: int = 0, width: Optional[int] = None) -> np.ndarray:
        """The unit vector of entry ``i`` of slot ``name``, length ``width`` (default: :attr:`size`)."""
        e = np.zeros(self.size if width is None else width)
        e[self.row(name, i)] = 1.0
        return e

    def coeffs(self, terms=(), bias=None, *, size: int, width: Optional[int] = None) -> np.ndarray:
        """``(size, width)`` coefficients of ``Σ W·h[slot] + bias`` as a linear map of the column ``h``.

        ``terms`` maps slot names to ``(size, slot size)`` matrices (a mapping or ``(slot, W)``
        pairs); ``bias`` (``(size,)``) becomes the coefficient of the constant row ``one``.
        """
        M = np.zeros((size, self.size if width is None else width))
        items = terms.items() if hasattr(terms, "items") else terms
        for name, W in items:
            M[:, self.slice(name)] += W
        if bias is not None:
            M[:, self.row("one")] += bias
        return M

    def mask(self, names, width: Optional[int] = None) -> np.ndarray:
        """Boolean ``(width,)`` vector, true on the rows of the slots ``names``."""
        m = np.zeros(self.size if width is None else width, dtype=bool)
        for n in names:
            m[self.slice(n)] = True
        return m

    def slots(self) -> List[Slot]:
        """Every slot ever allocated, in allocation order."""
        return list(self._slots.values())

    def user_slots(self) -> List[Slot]:
        return [s for s in self._slots.values() if s.name not in SYSTEM_SLOTS]

    def row_labels(self) -> List[str]:
        """One label per row, e.g. ``'x[2]'``; reused rows read ``'a[0]|b[0]'``."""
        out = []
        for r, names in enumerate(self._labels):
            parts = [f"{n}[{r - self._slots[n].start}]" for n in names]
            out.append("|".join(parts) if parts else "")
        return out

    def system_rows(self) -> List[int]:
        return [r for n in SYSTEM_SLOTS for r in self[n].rows]

    def user_rows(self) -> List[int]:
        sys_rows = set(self.system_rows())
        return [r for r in range(self.size) if r not in sys_rows]

    def to_dict(self) -> dict:
        """JSON-able description (slot name → start, size, bound, live)."""
        return {
            "d": self.d,
            "width": self.width,
            "slots": [
                {"name": s.name, "start": s.start, "size": s.size, "bound": s.bound, "live": s.name in self._live}
                for s in self._slots.values()
            ],
        }

    def table(self) -> str:
        """A text table of the slots: name, rows, bound."""
        lines = [f"{'slot':<14}{'rows':>12}{'size':>6}{'bound':>12}"]
        for s in self._slots.values():
            b = "-" if s.bound == float("inf") else f"{s.bound:g}"
            lines.append(f"{s.name:<14}{f'{s.start}:{s.stop}':>12}{s.size:>6}{b:>12}")
        return "\n".join(lines)
