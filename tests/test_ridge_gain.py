"""The gain form of the ridge circuit (circuits.ridge.ridge_gain_program): the model against the
float64 interpreter at every layer, and against ridge on every prefix."""
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.testing import assert_matches_interpreter


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 4), st.integers(1, 8), st.floats(0.1, 10.0), st.integers(0, 2**31))
def test_gain_form_matches_the_interpreter_and_ridge_on_every_prefix(d, n, lam, seed):
    rng = np.random.default_rng(seed)
    X = np.clip(rng.standard_normal((2, n, d)), -3, 3)
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((2, d)))
    m = ic.circuits.ridge(d, lam, form="gain", max_len=2 * n + 1)
    tok = ic.tokens.encode(X, y, None)
    assert_matches_interpreter(m, tok)
    pr = m.predict_prefixes(X, y)
    for k in range(1, n):
        ref = np.einsum("bd,bd->b", X[:, k], ic.reference.ridge(X[:, :k], y[:, :k], lam))
        np.testing.assert_array_less(np.abs(pr[:, k] - ref), 1e-6 * (1 + np.abs(ref)))


def test_gain_form_clears_the_divisor_and_keeps_the_column_small():
    """After the division layer the divisor's rows hold 0, and no slot is sized like uuᵀ."""
    m = ic.circuits.ridge(4, 0.1, form="gain", max_len=17)
    assert "O" not in m.layout and m.layout["g"].bound <= 0.5 / np.sqrt(0.1) * (1 + 1e-12)
    rng = np.random.default_rng(0)
    X = np.clip(rng.standard_normal((1, 8, 4)) * 2, -6, 6)
    y = X @ rng.standard_normal(4)
    _, cache = m.run_with_cache(ic.tokens.encode(X, y, None))
    c = cache.slot_by_layer("c").abs()
    assert float(c.max()) > 10  # c = 1 + xᵀA⁻¹x is large at lam = 0.1 …
    assert float(c[-1].max()) == 0.0  # … and cleared by the division layer's attention


def test_gain_form_float32_saves_loads_and_streams(tmp_path):
    """float32's default form through save/load (bit for bit) and the pruned paths (stream, prefixes)."""
    rng = np.random.default_rng(1)
    X = np.clip(rng.standard_normal((2, 6, 3)), -3, 3)
    y = X @ rng.standard_normal(3)
    xq = np.clip(rng.standard_normal((2, 3)), -3, 3)
    m = ic.circuits.ridge(3, 0.3, dtype=torch.float32, max_len=33)
    assert m.program.meta["form"] == "gain"
    ic.io.save(m, tmp_path / "r")
    m2 = ic.io.load(tmp_path / "r")
    assert m2.program.meta["form"] == "gain" and m2.layers_per_example() == 4
    np.testing.assert_array_equal(m2.predict(X, y, xq), m.predict(X, y, xq))
    s = m.stream()
    for k in range(6):
        s.add(X[:, k], y[:, k])
    full = m.predict(X, y, xq)
    ref = np.einsum("bd,bd->b", xq, ic.reference.ridge(X, y, 0.3))
    # in float32 the full pass re-runs every block over finished columns, each adding ≈1e-4 of drift
    # (docs/scale.md §2); the stream runs each column's block once: both are within 1e-3 of ridge
    for got in (s.predict(xq), full):
        assert np.max(np.abs(got - ref) / (1 + np.abs(ref))) <= 1e-3
    pr = m.predict_prefixes(X, y)
    assert pr.shape == (2, 6) and np.max(np.abs(pr[:, 0])) <= 1e-3  # no example: ridge predicts 0
