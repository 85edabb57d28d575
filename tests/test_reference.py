"""Property tests of the float64 reference solvers (iclconstruct.reference)."""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from iclconstruct import reference as ref
from iclconstruct.errors import (DivergenceError, ICLConstructError, NonFiniteError, OutOfRangeError,
                                 ShapeError)

dims = st.integers(1, 6)
npts = st.integers(1, 10)
seeds = st.integers(0, 2**31 - 1)


def draw(seed, n, d, batch=()):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(batch + (n, d)), rng.standard_normal(batch + (n,))


@settings(max_examples=100, deadline=None)
@given(seeds, npts, dims, st.floats(0.05, 5.0))
def test_ridge_matches_sherman_morrison_updates(seed, n, d, lam):
    X, y = draw(seed, n, d)
    A_inv = np.eye(d) / lam
    for x in X:  # (λI + Σ x xᵀ)⁻¹ built one example at a time (paper Eq. 5)
        A_inv = ref.sherman_morrison(A_inv, x, x)
    np.testing.assert_allclose(A_inv @ (X.T @ y), ref.ridge(X, y, lam), rtol=1e-8, atol=1e-8)


@settings(max_examples=100, deadline=None)
@given(seeds, dims, st.integers(0, 6))
def test_ols_normal_equations_when_overdetermined(seed, d, extra):
    X, y = draw(seed, d + extra, d)
    assume(np.linalg.cond(X) < 1e4)  # comparing two solvers needs a well-posed problem
    np.testing.assert_allclose(ref.ols(X, y), np.linalg.solve(X.T @ X, X.T @ y), rtol=1e-6, atol=1e-8)


@settings(max_examples=100, deadline=None)
@given(seeds, st.integers(2, 7), st.data())
def test_ols_min_norm_when_underdetermined(seed, d, data):
    n = data.draw(st.integers(1, d - 1))
    X, y = draw(seed, n, d)
    assume(np.linalg.cond(X) < 1e4)
    w = ref.ols(X, y)
    np.testing.assert_allclose(X @ w, y, atol=1e-8)  # interpolates
    # minimum norm: w lies in the row space of X (orthogonal to the null space)
    null = np.linalg.svd(X)[2][n:]
    np.testing.assert_allclose(null @ w, 0, atol=1e-8)
    # and any other interpolant is longer
    z = null.T @ np.random.default_rng(seed).standard_normal(d - n)
    assert np.linalg.norm(w) <= np.linalg.norm(w + z) + 1e-12


@settings(max_examples=100, deadline=None)
@given(seeds, npts, dims, st.floats(0.01, 2.0), st.floats(0.1, 4.0))
def test_bayes_is_ridge(seed, n, d, s2, t2):
    X, y = draw(seed, n, d)
    np.testing.assert_allclose(ref.bayes(X, y, s2, t2), ref.ridge(X, y, s2 / t2), rtol=1e-10)
    np.testing.assert_allclose(ref.bayes(X, y, 0.0, t2), ref.ols(X, y), rtol=1e-10, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(seeds, npts, dims, st.floats(0.0, 0.2), st.floats(0.0, 1.0))
def test_batch_gd_one_step_closed_form(seed, n, d, lr, lam):
    X, y = draw(seed, n, d)
    w0 = np.random.default_rng(seed + 1).standard_normal(d)
    expect = w0 - 2 * lr * (X.T @ X @ w0 - X.T @ y + lam * w0)
    np.testing.assert_allclose(ref.batch_gd(X, y, lr, 1, lam, w0), expect, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ref.batch_gd(X, y, lr), 2 * lr * X.T @ y, rtol=1e-10, atol=1e-12)
    # k steps = k applications of one step
    w = w0
    for _ in range(3):
        w = ref.batch_gd(X, y, lr, 1, lam, w)
    np.testing.assert_allclose(ref.batch_gd(X, y, lr, 3, lam, w0), w, rtol=1e-9, atol=1e-12)
    # 1/n-scaled variant
    np.testing.assert_allclose(ref.batch_gd_mean(X, y, lr, 2, lam, w0), ref.batch_gd(X, y, lr / n, 2, n * lam, w0),
                               rtol=1e-10, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(seeds, npts, dims, st.floats(0.0, 0.1), st.floats(0.0, 0.5))
def test_sgd_matches_explicit_loop(seed, n, d, lr, lam):
    X, y = draw(seed, n, d)
    w = np.zeros(d)
    for x, t in zip(X, y):
        w = w - 2 * lr * (np.outer(x, x) @ w - t * x + lam * w)
    np.testing.assert_allclose(ref.sgd(X, y, lr, lam), w, rtol=1e-10, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(seeds, npts, dims)
def test_newton_converges_to_ols(seed, n, d):
    X, y = draw(seed, n, d)
    assume(np.linalg.cond(X) < 1e4)
    np.testing.assert_allclose(ref.newton(X, y, 60), ref.ols(X, y), rtol=1e-6, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(seeds, npts, dims, st.integers(1, 4))
def test_batched_equals_loop(seed, n, d, B):
    X, y = draw(seed, n, d, (B,))
    q = np.random.default_rng(seed).standard_normal((B, d))
    fns = {
        "ols": lambda X, y, q: ref.ols(X, y),
        "ridge": lambda X, y, q: ref.ridge(X, y, 0.3),
        "sgd": lambda X, y, q: ref.sgd(X, y, 0.02, 0.1),
        "gd": lambda X, y, q: ref.batch_gd(X, y, 0.02, 3, 0.1),
        "bayes": lambda X, y, q: ref.bayes(X, y, 0.25, 1.0),
        "newton": lambda X, y, q: ref.newton(X, y, 8),
        "knn": lambda X, y, q: ref.knn(X, y, q, 3),
        "knn2": lambda X, y, q: ref.knn(X, y, q, 2, "inverse_square"),
        "avg": lambda X, y, q: ref.averaging(X, y),
    }
    for name, f in fns.items():
        batched = f(X, y, q)
        looped = np.stack([f(X[b], y[b], q[b]) for b in range(B)])
        np.testing.assert_allclose(batched, looped, rtol=1e-9, atol=1e-12, err_msg=name)


def test_knn_and_averaging_values():
    X = np.array([[0.0], [1.0], [3.0], [10.0]])
    y = np.array([0.0, 1.0, 3.0, 10.0])
    assert ref.knn(X, y, np.array([0.9]), k=2) == pytest.approx(0.5)
    # inverse-square: weights 1/0.81 and 1/0.01
    w = np.array([1 / 0.81, 1 / 0.01])
    assert ref.knn(X, y, np.array([0.9]), k=2, weights="inverse_square") == pytest.approx((w @ [0, 1]) / w.sum())
    assert ref.knn(X, y, np.array([3.0]), k=3, weights="inverse_square") == pytest.approx(3.0)  # exact match
    assert ref.knn(X, y, np.array([0.0]), k=99) == pytest.approx(y.mean())  # k capped at n
    np.testing.assert_allclose(ref.averaging(X, y), [np.mean(y * X[:, 0])])


def test_empty_context():
    X, y = np.zeros((0, 3)), np.zeros(0)
    for w in (ref.ols(X, y), ref.ridge(X, y, 1.0), ref.newton(X, y, 3), ref.sgd(X, y, 0.1)):
        np.testing.assert_array_equal(w, np.zeros(3))
    with pytest.raises(ShapeError):
        ref.averaging(X, y)
    with pytest.raises(ShapeError):
        ref.knn(X, y, np.zeros(3))


def test_errors():
    X, y = np.ones((4, 3)), np.ones(4)
    with pytest.raises(OutOfRangeError, match="lam"):
        ref.ridge(X, y, 0.0)
    with pytest.raises(OutOfRangeError, match="lam"):
        ref.ridge(X, y, -1.0)
    with pytest.raises(ShapeError, match="y must have shape"):
        ref.ols(X, np.ones(5))
    with pytest.raises(ShapeError):
        ref.ols(np.ones(3), y)
    with pytest.raises(ShapeError, match="w0"):
        ref.sgd(X, y, 0.1, w0=np.ones(2))
    with pytest.raises(ShapeError):
        ref.knn(X, y, np.ones(2))
    with pytest.raises(ShapeError):
        ref.sherman_morrison(np.eye(3), np.ones(2), np.ones(3))
    with pytest.raises(OutOfRangeError, match="singular"):
        ref.sherman_morrison(np.eye(2), np.array([1.0, 0.0]), np.array([-1.0, 0.0]))
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="X"):
        ref.ols(bad, y)
    with pytest.raises(NonFiniteError):
        ref.ridge(X, np.array([1, 2, np.inf, 0.0]), 1.0)
    with pytest.raises(DivergenceError, match="alpha"):
        ref.newton(X, y, 3, alpha=10.0)
    with pytest.raises(OutOfRangeError):
        ref.batch_gd(X, y, 0.1, steps=-1)
    with pytest.raises(OutOfRangeError):
        ref.bayes(X, y, 0.1, 0.0)
    with pytest.raises(OutOfRangeError):
        ref.knn(X, y, np.ones(3), k=0)
    # all are library errors and ValueErrors
    assert issubclass(ShapeError, ICLConstructError) and issubclass(ShapeError, ValueError)


def test_sgd_divergence_is_not_guarded():
    """Reference semantics: a too-large lr diverges (documented), it does not raise."""
    X = np.full((30, 2), 3.0)
    w = ref.sgd(X, np.ones(30), lr=1.0)
    assert not np.all(np.isfinite(w)) or np.linalg.norm(w) > 1e6
