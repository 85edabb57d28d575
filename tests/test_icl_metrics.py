"""SPD / ILWD / MSPD / R² / bootstrap on predictors with known answers (paper §4.1–4.2)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from iclconstruct import icl, reference as ref
from iclconstruct.errors import OutOfRangeError, ShapeError
from iclconstruct.icl import predictors as P


class PredictOnly:
    """Exposes only predict(): forces ILWD to use the probe-input least-squares fit."""

    def __init__(self, inner):
        self.inner = inner

    def predict(self, X, y, x_query):
        return self.inner.predict(X, y, x_query)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 5))
def test_spd_basic(seed, d):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(20), rng.standard_normal(20)
    assert icl.spd(a, a, d) == 0
    assert icl.spd(a, b, d) == pytest.approx(icl.spd(b, a, d))
    assert icl.spd(a, b, d) == pytest.approx(np.mean((a - b) ** 2) / d)


def test_spd_shape_error():
    with pytest.raises(ShapeError):
        icl.spd(np.zeros(3), np.zeros(4), 2)


def test_ilwd_same_predictor_is_zero():
    t = icl.sample_tasks(50, 6, 4, seed=0)
    assert icl.ilwd(P.ridge(0.5), P.ridge(0.5), t) == 0.0
    # also through the probe-input fit (no weights() method): still ~0
    assert icl.ilwd(PredictOnly(P.ridge(0.5)), P.ridge(0.5), t, n_probe=8) < 1e-20


def test_ilwd_ols_ridge_closed_form():
    t = icl.sample_tasks(64, 6, 4, seed=1)
    lam = 0.3
    w_ols = np.linalg.pinv(t.X) @ t.y[..., None]
    w_r = np.linalg.solve(np.einsum("bni,bnj->bij", t.X, t.X) + lam * np.eye(4), np.einsum("bni,bn->bi", t.X, t.y)[..., None])[..., 0]
    expect = np.mean(np.sum((w_ols[..., 0] - w_r) ** 2, 1)) / 4
    assert icl.ilwd(P.ols(), P.ridge(lam), t) == pytest.approx(expect, rel=1e-10)
    assert icl.ilwd(PredictOnly(P.ols()), PredictOnly(P.ridge(lam)), t, n_probe=12) == pytest.approx(expect, rel=1e-8)
    per_k = icl.ilwd(P.ols(), P.ridge(lam), t, prefixes=[0, 2, 6])
    assert per_k.shape == (3,) and per_k[0] == 0 and per_k[2] == pytest.approx(expect, rel=1e-10)


def test_implicit_weights_r2():
    t = icl.sample_tasks(30, 5, 3, seed=2)
    w, r2 = icl.implicit_weights(PredictOnly(P.ols()), t.X, t.y, n_probe=10)
    np.testing.assert_allclose(w, ref.ols(t.X, t.y), atol=1e-9)
    np.testing.assert_allclose(r2, 1.0, atol=1e-9)
    _, r2k = icl.implicit_weights(P.knn(3), t.X, t.y, n_probe=30)
    assert np.mean(r2k) < 0.95  # k-NN is not linear
    with pytest.raises(OutOfRangeError, match="n_probe"):
        icl.implicit_weights(P.knn(3), t.X, t.y, n_probe=2)


def test_mspd_and_error_curve():
    t = icl.sample_tasks(200, 8, 4, noise_var=0.25, seed=3)
    a = icl.predict_prefixes(P.ols(), t.X, t.y)
    b = icl.predict_prefixes(P.ridge(0.25), t.X, t.y)
    assert icl.mspd(a, a, 4) == 0
    expect = np.mean([np.mean((a[:, k] - b[:, k]) ** 2) / 4 for k in (1, 2, 3)])
    assert icl.mspd(a, b, 4) == pytest.approx(expect)
    m, lo, hi = icl.error_curve(a, t.y, 4, n_boot=200)
    assert m.shape == (8,) and np.all(lo <= m + 1e-12) and np.all(m <= hi + 1e-12)
    assert m[0] > m[-1]  # more examples, less error


def test_predictor_interface_and_prefixes():
    t = icl.sample_tasks(10, 5, 3, seed=4)
    for p in icl.default_predictors(noise_var=0.25):
        out = p.predict(t.X[:, :2], t.y[:, :2], t.X[:, 2])
        assert out.shape == (10,) and out.dtype == np.float64
        assert np.all(p.predict(t.X[:, :0], t.y[:, :0], t.X[:, 0]) == 0)  # prior mean with no examples
    pp = icl.predict_prefixes(P.sgd(0.05), t.X, t.y)
    np.testing.assert_allclose(pp[:, 3], np.einsum("bd,bd->b", ref.sgd(t.X[:, :3], t.y[:, :3], 0.05), t.X[:, 3]))
    with pytest.raises(ShapeError, match="predict"):
        icl.as_predictor(object())


def test_compare_identifies_self():
    t = icl.sample_tasks(100, 9, 4, seed=5)
    table = icl.compare(PredictOnly(P.ridge(0.5)), t, [P.ols(), P.ridge(0.5), P.knn(3)], name="learner", n_probe=8,
                        n_boot=50)
    assert table.closest(prefixes=range(1, 9)) == "Ridge(0.5)"
    assert table.summary(range(1, 9))[0][1] < 1e-20
    assert "Ridge(0.5)" in table.to_markdown()
