"""float32 circuits with Constants.float32() (Richardson product at N = 5): accuracy where it is claimed."""
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import iclconstruct as ic


@settings(max_examples=6, deadline=None)
@given(st.integers(2, 8), st.integers(4, 32), st.floats(0.1, 10.0), st.floats(0.3, 1.5), st.integers(0, 10_000))
def test_sgd_float32_normalized_error_below_1e3(d, n, lam, scale, seed):
    """Anisotropic inputs, d ≤ 8, n ≤ 32, lam ∈ [0.1, 10]; the step is the largest stable one / 2."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((2, n, d)) * scale * rng.uniform(0.2, 1.5, size=d)
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((2, d)))
    xq = rng.standard_normal((2, d)) * scale
    lr = 0.5 / (float((X ** 2).sum(-1).max()) + lam)
    m = ic.circuits.sgd(d, lr, lam=lam, dtype=torch.float32, max_len=2 * n + 1)
    ref = np.einsum("bd,bd->b", xq, ic.reference.sgd(X, y, lr, lam=lam))
    out = m(torch.as_tensor(ic.tokens.encode(X, y, xq), dtype=torch.float32))[:, -1].double().numpy()
    assert np.max(np.abs(out - ref) / (1 + np.abs(ref))) <= 1e-3
