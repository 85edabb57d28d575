"""float32 circuits with Constants.float32() (Richardson product at N = 5): accuracy where it is claimed."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import iclconstruct as ic


@settings(max_examples=6, deadline=None)
@given(st.integers(2, 16), st.integers(4, 64), st.floats(0.1, 10.0), st.floats(0.3, 1.5), st.integers(0, 10_000))
def test_sgd_float32_normalized_error_below_1e3(d, n, lam, scale, seed):
    """Anisotropic inputs, d ≤ 16, n ≤ 64, lam ∈ [0.1, 10] (the issue's range; measured ≤ 6e-4 in
    bench/float32_circuits.py and on 14 draws at d 9–16, n 33–64); the step is the largest stable one / 2."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((2, n, d)) * scale * rng.uniform(0.2, 1.5, size=d)
    X *= min(1.0, 5.99 / np.abs(X).max())            # within the default x_bound = 6
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((2, d)))
    xq = rng.standard_normal((2, d)) * scale
    lr = 0.5 / (float((X ** 2).sum(-1).max()) + lam)
    m = ic.circuits.sgd(d, lr, lam=lam, dtype=torch.float32, max_len=2 * n + 1)
    xq = np.clip(xq, -0.999 * m.layout["x"].bound, 0.999 * m.layout["x"].bound)  # the query within x_bound
    ref = np.einsum("bd,bd->b", xq, ic.reference.sgd(X, y, lr, lam=lam))
    out = m(torch.as_tensor(ic.tokens.encode(X, y, xq), dtype=torch.float32))[:, -1].double().numpy()
    assert np.max(np.abs(out - ref) / (1 + np.abs(ref))) <= 1e-3


def _aniso_task(rng, d, n, scale=1.0, B=2):
    X = rng.standard_normal((B, n + 1, d)) * scale * rng.uniform(0.2, 1.5, size=d)
    X *= min(1.0, 5.99 / np.abs(X).max())            # within the default x_bound = 6
    X, xq = X[:, :n], X[:, n]
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((B, d)))
    return X, y, xq


def _ridge_error(d, n, lam, X, y, xq, **kw):
    m = ic.circuits.ridge(d, lam, dtype=torch.float32, max_len=2 * n + 1, **kw)
    ref = np.einsum("bd,bd->b", xq, ic.reference.ridge(X, y, lam))
    return np.max(np.abs(m.predict(X, y, xq) - ref) / (1 + np.abs(ref)))


@settings(max_examples=4, deadline=None)
@given(st.integers(2, 8), st.integers(4, 64), st.floats(0.5, 10.0), st.floats(0.3, 1.5), st.integers(0, 10_000))
def test_ridge_float32_normalized_error_below_1e3(d, n, lam, scale, seed):
    """Anisotropic inputs, d ≤ 8, n ≤ 64, lam ∈ [0.5, 10]: no refusal, error/(1 + |ref|) ≤ 1e-3.

    float32 builds the gain form (``circuits.ridge.ridge_gain_program``: ``g = A⁻¹x/(1 + xᵀA⁻¹x)``
    first, so the column never holds ``uuᵀ``); the state slot carries max(1, lam)·A⁻¹
    (``circuits.ridge.state_scale``). Below 0.5 the soak (bench/soak_float32_ridge.py) finds a few
    draws above 1e-3 (1.5e-3 at lam = 0.3, d = 8); lam = 0.1 is tested at d ≤ 4 below; see
    docs/algorithms.md."""
    X, y, xq = _aniso_task(np.random.default_rng(seed), d, n, scale)
    assert _ridge_error(d, n, lam, X, y, xq) <= 1e-3


@pytest.mark.parametrize("d", [2, 4])
def test_ridge_float32_lam_0_1(d):
    """lam = 0.1, d ≤ 4, n ∈ {8, 64}: within 1e-3 on these tasks (measured ≤ 5.4e-4 on 32-task batches;
    every prefix of 32 isotropic tasks reaches 1.1e-3 at d = 4, n = 8 — examples/02; d = 8 reaches
    1.4e-3 – 2e-3 and d = 16 up to 6.8e-3, served within float32's stated 1e-2 — docs/algorithms.md)."""
    rng = np.random.default_rng(d)
    for n in (8, 64):
        X, y, xq = _aniso_task(rng, d, n)
        assert _ridge_error(d, n, 0.1, X, y, xq) <= 1e-3


def test_ridge_float32_d16():
    """d = 16, n = 64, anisotropic inputs, lam ∈ {0.3, 1, 10}: no refusal, error/(1 + |ref|) ≤ 1e-3."""
    X, y, xq = _aniso_task(np.random.default_rng(0), 16, 64)
    for lam in (0.3, 1.0, 10.0):
        assert _ridge_error(16, 64, lam, X, y, xq) <= 1e-3


def test_ridge_float32_defaults_to_the_gain_form_and_forms_are_named():
    m32 = ic.circuits.ridge(2, 1.0, dtype=torch.float32, max_len=9)
    m64 = ic.circuits.ridge(2, 1.0, max_len=9)
    assert m32.program.meta["form"] == "gain" and m32.layers_per_example() == 4
    assert m64.program.meta["form"] == "outer" and m64.layers_per_example() == 3
    assert ic.circuits.ridge(2, 1.0, form="outer", dtype=torch.float32, max_len=9).layers_per_example() == 3
    with pytest.raises(ic.errors.ICLConstructError, match="form"):
        ic.circuits.ridge(2, 1.0, form="rank1")


def test_bfloat16_and_float16_are_refused_naming_dtype():
    """No constants exist for them: the best product's error (Lemma 4, Richardson) is above 1e-3."""
    import pytest

    from iclconstruct.errors import ICLConstructError

    for dt in (torch.bfloat16, torch.float16):
        with pytest.raises(ICLConstructError, match="dtype must be torch.float64 or torch.float32.*best product"):
            ic.circuits.sgd(2, 0.1, dtype=dt)


def test_float32_inputs_at_the_declared_bound_are_served():
    """The range check judges the caller's values, not their float32 rounding: ``y_bound`` of
    ``sgd(3, …)`` (27.3205…) rounds up in float32, and a ``y`` exactly at the bound used to be refused
    ("reaches |y| = 27.32 but … built for |y| <= 27.3205"); the certificate counts the rounding."""
    m = ic.circuits.sgd(3, 0.03, dtype=torch.float32, max_len=9)
    yb, xb = m.layout["y"].bound, m.layout["x"].bound
    assert float(np.float32(yb)) > yb  # the case: the bound is not a float32 number
    X = np.full((1, 2, 3), 0.5)
    y = np.array([[yb, -yb]])
    out = m.predict(X, y, np.full((1, 3), 0.5))
    exact = ic.interpret(m.program, ic.tokens.encode(X, y, np.full((1, 3), 0.5)), max_len=m.max_len).output[0, -1]
    assert abs(float(out[0]) - exact) <= m.certify(2).max_abs_error
    with pytest.raises(ic.errors.OutOfRangeError):  # beyond the bound is still refused
        m.predict(X, y * (1 + 1e-6), np.full((1, 3), 0.5))
