"""The certificate covers ``count`` and ``sum`` (docs/certificate.md, "Count and sum"): sound on the
zoo circuits that sum over the examples and on random programs with reductions, and finite there."""
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.errors import LayoutError, OutOfRangeError
from iclconstruct.lang.ops import Count, Sum
from iclconstruct.numerics.adversary import worst_error
from iclconstruct.testing import programs

F64, F32 = torch.float64, torch.float32


from test_certificate import _measured, _task, check_program_certificate  # noqa: E402  (the same comparison as the SGD/ridge tests)
from test_sum_count import sum_program  # noqa: E402


def _ops(program):
    return [op for seg in program.segments for op in seg.ops]


def _check(model, n, seeds=(0, 1)):
    """Measured errors (random inputs, then the adversarial search) against ``certify(n)``; returns
    ``(certificate, worst found)``."""
    cert = model.certify(n)
    worst = 0.0
    for seed in seeds:
        try:
            err = _measured(model, _task(model.layout.d, n, 8, seed, scale=0.5))
        except OutOfRangeError:
            continue  # refused inputs are not certified (and not silently wrong)
        assert err <= cert.max_abs_error, (err, cert)
        worst = max(worst, err)
    found = worst_error(model, n, corners=16, rounds=2, batch=8)
    assert found.error <= cert.max_abs_error, (found.error, cert)
    assert found.error > 0  # the search found admissible inputs: the comparison tested something
    return cert, max(worst, found.error)


#: (circuit, dtype, n, whether the certificate is finite, the most certificate / worst found may be)
ZOO = [
    ("batch_gd", F64, 4, True, 1e5),
    ("batch_gd", F64, 8, True, 1e5),
    # float32: the error propagated into the last product (≈ 47 in v) pushes its operand past
    # Lemma 4's series domain ((a + b)/N > 1): the truncation bound is inf, not the sum
    ("batch_gd", F32, 4, False, None),
    ("gd_plus_plus", F64, 4, True, 1e5),
    ("gd_plus_plus", F32, 4, True, 1e6),
    ("preconditioned_gd", F64, 4, True, 1e4),
    ("preconditioned_gd", F64, 8, True, 1e4),
    ("preconditioned_gd", F32, 4, True, 1e4),
]


def _zoo(name, dtype, n):
    if name == "batch_gd":
        return ic.circuits.batch_gd(2, 0.05, steps=2, max_n=n, dtype=dtype)
    if name == "gd_plus_plus":
        return ic.circuits.gd_plus_plus(2, 0.05, 0.1, max_n=n, dtype=dtype)
    return ic.circuits.preconditioned_gd(2, 0.05, max_n=n, dtype=dtype)


@pytest.mark.parametrize("name,dtype,n,finite,loose", ZOO)
def test_zoo_sum_circuits_certified(name, dtype, n, finite, loose):
    m = _zoo(name, dtype, n)
    assert any(isinstance(op, Sum) for op in _ops(m.program))
    cert, worst = _check(m, n)
    assert math.isfinite(cert.max_abs_error) == finite, cert
    # every sum's destination is certified (finite) whatever happens downstream
    for op in _ops(m.program):
        if isinstance(op, (Sum, Count)):
            assert math.isfinite(cert.slot_error(op.dst)), op.describe()
    if finite:
        assert cert.max_abs_error <= loose * worst, (cert.max_abs_error / worst, cert)


def test_sum_bound_is_scale_times_count_times_source():
    m = ic.circuits.batch_gd(2, 0.05, steps=1, max_n=4)
    cert = m.certify(4)
    sums = [op for op in _ops(m.program) if isinstance(op, Sum)]
    for op in sums:
        src = [r["bound"] for r in cert.per_slot if r["slot"] == op.src][-1]
        dst = [r["bound"] for r in cert.per_slot if r["slot"] == op.dst and r["sublayer"] == "mlp"][-1]
        assert dst == pytest.approx(min(abs(op.scale) * 4 * src, m.layout[op.dst].bound * (1 + 1e-12)))


def test_newton_with_a_count_is_certified():
    """Newton with a fixed alpha multiplies by the count (``n²·α``): finite and sound (but loose: the
    Newton–Schulz products propagate slot-wise). The default alpha divides instead and stays inf
    there for that reason, not because of a reduction (it has none)."""
    m = ic.circuits.newton(2, 2, alpha=0.01, max_n=4)
    assert any(isinstance(op, Count) for op in _ops(m.program))
    cert, _ = _check(m, 4)
    assert math.isfinite(cert.max_abs_error)
    plain = ic.circuits.newton(2, 2, max_n=4)
    assert not any(isinstance(op, (Count, Sum)) for op in _ops(plain.program))
    assert math.isinf(plain.certify(4).max_abs_error)


@pytest.mark.parametrize("dtype,loose", [(F64, 300.0), (F32, 50.0)])
@pytest.mark.parametrize("with_count,mlp_count", [(True, False), (False, False), (True, True), (False, True)])
def test_sum_program_certified_and_tight(with_count, mlp_count, dtype, loose):
    """Sums with and without ``count=``, the count in the attention and in the MLP: measured below the
    certificate, and the certificate within ``loose`` of the worst error found (measured 10 and ≈ 70)."""
    m = ic.compile(sum_program(2, with_count, mlp_count=mlp_count), max_len=17, dtype=dtype)
    kinds = [op.kind for plan in m.plans for op in plan.mlp_ops]
    assert ("count" in kinds) == mlp_count
    cert, worst = _check(m, 8)
    assert cert.max_abs_error <= loose * worst, (cert.max_abs_error / worst, cert)


@settings(max_examples=40, deadline=None)
@given(programs(max_ops=8), st.data(), st.sampled_from([F64, F32]))
def test_certificate_holds_on_random_programs_with_reductions(prog, data, dtype):
    assume(any(isinstance(op, (Count, Sum)) for op in _ops(prog)))
    check_program_certificate(prog, data, dtype)


def test_sum_whose_count_is_its_own_destination_is_refused():
    """``sum(src, dst, count=dst)``: the averaging read would overwrite the count before the MLP
    multiplies by it (the model computed ``mean·mean``, off by up to ≈ 1.1, silently); the program
    refuses it, naming both slots."""
    p = ic.Program(1)
    p.slot("n", 1, bound=80.0)
    p.count("n")
    with pytest.raises(LayoutError, match="count='n'"):
        p.sum("y", "n", count="n")


def _reused_row_program(v: float) -> "ic.Program":
    p = ic.Program(1)
    p.slot("a", 1, bound=2.0)
    p.sum("is_y", "a")  # the MLP leaves the count (up to 2) in a's row
    p.free("a")
    p.slot("b", 1, bound=1.0)  # reuses that row; written by the next layer's attention (self head)
    p.aff("b", None, bias=np.array([v]))
    p.readout("b")
    return p


def test_overwriting_a_reused_row_counts_what_the_row_held():
    """Found by the soak (2 of 20,061 examples): an op overwriting slot ``b`` removes whatever its rows
    hold — here a freed slot's count ≈ 2, not ``b``'s own (never written) value — and rounds at
    ``u·2``; the certificate took the old value's size from ``b`` alone (1.3e-17 against 2.2e-16
    measured). It now takes the largest ``V`` of the slots sharing the rows (``_Analysis.Vold``)."""
    X = np.full((1, 2, 1), 0.3)
    tok = ic.tokens.encode(X, X[..., 0], X[:, 0])
    worst, cert = 0.0, math.inf
    for v in np.linspace(-0.0065, -0.0035, 40):
        m = ic.compile(_reused_row_program(float(v)), max_len=5)
        assert set(m.layout.rows("a")) == set(m.layout.rows("b"))
        assert any(op.dst == "b" for plan in m.plans for op in plan.attn_ops)
        cert = m.certify(2).max_abs_error
        err = _measured(m, tok)
        assert err <= cert, (v, err, cert)
        worst = max(worst, err)
    assert worst > 1e-16  # the rounding of the old row content happens (the case is exercised)
    assert cert <= 1e3 * worst


def test_a_loop_that_runs_zero_times_leaves_the_rows_bounds():
    """Found by the soak (7e-11 measured against 1.7e-14 certified): a slot written only inside an
    ``'examples'`` loop, on rows a freed slot used before, holds that slot's value (and error) on an
    input without a complete example. The certificate gives the slots sharing rows the bounds of what
    was written there (``_Analysis._share``)."""
    p = ic.Program(2)
    p.slot("a", 1, bound=20.0)
    p.mul("x", "x", "a", shape=(1, 2, 1))  # a product: its error is ~1e-8
    p.free("a")
    p.slot("b", 1, bound=20.0)  # reuses a's row
    with p.loop("examples"):
        p.aff("b", None, bias=np.array([0.5]))
    p.readout("b", columns="all")
    m = ic.compile(p, max_len=9)
    assert set(m.layout.rows("a")) == set(m.layout.rows("b"))
    rng = np.random.default_rng(0)
    tok = ic.tokens.encode(np.zeros((4, 0, 2)), np.zeros((4, 0)), rng.uniform(-3, 3, (4, 2)))  # n = 0
    err = _measured(m, tok)
    assert err > 1e-10  # the product's error reaches the readout: the case is exercised
    cert = m.certify(1)
    assert err <= cert.per_prediction[0] <= cert.max_abs_error
