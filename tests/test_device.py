"""Devices: the model lives where it was put; numpy and torch inputs follow it; range checks
are batched (one host synchronisation per pass, however deep the model). CPU here; the same
code runs on an accelerator (see docs/scale.md)."""
import numpy as np
import pytest
import torch

import iclconstruct as ic


def test_compile_on_a_device_and_io_types():
    m = ic.compile(ic.circuits.ridge_program(2, 0.5), device="cpu")
    assert m.device == torch.device("cpu")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 2))
    y = X @ np.ones(2)
    xq = rng.standard_normal(2)
    out = m.predict(X, y, xq)
    assert isinstance(out, (np.ndarray, np.floating)) and np.ndim(out) == 0
    outt = m.predict(torch.as_tensor(X), torch.as_tensor(y), torch.as_tensor(xq))
    assert isinstance(outt, torch.Tensor) and outt.device == m.device
    assert isinstance(m.predict_prefixes(X, y), np.ndarray)
    assert m.predict_prefixes(torch.as_tensor(X), torch.as_tensor(y)).device == m.device
    np.testing.assert_allclose(outt.numpy(), out, rtol=0, atol=0)


@pytest.mark.parametrize("sparse", [False, True])
def test_range_checks_sync_once_per_pass(monkeypatch, sparse):
    """The old checks read one maximum back per written slot per layer; now one transfer."""
    m = ic.circuits.ridge(2, 0.5)
    m = m.to_sparse() if sparse else m
    X = np.random.default_rng(1).standard_normal((1, 12, 2))
    tok = torch.as_tensor(ic.tokens.encode(X, X.sum(-1), None))
    calls = {"n": 0}
    real_float, real_item, real_tolist = torch.Tensor.__float__, torch.Tensor.item, torch.Tensor.tolist

    def count(fn):
        def wrapped(self, *a, **k):
            calls["n"] += 1
            return fn(self, *a, **k)
        return wrapped

    monkeypatch.setattr(torch.Tensor, "__float__", count(real_float))
    monkeypatch.setattr(torch.Tensor, "item", count(real_item))
    monkeypatch.setattr(torch.Tensor, "tolist", count(real_tolist))
    m(tok)
    full_calls = calls["n"]
    calls["n"] = 0
    m.predict_prefixes(X, X.sum(-1))
    assert len(m.unrolled(tok.shape[1])) > 30
    assert full_calls <= 4 and calls["n"] <= 4, (full_calls, calls["n"])
