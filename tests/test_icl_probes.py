"""Probes (paper §5) on synthetic hidden states with a known embedded target."""
import numpy as np
import pytest
import torch

from iclconstruct import icl
from iclconstruct.errors import ShapeError

torch.set_num_threads(1)


def synthetic(B=400, T=5, D=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((B, k))
    noise = rng.standard_normal((B, T, D))
    A = rng.standard_normal((k, D))
    embedded = noise.copy()
    embedded[:, 2] = v @ A + 1e-3 * noise[:, 2]  # target lives linearly at column 2
    return torch.tensor(embedded), torch.tensor(noise), v


def test_linear_readout_recovers_embedded_target():
    H, H0, v = synthetic()
    good = icl.fit_linear_readout(H, v, column=2, lam=1e-8)
    assert good.test_rel_err < 1e-4
    bad = icl.fit_linear_readout(H0, v, column=2)
    assert bad.test_rel_err > 0.8


def test_position_probe_finds_column_and_target():
    H, H0, v = synthetic()
    for hidden in ("linear", "mlp"):
        good = icl.fit_position_probe(H, v, hidden=hidden, steps=400, lr=2e-2)
        assert good.test_rel_err < 0.05, hidden
        assert np.argmax(good.alpha) == 2
    bad = icl.fit_position_probe(H0, v, steps=200)
    assert bad.test_rel_err > 0.8


def test_probe_layers_generic_and_targets():
    H, H0, v = synthetic(B=200)
    res = icl.probe_layers([H0, H], {"v": v}, methods=("readout", "linear"), steps=150, column=2)
    by = {(r.layer, r.method): r.test_rel_err for r in res}
    assert by[(1, "readout")] < 1e-3 and by[(0, "readout")] > 0.8
    assert by[(1, "linear")] < by[(0, "linear")]
    t = icl.sample_tasks(3, 5, 2, seed=0)
    np.testing.assert_allclose(icl.probe_target(t.X, t.y, "xty"), np.einsum("bnd,bn->bd", t.X, t.y))
    with pytest.raises(ShapeError):
        icl.fit_linear_readout(H[0], v)
    with pytest.raises(ShapeError):
        icl.fit_linear_readout(H, v[:10])


def test_model_hidden_states():
    m = icl.ICLTransformer(d=2, n_layers=2, width=8, n_heads=1, max_points=5)
    t = icl.sample_tasks(6, 4, 2, seed=0)
    hs = icl.model_hidden_states(m, t.X[:, :3], t.y[:, :3], t.X[:, 3])
    assert len(hs) == 3 and hs[0].shape == (6, 7, 8)
