"""Misuse raises the library's own exceptions, with a message that says what to change."""
import numpy as np
import pytest
import torch

import iclconstruct as ic
from iclconstruct import errors as E


def small_program(d=2):
    p = ic.Program(d)
    p.slot("s", 1, bound=300)
    p.mul("x", "x", "s")
    p.readout("s")
    return p


def test_all_errors_share_a_base():
    for name in ("SlotOverlapError", "UnknownSlotError", "ShapeError", "CausalityError", "WidthOverflowError",
                 "NonFiniteError", "DivisorTooSmallError", "OutOfRangeError", "ContextTooLongError",
                 "UnwrittenSlotError", "CheckpointError", "DivergenceError"):
        assert issubclass(getattr(E, name), E.ICLConstructError)


def test_overlapping_slots():
    p = ic.Program(2)
    with pytest.raises(E.SlotOverlapError, match="overlaps live slot 'x'"):
        p.slot("a", 2, at=1)


def test_unknown_slot():
    p = ic.Program(2)
    with pytest.raises(E.UnknownSlotError, match="unknown slot 'w'"):
        p.aff("w", {"x": 1.0})


def test_mul_shape_mismatch_names_the_slot():
    p = ic.Program(3)
    p.slot("o", 2)
    with pytest.raises(E.ShapeError, match=r"needs 2 rows .* in 'x', which has 3"):
        p.mul("x", "x", "o", shape=(1, 2, 2))
    with pytest.raises(E.ShapeError, match="pass shape"):
        p.slot("o5", 5)
        p.mul("x", "y", "o5")


def test_mov_size_mismatch_and_bad_weights():
    p = ic.Program(3)
    p.slot("a", 2)
    with pytest.raises(E.ShapeError, match="sizes must match"):
        p.mov("x", "a")
    with pytest.raises(E.ShapeError, match=r"shape \(2, 3\)"):
        p.aff("a", {"x": np.ones((3, 3))})
    with pytest.raises(E.ShapeError, match="NaN"):
        p.aff("a", bias=[np.nan, 0.0])


def test_reading_from_a_later_position():
    p = ic.Program(2)
    p.slot("a", 2)
    with pytest.raises(E.CausalityError, match="later position"):
        p.mov("x", "a", offset=-1)


def test_width_overflow():
    p = ic.Program(2, width=14)
    with pytest.raises(E.WidthOverflowError, match="raise width"):
        p.slot("big", 8)
    with pytest.raises(E.WidthOverflowError, match="raise width"):
        ic.compile(small_program(), width=5)


def test_system_slots_are_protected():
    p = ic.Program(2)
    p.slot("a", 2)
    with pytest.raises(E.LayoutError, match="system"):
        p.aff("anchor", bias=[1.0, 1.0])
    with pytest.raises(E.LayoutError, match="internal"):
        p.mov("anchor", "a")


def test_non_finite_input():
    m = ic.compile(small_program())
    tok = ic.tokens.encode(np.ones((2, 2)), np.ones(2), np.ones(2))
    tok[0, 1, 0] = np.nan
    with pytest.raises(E.NonFiniteError, match="NaN"):
        m(tok)
    with pytest.raises(E.NonFiniteError):
        ic.interpret(m.program, tok)
    with pytest.raises(E.NonFiniteError, match="X"):
        ic.tokens.encode(np.full((2, 2), np.inf), np.ones(2))


def test_input_out_of_range_says_what_to_change():
    m = ic.compile(small_program())
    tok = ic.tokens.encode(np.full((1, 2), 50.0), np.ones(1), np.ones(2))
    with pytest.raises(E.OutOfRangeError, match="x_bound"):
        m(tok)


def test_division_by_too_small_a_value():
    p = ic.Program(1)
    p.slot("q", 1, bound=1e4)
    p.div("x", "y", "q")  # y is 0 at every x̃ column
    p.readout("q", columns="all")
    tok = ic.tokens.encode(np.ones((1, 1)), np.ones(1), np.ones(1))
    with pytest.raises(E.DivisorTooSmallError, match="div_min"):
        ic.compile(p)(tok)
    with pytest.raises(E.DivisorTooSmallError, match="div_min"):
        ic.interpret(p, tok)


def test_div_in_place_is_refused():
    p = ic.Program(1)
    p.slot("c", 1)
    p.aff("c", bias=1.0)
    with pytest.raises(E.LayoutError, match="separate slot"):
        p.div("x", "c", "x")


def test_declared_bound_exceeded_at_runtime():
    p = ic.Program(2)
    p.slot("s", 1, bound=1.0)  # x·x can reach 200
    p.mul("x", "x", "s")
    p.readout("s")
    tok = ic.tokens.encode(np.full((1, 2), 5.0), np.ones(1), np.ones(2))
    with pytest.raises(E.OutOfRangeError, match="declared bound"):
        ic.compile(p)(tok)
    with pytest.raises(E.OutOfRangeError, match="declared bound"):
        ic.interpret(p, tok)


def test_context_too_long_and_bad_token_shape():
    m = ic.compile(small_program(), max_len=5)
    tok = ic.tokens.encode(np.ones((3, 2)), np.ones(3), np.ones(2))
    with pytest.raises(E.ContextTooLongError, match="max_len"):
        m(tok)
    with pytest.raises(E.ShapeError, match=r"\(B, T, 3\)"):
        m(np.ones((1, 3, 5)))


def test_compile_needs_readout_and_supported_options():
    p = ic.Program(2)
    with pytest.raises(E.ICLConstructError, match="readout"):
        ic.compile(p)
    with pytest.raises(E.ICLConstructError, match="not supported yet"):
        ic.compile(small_program(), block="post_ln")
    with pytest.raises(E.ICLConstructError, match="dtype"):
        ic.compile(small_program(), dtype=torch.float16)


def test_constants_validation():
    with pytest.raises(E.ICLConstructError, match="product_scale"):
        ic.Constants(product_scale=-1)
    with pytest.raises(E.ICLConstructError, match="bypass_scale"):
        ic.Constants(bypass_scale=1.0)
