"""The certificate (``model.certify``): sound on circuits and random programs, float64 and float32."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.errors import ICLConstructError, OutOfRangeError
from iclconstruct.numerics.certificate import GELU_ROUNDOFF, gamma, product_truncation, unit_roundoff
from iclconstruct.testing import programs, tokens_for


def _measured(model, tok):
    """``max |model readout − exact program readout|`` (the program run by the exact interpreter)."""
    out = model(torch.as_tensor(np.asarray(tok), dtype=model.dtype)).double().numpy()
    exact = ic.interpret(model.program, tok, max_len=model.max_len).output
    return float(np.abs(out - exact).max())


def _task(d, n, B, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, n, d)) * scale
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((B, d)))
    return ic.tokens.encode(X, y, rng.standard_normal((B, d)) * scale)


def test_product_truncation_bounds_the_trick_in_exact_arithmetic():
    """Lemma 4's remainder, checked in float64 at small N where truncation dominates round-off."""
    from scipy.special import erf  # noqa: F401  (scipy is a test dependency of torch users; skip if absent)

    G = lambda z: z * 0.5 * (1 + erf(z / math.sqrt(2)))
    for N in (2.0, 5.0, 20.0):
        a, b = np.meshgrid(np.linspace(-1, 1, 81), np.linspace(-1, 1, 81))
        approx = math.sqrt(math.pi / 2) * N * N * (G((a + b) / N) - G(a / N) - G(b / N))
        err = np.abs(approx - a * b)
        bound = np.vectorize(lambda x, y: product_truncation(x, y, N))(a, b)
        assert (err <= bound + 1e-12).all()
        assert err.max() > 0.3 * bound.max()  # and it is the right size, not just an upper bound


def test_gelu_roundoff_assumption_holds():
    u32, u64 = unit_roundoff(torch.float32), unit_roundoff(torch.float64)
    z = np.concatenate([np.logspace(-10, 2, 400), -np.logspace(-10, 2, 400)])
    for dt, u in ((torch.float32, u32), (torch.float64, u64)):
        zt = torch.tensor(z, dtype=dt)
        exact = torch.nn.functional.gelu(zt.to(torch.float64)).numpy() if dt == torch.float32 else None
        if exact is None:  # float64: compare with a float64 evaluation of the same formula via erfc
            from scipy.special import erfc
            zz = zt.numpy()
            exact = np.where(zz < 0, zz * 0.5 * erfc(-zz / math.sqrt(2)), zz - zz * 0.5 * erfc(zz / math.sqrt(2)))
        got = torch.nn.functional.gelu(zt).double().numpy()
        assert (np.abs(got - exact) <= GELU_ROUNDOFF * u * np.abs(zt.double().numpy()) + 1e-300).all()
    assert gamma(10, u64) > 10 * u64 and gamma(1e20, u64) == math.inf


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sgd_certificate_holds(dtype):
    m = ic.circuits.sgd(4, 0.03, lam=0.1, dtype=dtype, max_len=33)
    cert = m.certify(16)
    per = cert.per_prediction
    assert per.shape == (17,) and np.all(per[1:] >= per[:-1])
    for seed in range(3):
        for n in (1, 5, 16):
            assert _measured(m, _task(4, n, 8, seed)) <= cert.per_prediction[n]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ridge_certificate_holds(dtype):
    m = ic.circuits.ridge(2, 1.0, dtype=dtype, max_len=17)
    cert = m.certify(3)
    for seed in range(3):
        try:
            err = _measured(m, _task(2, 3, 8, seed))
        except OutOfRangeError:
            continue  # refused inputs are not certified (and not silently wrong)
        assert err <= cert.max_abs_error


@settings(max_examples=25, deadline=None)
@given(programs(max_ops=8), st.data(), st.sampled_from([torch.float64, torch.float32]))
def test_certificate_holds_on_random_programs(prog, data, dtype):
    check_program_certificate(prog, data, dtype)


def check_program_certificate(prog, data, dtype):
    """A hypothesis-drawn program on drawn in-range tokens: measured error ≤ ``certify(n)``."""
    tok = data.draw(tokens_for(prog, max_n=4))
    n = tok.shape[1] // 2
    model = ic.compile(prog, dtype=dtype, max_len=16)
    cert = model.certify(max(n, 1))
    try:
        err = _measured(model, tok)
    except OutOfRangeError:
        return
    assert err <= cert.max_abs_error, (err, cert)


def test_certificate_detail_and_errors():
    m = ic.circuits.sgd(2, 0.05, max_len=21)
    cert = m.certify(4)
    assert cert.holds(0.0) and not cert.holds(math.inf)
    assert cert.slot_error("w") > 0 and {"layer", "sublayer", "slot", "bound", "error"} <= set(cert.per_slot[0])
    assert "n_examples=4" in str(cert)
    with pytest.raises(ICLConstructError, match="n_examples"):
        m.certify(-1)
    with pytest.raises(ICLConstructError, match="max_len"):
        m.certify(50)
    with pytest.raises(ICLConstructError, match="slot"):
        cert.slot_error("nope")
    budget = m.error_budget()
    assert budget["max_abs_error"] == m.certify(1).max_abs_error


def test_adversarial_search_stays_below_the_certificate():
    from iclconstruct.numerics.adversary import worst_error

    m = ic.circuits.sgd(2, 0.05, max_len=9)
    found = worst_error(m, 2, corners=8, rounds=2, batch=4)
    assert 0 < found.error <= m.certify(2).max_abs_error and found.tokens is not None


@pytest.mark.parametrize("dtype,K", [(torch.float64, 1e8), (torch.float64, 3e6), (torch.float32, 1e4)])
def test_layernorm_mean_meets_the_column_mean_bound(dtype, K):
    """torch's own LayerNorm mean (``native_layer_norm``) against ``column_mean_bound``, with the anchors
    ±K at every kind of place (first and last, adjacent, random) and the column's exact sum near 0."""
    from iclconstruct.numerics.certificate import column_mean_bound

    u = unit_roundoff(dtype)
    rng = np.random.default_rng(0)
    worst = 0.0
    for D in (5, 8, 16, 27, 43, 64, 130):
        places = [(0, D - 1), (D - 1, 0), (0, 1), (D - 2, D - 1)] + [tuple(rng.choice(D, 2, replace=False)) for _ in range(40)]
        for i, j in places:
            h = rng.uniform(-30, 30, D) * rng.choice([1e-3, 1.0], D)
            h[i], h[j] = K, -K
            k = next(r for r in range(D) if r not in (i, j))
            h[k] -= math.fsum(h)  # a bal row: the exact sum ≈ 0
            h = torch.tensor(h, dtype=dtype).double().numpy()  # the values the model holds
            exact_sum = math.fsum(h)
            S = float(np.abs(h).sum())
            P = max(float(h[h > 0].sum()), float(-h[h < 0].sum()))
            _, mean, _ = torch.native_layer_norm(torch.tensor(h, dtype=dtype)[None], (D,), None, None, 1e-5)
            err = abs(float(mean.reshape(-1)[0]) - exact_sum / D)
            bound = column_mean_bound(abs(exact_sum) * (1 + u), P, S, D, u)
            assert err <= bound, (D, i, j, err, bound)
            worst = max(worst, err / bound)
    assert worst > 0.05  # tight to a few × on small columns (measured 0.29–0.33): the bound is not vacuous


def test_a_recorded_two_norm_lapses_when_its_slot_is_written_again():
    from iclconstruct.numerics.certificate import _Analysis

    m = ic.circuits.sgd(4, 0.03, max_len=9)
    an = _Analysis(m, 9)
    an.E["w"] = 1e-6
    assert an.err2("w", 4) == pytest.approx(2e-6)      # √4·E without a record
    an.set_err2("w", 1.5e-6)
    assert an.err2("w", 4) == 1.5e-6 and an.err2("w", 1) == 1e-6  # never above √n·E
    an.E.update({"w": 1e-6})                           # any new write, even of the same value
    assert an.err2("w", 4) == pytest.approx(2e-6)
    an.set_err2("w", 1.5e-6)
    an.E["w"] = math.inf
    assert an._read_err2("w", 4, math.inf, 1.0) == math.inf


def test_the_contraction_two_norm_reaches_the_readout():
    # SGD's readout x̃ᵀw: with w's carried error known in the 2-norm, ‖x̃‖₂·‖δw‖₂ replaces ‖x̃‖₁·max|δw|
    m = ic.circuits.sgd(8, 0.03, max_len=33)
    cert = m.certify(4)
    wq = [r for r in cert.per_slot if r["slot"] == "wq"][-1]["error"]
    pred = [r for r in cert.per_slot if r["slot"] == "pred"][-1]["error"]
    assert pred < 0.5 * 8 * m.layout["x"].bound * wq  # well below the ∞-norm propagation d·x_bound·E
