"""Theorem 1 and 2 circuits against the numpy solvers (hypothesis, float64, default constants)."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct import errors as E


@st.composite
def gaussian_task(draw, max_d, max_n, min_n=1):
    d = draw(st.integers(1, max_d))
    n = draw(st.integers(min_n, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    return X, X @ w, rng.standard_normal(d), rng


def within(got, ref, tol=1e-6):
    got, ref = np.asarray(got), np.asarray(ref)
    assert np.all(np.abs(got - ref) <= tol * (1 + np.abs(ref))), (got, ref, np.abs(got - ref).max())


@given(gaussian_task(32, 64), st.floats(0.0, 0.5), st.booleans(), st.floats(0.01, 1.0))
def test_sgd_circuit_matches_reference(task, lam, random_w0, frac):
    X, y, xq, rng = task
    d = X.shape[1]
    sq = (X * X).sum(1).max()
    lr = frac * min(1 / (2 * sq), 1 / (sq + lam))  # 2·lr·‖x_i‖² <= 1 and 2·lr·(‖x_i‖² + lam) <= 2
    w0 = rng.standard_normal(d) if random_w0 else None
    m = ic.circuits.sgd(d, lr, lam=lam, w0=w0)
    ref = xq @ ic.reference.sgd(X, y, lr, lam=lam, w0=w0)
    within(m.predict(X, y, xq), ref)


@given(gaussian_task(16, 32), st.floats(0.1, 10.0))
def test_ridge_circuit_matches_reference(task, lam):
    X, y, xq, _ = task
    m = ic.circuits.ridge(X.shape[1], lam)
    within(m.predict(X, y, xq), xq @ ic.reference.ridge(X, y, lam))


@given(gaussian_task(6, 10), st.floats(0.1, 10.0), st.floats(0.0, 0.5))
def test_every_prefix_in_one_forward_pass(task, lam, sgd_lam):
    X, y, xq, _ = task
    n, d = X.shape
    xs = np.vstack([X, xq])
    r = ic.circuits.ridge(d, lam)(ic.tokens.encode(X, y, xq))[0]
    sq = (X * X).sum(1).max()
    lr = 0.4 * min(1 / (2 * sq), 1 / (sq + sgd_lam))
    s = ic.circuits.sgd(d, lr, lam=sgd_lam)(ic.tokens.encode(X, y, xq))[0]
    assert r.shape == (n + 1,)
    for i in range(n + 1):
        ridge_i = np.zeros(d) if i == 0 else ic.reference.ridge(X[:i], y[:i], lam)
        sgd_i = np.zeros(d) if i == 0 else ic.reference.sgd(X[:i], y[:i], lr, lam=sgd_lam)
        within(r[i], xs[i] @ ridge_i)
        within(s[i], xs[i] @ sgd_i)


def test_ridge_n1_is_theorem2_exactly():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(4), rng.standard_normal(4)
    lam = 0.7
    A_inv = ic.reference.sherman_morrison(np.eye(4) / lam, x, x)
    m = ic.circuits.ridge(4, lam)
    within(m.predict(x[None], np.array([x @ w]), x), x @ (A_inv @ (x * (x @ w))))


def test_batched_and_torch_io():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 7, 3))
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((5, 3)))
    xq = rng.standard_normal((5, 3))
    m = ic.circuits.ridge(3, 0.5)
    out = m.predict(X, y, xq)
    assert out.shape == (5,) and isinstance(out, np.ndarray)
    ref = np.einsum("bd,bd->b", xq, ic.reference.ridge(X, y, 0.5))
    within(out, ref)
    t = m.predict(torch.as_tensor(X), torch.as_tensor(y), torch.as_tensor(xq))
    assert isinstance(t, torch.Tensor) and t.shape == (5,)
    assert m.predict(X[0], y[0], xq[0]).shape == ()
    assert m(ic.tokens.encode(X, y, xq)).shape == (5, 8)


def test_weight_tied_block_memory_does_not_grow_with_n():
    m = ic.circuits.sgd(4, 0.01)
    assert m.layers_per_example() == 2
    p0 = m.n_params()
    rng = np.random.default_rng(0)
    for n in (2, 40):
        X = rng.standard_normal((n, 4)) * 0.5
        m.predict(X, X.sum(1), X[0])
    assert m.n_params() == p0
    r = ic.circuits.ridge(4, 1.0)
    assert r.layers_per_example() == 3
    assert r.depth(10) == r.n_layers_unique + (10 - 1) * 3


def test_costs_beat_the_papers_counts():
    for d in (2, 8, 16):
        s = ic.circuits.sgd(d, 0.01, lam=0.1)
        r = ic.circuits.ridge(d, 0.1)
        assert s.layers_per_example() < 9 and r.layers_per_example() < 14
        user_rows_r = len(r.layout.user_rows()) - 3  # minus pos units and is_y (system inputs)
        assert user_rows_r <= 3 * d * d + 5 * d + 3 + 2 * d


def test_bad_inputs():
    m = ic.circuits.ridge(3, 1.0)
    X = np.ones((2, 3))
    with pytest.raises(E.ShapeError, match="d = 3"):
        m.predict(np.ones((2, 4)), np.ones(2), np.ones(4))
    with pytest.raises(E.ShapeError, match="n = 0"):
        m.predict(np.ones((0, 3)), np.ones(0), np.ones(3))
    with pytest.raises(E.ShapeError, match="y must have shape"):
        m.predict(X, np.ones(3), np.ones(3))
    with pytest.raises(E.NonFiniteError):
        m.predict(X, np.array([1.0, np.nan]), np.ones(3))
    with pytest.raises(E.ICLConstructError, match="lam"):
        ic.circuits.ridge(3, 0.0)
    with pytest.raises(E.ICLConstructError, match="lam"):
        ic.circuits.ridge(3, -1.0)
    with pytest.raises(E.OutOfRangeError, match="x_bound"):
        m.predict(X * 100, np.ones(2), np.ones(3))
    with pytest.raises(E.ContextTooLongError, match="max_len"):
        ic.circuits.ridge(3, 1.0, max_len=9).predict(np.ones((5, 3)) * 0.1, np.ones(5), np.ones(3))


def test_unstable_sgd_says_so():
    X = np.full((3, 2), 2.0)
    m = ic.circuits.sgd(2, lr=0.5)
    with pytest.raises(E.DivergenceError, match="lr"):
        m.predict(X, X.sum(1), X[0])
    # 2·lr·‖x‖² <= 1 holds, but the L2 term alone expands: 2·lr·(‖x‖² + lam) > 2
    X = np.full((3, 1), 0.01)
    with pytest.raises(E.DivergenceError, match="lam"):
        ic.circuits.sgd(1, lr=4000.0, lam=0.5).predict(X, X[:, 0], X[0])


def test_sgd_with_a_huge_step_on_tiny_inputs():
    """Large lr multiplies no error: the guard bounds |x_i| <= 1/√lr, so the operands' bounds shrink as lr grows."""
    X, y, xq = np.array([[0.00123015]]), np.array([0.0003675]), np.array([-0.27413786])
    lr = 0.4 / (2 * float((X * X).sum(1).max()))  # ≈ 1.3e5
    m = ic.circuits.sgd(1, lr)
    within(m.predict(X, y, xq), xq @ ic.reference.sgd(X, y, lr))


def test_summary_lists_layout_and_costs():
    s = ic.circuits.ridge(2, 1.0).summary()
    for word in ("layers per example = 3", "Ainv", "div(-1·O / |c| +=> Ainv)", "parameters"):
        assert word in s, word
