"""A division's declared minimum ``|divisor| ≥ min_abs`` (``Div.min_abs``): checked by the interpreter
and the model, kept by save/load, and used by the certificate instead of ``Constants.div_min``."""
import numpy as np
import pytest

import iclconstruct as ic
from iclconstruct import errors as E
from iclconstruct.lang.ops import Div


def _program(c_value: float, min_abs: float) -> ic.Program:
    p = ic.Program(1, x_bound=2.0, y_bound=2.0)
    p.slot("c", 1, bound=4.0)
    p.slot("q", 1, bound=4.0)
    p.aff("c", bias=np.array([c_value]))
    p.div("x", "c", "q", min_abs=min_abs)
    p.readout("q")
    return p


def _tokens():
    return ic.tokens.encode(np.array([[[0.5], [1.5]]]), np.array([[0.3, -0.2]]), np.array([[1.2]]))


def test_a_false_declared_minimum_is_refused_by_interpreter_and_model():
    p = _program(1.5, min_abs=2.0)   # |c| = 1.5, declared ≥ 2
    with pytest.raises(E.DivisorTooSmallError, match="the program states"):
        ic.interpret(p, _tokens())
    m = ic.compile(p, max_len=9)
    with pytest.raises(E.DivisorTooSmallError, match="the program states"):
        m(_tokens())
    out = m(_tokens(), check=False)   # the arithmetic itself still runs: x / 1.5
    np.testing.assert_allclose(np.asarray(out)[0, -1], 1.2 / 1.5, rtol=1e-6)


def test_a_true_declared_minimum_serves_tightens_the_certificate_and_survives_save_load(tmp_path):
    tok = _tokens()
    # fixed constants: with None, compile's anchor search could pick different anchors for the two
    fixed = ic.Constants.float64()
    plain = ic.compile(_program(1.5, 0.0), max_len=9, constants=fixed)
    declared = ic.compile(_program(1.5, 1.5), max_len=9, constants=fixed)
    np.testing.assert_array_equal(plain(tok), declared(tok))   # same weights, same arithmetic
    np.testing.assert_allclose(np.asarray(ic.interpret(_program(1.5, 1.5), tok).output)[0, -1], 0.8, rtol=1e-12)
    assert declared.certify(1).max_abs_error < plain.certify(1).max_abs_error
    ic.io.save(declared, tmp_path / "m")
    back = ic.io.load(tmp_path / "m")
    assert [o.min_abs for o in back.program.ops if isinstance(o, Div)] == [1.5]
    bad = ic.Program(1)
    bad.slot("c", 1, bound=4.0)
    bad.slot("q", 1, bound=4.0)
    bad.aff("c", bias=np.array([1.0]))
    for v in (-1.0, float("nan"), True):
        with pytest.raises(E.ShapeError, match="min_abs"):
            bad.div("x", "c", "q", min_abs=v)


def test_the_ridge_circuits_declare_c_at_least_sigma():
    for p in (ic.circuits.ridge_program(3, 0.5), ic.circuits.ridge_gain_program(3, 2.0)):
        sig = max(1.0, p.meta["lam"])
        assert {o.min_abs for o in p.ops if isinstance(o, Div)} == {sig}
