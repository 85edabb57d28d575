"""The dependency-pruned schedule, predict_prefixes and model.stream() against the full pass.

Tolerance. The full pass recomputes every finished (fixed-point) column once per later
example; each recomputation re-rounds the LayerNorm bypass and the product trick
(errors ≈ ε·K and ε·N per value), so the full pass's own readout drifts with the context
length by up to ~1e-7 relative (measured: docs/scale.md). The pruned path computes each
cell once. Both are therefore compared with the full pass, and with the exact reference,
at the tolerance the circuits are tested at (1e-6·(1 + |ref|)).
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct import errors as E
from iclconstruct.runtime import cell_plan, run_pruned
from iclconstruct.testing import programs, tokens_for

TOL = 1e-6


def within(got, ref, tol=TOL):
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    err = np.abs(got - ref) / (1 + np.abs(ref))
    assert np.all(err <= tol), err.max()


def task(d, n, B=2, seed=0):
    rng = np.random.default_rng(seed)
    X = np.clip(rng.standard_normal((B, n, d)), -3, 3)
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((B, d)))
    return X, y, np.clip(rng.standard_normal((B, d)), -3, 3)


def circuits(d):
    return [ic.circuits.ridge(d, lam=0.5), ic.circuits.sgd(d, lr=0.5 / (9 * d * 2), lam=0.1),
            ic.circuits.ridge(d, lam=0.5, form="gain")]


@pytest.mark.parametrize("d", [1, 3])
def test_plan_is_the_diagonal_for_the_circuits(d):
    """Derived from the schedule: one column per loop layer, O(n) cells instead of O(n²)."""
    n = 12
    for m in circuits(d):
        plan = cell_plan(m, 2 * n)
        pe = m.layers_per_example()
        first = len(plan.columns) - 1 - pe * n  # straight layers before the loop
        loop = plan.columns[first : first + pe * n]
        assert all(len(c) <= 1 for c in loop)
        # iteration k runs exactly the ỹ column of example k (the last one is not read)
        for k in range(1, n):
            assert list(loop[(k - 1) * pe]) == [2 * k - 1]
        assert plan.cells <= (pe + 3) * n < 2 * n * len(plan.columns) / 4


@pytest.mark.parametrize("d,n", [(1, 9), (3, 14)])
def test_predict_prefixes_equals_full_pass(d, n):
    X, y, _ = task(d, n)
    for m in circuits(d):
        full = m(ic.tokens.encode(X, y, None))
        pr = m.predict_prefixes(X, y)
        within(pr, full)
        one = m.predict_prefixes(X[0], y[0])
        within(one, full[0])


def test_predict_prefixes_matches_the_reference():
    X, y, _ = task(3, 16, B=3, seed=4)
    m = ic.circuits.ridge(3, lam=0.5)
    pr = m.predict_prefixes(X, y)
    for k in range(16):
        w = np.zeros((3, 3)) if k == 0 else ic.reference.ridge(X[:, :k], y[:, :k], 0.5)
        within(pr[:, k], np.einsum("bd,bd->b", X[:, k], w))


@pytest.mark.parametrize("d", [2])
def test_stream_every_prefix_equals_full_pass(d):
    n = 10
    X, y, xq = task(d, n, seed=1)
    for m in circuits(d):
        s = m.stream()
        for k in range(n + 1):
            full = m(ic.tokens.encode(X[:, :k], y[:, :k], xq))[:, -1]
            within(s.predict(xq), full)
            if k < n:
                s.add(X[:, k], y[:, k])
        assert s.rebuilds == 0
        assert s.n == n


def test_stream_add_costs_constant_blocks():
    """Each add runs the same number of cells, however many examples came before."""
    m = ic.circuits.ridge(2, lam=0.5)
    X, y, _ = task(2, 24, B=1)
    s = m.stream()
    costs = []
    for k in range(24):
        before = s.evaluated
        s.add(X[0, k], y[0, k])
        costs.append(s.evaluated - before)
    assert len(set(costs[2:])) == 1 and costs[-1] <= m.layers_per_example() + 2


def test_stream_unbatched_numpy_and_torch():
    m = ic.circuits.ridge(2, lam=0.5)
    X, y, xq = task(2, 5, B=1)
    s = m.stream()
    for k in range(5):
        s.add(X[0, k], float(y[0, k]))
    p = s.predict(xq[0])
    assert np.ndim(p) == 0
    within(p, m.predict(X[0], y[0], xq[0]))
    st_ = m.stream()
    for k in range(5):
        st_.add(torch.as_tensor(X[:, k]), torch.as_tensor(y[:, k]))
    pt = st_.predict(torch.as_tensor(xq))
    assert isinstance(pt, torch.Tensor) and pt.shape == (1,)
    within(pt.numpy(), np.atleast_1d(p))


def test_stream_refuses_unservable_input():
    m = ic.circuits.sgd(2, lr=0.02, max_len=7)  # 2·lr·‖x‖² > 2 for x = (5.9, 5.9): the guard refuses
    s = m.stream()
    with pytest.raises(E.ShapeError, match="x must be"):
        s.add(np.zeros(3), 1.0)
    s.add(np.ones(2), 1.0)
    with pytest.raises(E.ShapeError, match="batch"):
        s.add(np.ones((2, 2)), np.ones(2))
    with pytest.raises(E.OutOfRangeError):
        s.add(np.full(2, 100.0), 1.0)
    with pytest.raises(E.DivergenceError):
        s.add(np.full(2, 5.9), 1.0)
    s.add(np.ones(2), 1.0)
    s.add(np.ones(2), 1.0)
    with pytest.raises(E.ContextTooLongError, match="max_len"):
        s.add(np.ones(2), 1.0)
    assert s.n == 3
    within(s.predict(np.ones(2)), m.predict(np.ones((3, 2)), np.ones(3), np.ones(2)))


def test_pruned_checks_ranges():
    m = ic.circuits.ridge(1, lam=0.5, w_bound=0.5)
    X = np.full((1, 4, 1), 2.0)
    y = np.full((1, 4), 10.0)
    with pytest.raises(E.OutOfRangeError, match="layer"):
        m.predict_prefixes(X, y)
    with pytest.raises(E.OutOfRangeError, match="layer"):
        m(ic.tokens.encode(X, y, None))
    s = m.stream()
    with pytest.raises(E.OutOfRangeError, match="layer"):
        for k in range(4):
            s.add(X[0, k], y[0, k])


def test_tokens_outside_the_paper_layout_are_refused_like_the_full_pass():
    """The plan may use Eq. 12's zeros because the model refuses tokens without them."""
    m = ic.circuits.sgd(2, lr=0.02)
    X, y, xq = task(2, 6)
    tok = ic.tokens.encode(X, y, xq)
    tok[:, 1::2, 1:] = 0.3  # x channels at ỹ columns: not Eq. 12
    with pytest.raises(E.ShapeError, match="layout"):
        m(tok)
    with pytest.raises(E.ShapeError, match="layout"):
        run_pruned(m, tok)


@settings(max_examples=25)
@given(programs(), st.data())
def test_random_programs_pruned_and_streamed_equal_full_pass(prog, data):
    m = ic.compile(prog)
    tok = data.draw(tokens_for(prog))
    full = m(tok)
    within(run_pruned(m, tok), full)
    X, y, xq = ic.tokens.decode(tok)
    s = m.stream()
    for k in range(X.shape[1]):
        s.add(X[:, k], y[:, k])
    within(s.predict(xq), full[:, -1])


@pytest.mark.parametrize("with_count", [False, True])
def test_sum_in_a_loop_pruned_and_streamed_equal_full_pass(with_count):
    """A sum's averaging read (over the ỹ columns, in its layer's attention) is a read like a mov's:
    the pruned plan and the stream used to miss it and returned 0 for the sum at the query."""
    p = ic.Program(1)
    p.slot("c", 1, bound=8.0)
    p.slot("s", 1, bound=8.0)
    p.slot("t", 1, bound=80.0)
    if with_count:
        p.count("c")
    with p.loop("examples"):
        p.sum("is_y", "s", count="c" if with_count else None)
        p.sum("y", "t", count="c" if with_count else None)
    p.aff("s", {"s": 1.0, "t": 0.1})
    p.readout("s")
    m = ic.compile(p, max_len=17)
    X, y, xq = task(1, 3)
    tok = ic.tokens.encode(X, y, xq)
    full = m(tok)
    np.testing.assert_allclose(full[:, -1], 3 + 0.1 * y.sum(1), rtol=1e-6, atol=1e-6)
    within(run_pruned(m, tok), full)
    s = m.stream()
    for k in range(X.shape[1]):
        s.add(X[:, k], y[:, k])
    within(s.predict(xq), full[:, -1])
