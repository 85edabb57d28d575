"""The interpreter alone (no compiler): exact semantics of the circuits' programs and of ``pos``."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct import reference as ref
from iclconstruct.lang.embedding import position_units
from iclconstruct.testing import assert_matches_interpreter


def _task(d, n, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * scale
    return X, X @ rng.standard_normal(d) + 0.1 * rng.standard_normal(n), rng.standard_normal(d) * scale


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 7), st.floats(0.05, 5.0), st.integers(0, 2**31), st.booleans())
def test_interpreted_ridge_program_is_ridge_on_every_prefix(d, n, lam, seed, gain):
    """Both forms of the update (outer: A⁻¹ −= uuᵀ/c; gain: g = u/c, A⁻¹ −= u gᵀ)."""
    X, y, xq = _task(d, n, seed, scale=0.7)
    p = (ic.circuits.ridge_gain_program if gain else ic.circuits.ridge_program)(d, lam)
    out = ic.interpret(p, ic.tokens.encode(X, y, xq)).output[0]
    want = [xk @ ref.ridge(X[:k], y[:k], lam) if k else 0.0 for k, xk in enumerate(np.vstack([X, xq]))]
    np.testing.assert_allclose(out, want, rtol=1e-9, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 7), st.floats(0.001, 0.05), st.floats(0.0, 0.5), st.integers(0, 2**31))
def test_interpreted_sgd_program_is_sgd_on_every_prefix(d, n, lr, lam, seed):
    X, y, xq = _task(d, n, seed, scale=0.7)
    w0 = np.linspace(-0.5, 0.5, d)
    p = ic.circuits.sgd_program(d, lr, lam=lam, w0=w0)
    out = ic.interpret(p, ic.tokens.encode(X, y, xq)).output[0]
    want = [xk @ ref.sgd(X[:k], y[:k], lr, lam=lam, w0=w0) for k, xk in enumerate(np.vstack([X, xq]))]
    np.testing.assert_allclose(out, want, rtol=1e-9, atol=1e-9)


def _pos_program():
    p = ic.Program(1)
    p.slot("u", 2, bound=1.0)
    p.slot("o", 1, bound=2.0)
    p.aff("u", {"pos": np.eye(2)})
    p.aff("o", {"u": [[1.0, -1.0]]})
    p.readout("o", columns="all")
    return p


@pytest.mark.parametrize("max_len", [8, 33])
def test_user_ops_see_the_same_pos_in_both_paths(max_len):
    p = _pos_program()
    tok = ic.tokens.encode(np.ones((3, 1)), np.ones(3), np.ones(1))
    u1, u2 = position_units(np.arange(7), max_len)
    np.testing.assert_allclose(ic.interpret(p, tok, max_len=max_len).output[0], u1 - u2, rtol=0, atol=0)
    assert_matches_interpreter(ic.compile(p, max_len=max_len), tok)


def test_interpreter_refuses_what_the_position_units_cannot_hold():
    tok = ic.tokens.encode(np.ones((4, 1)), np.ones(4), np.ones(1))
    with pytest.raises(ic.errors.ContextTooLongError, match="max_len"):
        ic.interpret(_pos_program(), tok, max_len=8)


def test_a_compiled_models_program_carries_its_position_scale():
    p = _pos_program()
    m = ic.compile(p, max_len=8)
    tok = ic.tokens.encode(np.ones((3, 1)), np.ones(3), np.ones(1))
    assert m.program.max_len == 8 and p.max_len is None
    np.testing.assert_allclose(ic.interpret(m.program, tok).output, m(tok), rtol=0, atol=1e-6)
    u1, u2 = position_units(np.arange(7), 1025)
    np.testing.assert_allclose(ic.interpret(p, tok).output[0], u1 - u2, rtol=0, atol=0)  # the default scale
