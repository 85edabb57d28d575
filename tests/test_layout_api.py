"""The Layout's row API: the only way the rest of the library turns slot names into rows."""
import numpy as np
import pytest
import torch

from iclconstruct import errors as E
from iclconstruct.lang.layout import Layout


def _lay():
    lay = Layout(2)
    lay.alloc("a", 3, bound=5.0)
    lay.alloc("b", 1)
    return lay


def test_view_reads_and_writes_numpy_and_torch():
    lay = _lay()
    H = np.zeros((2, 4, lay.size))
    lay.view(H, "a")[...] = [1.0, 2.0, 3.0]
    assert lay.view(H, "a").shape == (2, 4, 3) and H.sum() == 2 * 4 * 6
    assert (lay.view(H, "b") == 0).all() and list(H[0, 0, lay.rows("a")]) == [1.0, 2.0, 3.0]
    Ht = torch.zeros(1, 2, lay.size)
    lay.view(Ht, "x")[...] = 7.0
    assert float(Ht.sum()) == 7.0 * 2 * 2


def test_row_unit_coeffs_mask():
    lay = _lay()
    assert lay.row("a", 2) == lay.rows("a")[2] and lay.first_row("b") == lay.rows("b")[0]
    with pytest.raises(E.LayoutError, match="entry 3"):
        lay.row("a", 3)
    e = lay.unit("a", 1, width=lay.size + 2)
    assert e.shape == (lay.size + 2,) and e.sum() == 1.0 and e[lay.row("a", 1)] == 1.0
    M = lay.coeffs({"a": np.ones((1, 3)), "b": [[2.0]]}, bias=[5.0], size=1)
    h = np.zeros(lay.size)
    lay.view(h, "a")[...] = [1.0, 2.0, 3.0]
    lay.view(h, "b")[...] = 4.0
    lay.view(h, "one")[...] = 1.0
    assert (M @ h).tolist() == [6.0 + 8.0 + 5.0]
    m = lay.mask(["a", "y"])
    assert m.sum() == 4 and m[lay.row("y")] and not m[lay.row("b")]


def test_unknown_slots_are_refused_by_name():
    with pytest.raises(E.UnknownSlotError, match="nope"):
        _lay().view(np.zeros(10), "nope")


def test_frozen_layout_refuses_changes():
    lay = _lay()
    lay.freeze()
    with pytest.raises(E.LayoutError, match="frozen"):
        lay.alloc("c", 1)
    with pytest.raises(E.LayoutError, match="frozen"):
        lay.free("a")
