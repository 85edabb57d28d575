"""The SGD circuit's stability guard: the exact non-expansion condition, in both paths."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.errors import DivergenceError
from iclconstruct.circuits.sgd import stability_guards
from iclconstruct.lang.checks import check_guards


def _task(d, n, seed, B=4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, n, d))
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((B, d)))
    return X, y, rng.standard_normal((B, d))


@pytest.mark.parametrize("lr", [0.01, 0.03])
def test_papers_step_sizes_run_at_d8(lr):
    X, y, xq = _task(8, 24, seed=1)
    ref = np.einsum("bd,bd->b", xq, ic.reference.sgd(X, y, lr, lam=0.0))
    m = ic.circuits.sgd(8, lr)
    assert np.abs(m.predict(X, y, xq) - ref).max() < 1e-6
    out = ic.interpret(m.program, ic.tokens.encode(X, y, xq)).output[:, -1]
    assert np.abs(out - ref).max() < 1e-12


@settings(max_examples=15, deadline=None)
@given(st.floats(1.05, 1.98), st.floats(0.0, 0.5), st.integers(0, 10_000))
def test_contracting_steps_beyond_the_old_guard_run(factor, lam, seed):
    """2·lr·(‖x‖² + lam) in (1, 2): refused before, stable in fact; both paths run and agree."""
    X, y, xq = _task(3, 6, seed, B=2)
    sq = float((X ** 2).sum(-1).max())
    lr = factor / (2.0 * (sq + lam))
    ref = np.einsum("bd,bd->b", xq, ic.reference.sgd(X, y, lr, lam=lam))
    m = ic.circuits.sgd(3, lr, lam=lam)
    assert np.abs(m.predict(X, y, xq) - ref).max() < 1e-6 * (1 + np.abs(ref).max())
    out = ic.interpret(m.program, ic.tokens.encode(X, y, xq)).output[:, -1]
    assert np.allclose(out, ref, rtol=1e-12, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(st.floats(2.05, 50.0), st.floats(0.0, 0.5), st.integers(0, 10_000))
def test_expanding_step_is_refused_by_model_and_interpreter(factor, lam, seed):
    X, y, xq = _task(3, 6, seed, B=2)
    sq = float((X ** 2).sum(-1).max())
    lr = factor / (2.0 * (sq + lam))
    m = ic.circuits.sgd(3, lr, lam=lam, y_bound=1e6, w_bound=1e6)
    tok = ic.tokens.encode(X, y, xq)
    with pytest.raises(DivergenceError, match=r"> 2.*expands") as e1:
        m(tok)
    with pytest.raises(DivergenceError) as e2:
        ic.interpret(m.program, tok)
    assert str(e1.value) == str(e2.value)
    assert f"{factor:.4g}" in str(e1.value)


def test_the_message_is_true_the_reference_does_grow():
    """What the guard refuses really diverges: the reference iterate blows up on repetition."""
    x = np.array([[1.0, 2.0]])
    lr = 1.1 / (x ** 2).sum()  # 2·lr·‖x‖² = 2.2
    X = np.repeat(x, 40, axis=0)
    w = ic.reference.sgd(X, np.zeros(40), lr, w0=[1.0, 1.0])
    assert np.linalg.norm(w) > 100
    with pytest.raises(DivergenceError, match="lr <= "):
        check_guards(stability_guards(lr), ic.tokens.encode(X[:3], np.zeros(3), x[0]))


def test_guard_is_exactly_non_expansion():
    g = stability_guards(0.25, lam=1.0)
    ok = ic.tokens.encode(np.array([[1.0, 1.0, 1.0]]), np.zeros(1), None)  # 2·0.25·(3 + 1) = 2
    check_guards(g, ok)
    bad = ic.tokens.encode(np.array([[1.0, 1.0, 1.05]]), np.zeros(1), None)
    with pytest.raises(DivergenceError):
        check_guards(g, bad)
    # the matrix of the step has spectral norm <= 1 exactly at the boundary
    x = np.ones(3)
    M = np.eye(3) - 2 * 0.25 * (np.outer(x, x) + np.eye(3))
    assert np.isclose(np.abs(np.linalg.eigvalsh(M)).max(), 1.0)
