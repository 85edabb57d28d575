"""Task sampler: statistics, seeding, shifted distributions (paper §4 "Data")."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from iclconstruct import icl
from iclconstruct.errors import OutOfRangeError, ShapeError


def test_statistics_normal():
    t = icl.sample_tasks(4000, 10, 5, noise_var=0.25, prior_var=2.0, seed=3)
    assert t.X.shape == (4000, 10, 5) and t.y.shape == (4000, 10) and t.w.shape == (4000, 5)
    assert t.X.dtype == np.float64
    assert abs(t.X.mean()) < 0.02 and abs(t.X.var() - 1) < 0.02
    assert abs(t.w.var() - 2.0) < 0.1
    resid = t.y - np.einsum("bnd,bd->bn", t.X, t.w)
    assert abs(resid.var() - 0.25) < 0.01


def test_noiseless_labels_exact():
    t = icl.sample_tasks(10, 7, 3, seed=0)
    np.testing.assert_allclose(t.y, np.einsum("bnd,bd->bn", t.X, t.w))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 5), st.integers(1, 6))
def test_seeding(seed, n, d):
    a = icl.sample_tasks(3, n, d, seed=seed)
    b = icl.sample_tasks(3, n, d, seed=seed)
    c = icl.sample_tasks(3, n, d, seed=seed + 1)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.X, c.X)


def test_shifted_distributions():
    d = 6
    sc = icl.sample_tasks(3000, 4, d, x_dist="scaled", seed=1).X
    sh = icl.sample_tasks(3000, 4, d, x_dist="shifted", seed=1).X
    sk = icl.sample_tasks(3000, 4, d, x_dist="skewed", seed=1).X
    assert abs(sc.std() - 2.5) < 0.05
    assert abs(sh.mean() - 2.5) < 0.03
    np.testing.assert_allclose(sk.reshape(-1, d).var(0), 1 / np.arange(1, d + 1), rtol=0.06)


def test_prefix_and_subset():
    t = icl.sample_tasks(5, 4, 2, seed=0)
    X, y, q = t.prefix(2)
    assert X.shape == (5, 2, 2) and y.shape == (5, 2)
    np.testing.assert_array_equal(q, t.X[:, 2])
    assert t.subset(slice(0, 2)).n_tasks == 2
    with pytest.raises(OutOfRangeError):
        t.prefix(4)


def test_sample_batch_curriculum_and_seed():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    X1, y1 = icl.sample_batch(8, 6, 5, d_active=2, generator=g1)
    X2, y2 = icl.sample_batch(8, 6, 5, d_active=2, generator=g2)
    assert torch.equal(X1, X2) and torch.equal(y1, y2)
    assert X1.dtype == torch.float32 and (X1[..., 2:] == 0).all() and (X1[..., :2] != 0).all()


def test_errors():
    with pytest.raises(OutOfRangeError, match="x_dist"):
        icl.sample_tasks(2, 2, 2, x_dist="uniform")
    with pytest.raises(OutOfRangeError, match="noise_var"):
        icl.sample_tasks(2, 2, 2, noise_var=-1)
    with pytest.raises(OutOfRangeError, match="n_tasks"):
        icl.sample_tasks(0, 2, 2)
    with pytest.raises(ShapeError, match="d_active"):
        icl.sample_batch(2, 2, 3, d_active=4)
