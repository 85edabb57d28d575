"""Residual-stream layout: named slots, overlap, freeing and reuse, labels."""
import pytest

import iclconstruct as ic
from iclconstruct.errors import (LayoutError, SlotOverlapError, UnknownSlotError, UnwrittenSlotError,
                                 WidthOverflowError)
from iclconstruct.lang.layout import SYSTEM_SLOTS, Layout


def test_system_and_input_slots_first():
    lay = Layout(3)
    assert lay["y"].start == 0 and lay["y"].size == 1
    assert lay.rows("x") == [1, 2, 3]
    for name in SYSTEM_SLOTS:
        assert name in lay


def test_alloc_is_contiguous_and_disjoint():
    lay = Layout(2)
    a = lay.alloc("a", 3)
    b = lay.alloc("b", 2)
    assert a.stop == b.start
    assert not set(a.rows) & set(b.rows)


def test_overlap_raises_with_names():
    lay = Layout(2)
    a = lay.alloc("a", 3)
    with pytest.raises(SlotOverlapError, match="'a'"):
        lay.alloc("b", 2, at=a.start + 1)


def test_free_and_reuse_rows_keeps_both_labels():
    lay = Layout(1)
    a = lay.alloc("a", 2)
    lay.free("a")
    b = lay.alloc("b", 2)
    assert b.start == a.start
    labels = lay.row_labels()
    assert labels[b.start] == "a[0]|b[0]"
    with pytest.raises(UnknownSlotError, match="freed"):
        lay.live("a")


def test_width_overflow():
    lay = Layout(2, width=12)
    with pytest.raises(WidthOverflowError, match="width"):
        lay.alloc("big", 5)


def test_duplicate_and_bad_names():
    lay = Layout(1)
    lay.alloc("a", 1)
    with pytest.raises(LayoutError, match="already exists"):
        lay.alloc("a", 1)
    with pytest.raises(LayoutError):
        lay.alloc("", 1)
    with pytest.raises(LayoutError):
        lay.alloc("z", 0)
    with pytest.raises(LayoutError, match="system"):
        lay.free("anchor")


def test_program_reading_unwritten_or_unknown_slot():
    p = ic.Program(2)
    p.slot("a", 2)
    p.slot("b", 2)
    with pytest.raises(UnwrittenSlotError, match="'a'"):
        p.mov("a", "b")
    with pytest.raises(UnknownSlotError, match="'nope'"):
        p.mov("nope", "b")
    p.free("b")
    with pytest.raises(UnknownSlotError, match="freed"):
        p.mov("x", "b")


def test_labels_travel_with_the_compiled_model():
    p = ic.Program(2)
    p.slot("s", 1)
    p.mul("x", "x", "s")
    p.readout("s")
    m = ic.compile(p)
    assert len(m.row_labels) == m.d_model
    assert m.row_labels[m.layout["s"].start] == "s[0]"
    assert m.row_labels[m.layout["x"].start + 1] == "x[1]"
    assert "s" in m.layout.to_dict()["slots"][-1]["name"]
