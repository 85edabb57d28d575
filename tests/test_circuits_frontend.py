"""Theorems 1 and 2 written with the front end (``sgd_algorithm``, ``ridge_algorithm``): the same
layers per example as the hand-written programs (2 and 3), no more width, the reference's
predictions on every prefix; and the front-end extensions they use, one by one."""
import functools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.circuits.ridge import ridge_program_by_hand
from iclconstruct.circuits.sgd import sgd_program_by_hand
from iclconstruct.errors import OutOfRangeError
from iclconstruct import errors as E
from iclconstruct.lang.ops import Div
from iclconstruct.frontend import FrontendError
from iclconstruct.testing import shifted_tasks

C, R = ic.circuits, ic.reference


def _prefix_refs(fn, X, y, xq):
    """Reference prediction at every x̃ column: x_{k+1}ᵀ w(first k examples), then the query."""
    Xall = np.vstack([X, xq[None]])
    return np.array([Xall[k] @ fn(X[:k], y[:k]) for k in range(len(X) + 1)])


@pytest.mark.parametrize("d", [1, 2, 4, 8])
@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_sgd_algorithm_costs_no_more_than_the_hand_written_program(d, lam):
    mine = C.sgd_algorithm(d, 0.01, lam).compile(max_len=65)
    hand = ic.compile(sgd_program_by_hand(d, 0.01, lam), max_len=65)
    assert mine.layers_per_example() == hand.layers_per_example() == 2
    assert mine.d_model <= hand.d_model
    assert C.sgd(d, 0.01, lam).d_model == mine.d_model  # the public circuit is the front-end one


@pytest.mark.parametrize("d", [1, 2, 4, 8])
def test_ridge_algorithm_costs_no_more_than_the_hand_written_program(d):
    mine = C.ridge_algorithm(d, 0.5).compile(max_len=65)
    hand = ic.compile(ridge_program_by_hand(d, 0.5), max_len=65)
    assert mine.layers_per_example() == hand.layers_per_example() == 3
    assert mine.d_model <= hand.d_model
    assert C.ridge(d, 0.5).d_model == mine.d_model


@functools.lru_cache(maxsize=None)
def _sgd(d, lr, lam):
    alg = C.sgd_algorithm(d, lr, lam, x_bound=6.0, y_bound=30.0)
    return alg, alg.compile(max_len=65)


@functools.lru_cache(maxsize=None)
def _ridge(d, lam):
    alg = C.ridge_algorithm(d, lam, x_bound=6.0, y_bound=30.0)
    return alg, alg.compile(max_len=65)


def _check(alg, model, X, y, xq, ref_fn):
    tok = ic.tokens.encode(X, y, xq)
    ref = _prefix_refs(ref_fn, X, y, xq)
    interp = alg.interpret(tok)[0]
    assert np.all(np.abs(interp - ref) <= 1e-12 * (1 + np.abs(ref))), np.abs(interp - ref).max()
    out = np.asarray(model(tok))[0]
    assert np.all(np.abs(out - ref) <= 1e-6 * (1 + np.abs(ref))), np.abs(out - ref).max()
    assert alg.evaluate(X, y, xq) == pytest.approx(ref[-1], rel=1e-12, abs=1e-12)


@settings(max_examples=12, deadline=None)
@given(st.sampled_from([2, 4]), st.sampled_from([0.0, 0.1]), st.data())
def test_sgd_algorithm_matches_reference_on_every_prefix(d, lam, data):
    X, y, xq = data.draw(shifted_tasks(d, max_n=24, x_bound=6.0, y_bound=30.0))
    sq = float((X ** 2).sum(1).max(initial=1.0))
    lr = 0.01 if 2 * 0.01 * (sq + lam) <= 1.0 else 0.005  # within the stability guard for these shapes
    X = X * min(1.0, math.sqrt(1.0 / (2 * lr * (sq + lam))))  # 2·lr·(‖x‖² + lam) <= 1
    alg, model = _sgd(d, lr, lam)
    _check(alg, model, X, y, xq, lambda Xk, yk: R.sgd(Xk, yk, lr, lam=lam))


@settings(max_examples=12, deadline=None)
@given(st.sampled_from([2, 4]), st.sampled_from([0.5, 2.0]), st.data())
def test_ridge_algorithm_matches_reference_on_every_prefix(d, lam, data):
    X, y, xq = data.draw(shifted_tasks(d, max_n=24, x_bound=6.0, y_bound=30.0))
    alg, model = _ridge(d, lam)
    _check(alg, model, X, y, xq, lambda Xk, yk: R.ridge(Xk, yk, lam) if len(Xk) else np.zeros(d))


@pytest.mark.parametrize("d,lam", [(2, 0.0), (3, 0.1)])
def test_sgd_front_end_and_hand_written_programs_agree_in_the_interpreter(d, lam):
    rng = np.random.default_rng(d)
    X, y, xq = rng.standard_normal((2, 9, d)), rng.standard_normal((2, 9)), rng.standard_normal((2, d))
    tok = ic.tokens.encode(X, y, xq)
    a = ic.interpret(C.sgd_program(d, 0.02, lam, w0=np.linspace(-1, 1, d)), tok).output
    b = ic.interpret(sgd_program_by_hand(d, 0.02, lam, w0=np.linspace(-1, 1, d)), tok).output
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_ridge_front_end_and_hand_written_programs_agree_in_the_interpreter():
    rng = np.random.default_rng(0)
    X, y, xq = rng.standard_normal((2, 9, 3)), rng.standard_normal((2, 9)), rng.standard_normal((2, 3))
    tok = ic.tokens.encode(X, y, xq)
    a = ic.interpret(C.ridge_program(3, 0.3), tok).output
    b = ic.interpret(ridge_program_by_hand(3, 0.3), tok).output
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_circuits_keep_their_slot_names_and_meta():
    s = C.sgd_program(2, 0.02, 0.1)
    assert {"xe", "w", "wprev", "e", "pred"} <= {sl.name for sl in s.layout.slots()}
    assert s.meta["circuit"] == "sgd" and s.meta["contraction"]["slots"] == ["w"] and s.guards
    r = C.ridge_program(2, 0.5)
    assert {"xe", "Ainv", "w", "u", "r", "c", "O", "v", "wq", "pred"} <= {sl.name for sl in r.layout.slots()}
    assert "div(-1·O / |c| +=> Ainv)" in r.listing() and "div(v / |c| +=> w)" in r.listing()
    assert r.meta["circuit"] == "ridge" and "lam" in r.meta["bound_advice"]["Ainv"]


# ---------------------------------------------------------------------- the extensions, one by one
def test_ctx_name_names_the_slot_and_refuses_reserved_names():
    @ic.algorithm(d=2, x_bound=2.0, y_bound=2.0, max_n=8)
    def named(ctx):
        s = ctx.name(ctx.sum(ctx.y * ctx.x), "b")
        return ctx.name(ctx.name(s @ s, "b") * 0.5 + s @ ctx.query, "pred")   # a second `b`: b2

    names = {sl.name for sl in named.program().layout.slots()}
    assert {"b", "b2", "pred"} <= names
    with pytest.raises(FrontendError, match="reserved"):
        @ic.algorithm(d=2)
        def bad(ctx):
            return ctx.name(ctx.sum(ctx.x), "is_y")
        bad.program()
    with pytest.raises(FrontendError, match="identifier"):
        @ic.algorithm(d=2)
        def bad2(ctx):
            return ctx.name(ctx.sum(ctx.x), "not a name")
        bad2.program()


def test_named_scaled_value_gets_a_slot_of_its_own():
    @ic.algorithm(d=2, x_bound=2.0, y_bound=2.0, max_n=8)
    def f(ctx):
        u = ctx.name(3.0 * ctx.sum(ctx.x), "u")
        return u @ u

    p = f.program()
    assert "u" in {sl.name for sl in p.layout.slots()} and "-> u)" in p.listing()


def test_one_sided_bound_allows_division_and_is_checked_in_magnitude():
    def make(hi):
        @ic.algorithm(d=2, x_bound=2.0, y_bound=2.0, max_n=8)
        def f(ctx):
            w = ctx.zeros(2)
            for x, y in ctx.examples():
                c = ctx.bound(1 + x @ (0.5 * w), (1.0, hi))   # interval analysis: not provably positive
                w = ctx.bound(w + (y * x) / c * 0.1, 4.0)
            return w
        return f

    f = make(10.0)
    node = [n for n in f.trace()[0].nodes if n.op == "div"][-1]   # the loop body as rebuilt on the state
    assert float(node.args[1].lo) == 1.0 and float(node.args[1].hi) == 9.0   # analysis: 1 + 0.5·2·2·4 = 9 < 10
    rng = np.random.default_rng(1)
    # non-negative inputs keep x·w ≥ 0, so the claim c ≥ 1 holds
    X, y, xq = rng.uniform(0, 1, (5, 2)), rng.uniform(0, 1, 5), rng.uniform(-1, 1, 2)
    w = np.zeros(2)
    for xi, yi in zip(X, y):
        w = w + 0.1 * yi * xi / (1 + 0.5 * xi @ w)
    assert f.interpret(ic.tokens.encode(X, y, xq))[0, -1] == pytest.approx(w @ xq, rel=1e-12)
    assert [o.min_abs for o in f.program().ops if isinstance(o, Div)] == [1.0]   # the claim reaches the program
    # where the claim is false (x·w < 0 gives c < 1) the divisor check refuses, naming the claim
    Xn, yn = X * np.array([1.0, -1.0]), -y
    Xn[1:] *= -1
    with pytest.raises(E.DivisorTooSmallError, match="the program states"):
        f.interpret(ic.tokens.encode(Xn, yn, xq))
    with pytest.raises(OutOfRangeError):  # |c| beyond the claimed magnitude
        make(1.0001).interpret(ic.tokens.encode(X * 0 + 1.0, y * 0 + 1.0, xq))
    with pytest.raises(OutOfRangeError):
        @ic.algorithm(d=1)
        def bad(ctx):
            return ctx.bound(ctx.sum(ctx.x), (2.0, -1.0)) @ ctx.query
        bad.program()


def test_max_bound_refuses_by_default_and_can_be_raised():
    def make(**kw):
        @ic.algorithm(d=1, x_bound=100.0, y_bound=1.0, max_n=1000, **kw)
        def f(ctx):
            return ctx.sum(ctx.x * ctx.x) * 1e-3 @ ctx.query   # |Σx²| <= 1e7 > 1e6
        return f

    with pytest.raises(FrontendError, match="unbounded"):
        make().program()
    assert make(max_bound=1e8).program() is not None
    with pytest.raises(Exception, match="max_bound"):
        make(max_bound=-1.0)


def test_in_place_state_has_no_prev_slot_and_accumulates():
    p = C.ridge_program(2, 0.5)
    names = {sl.name for sl in p.layout.slots()}
    assert "Ainvprev" not in names and "wprev" not in names
    assert "mov(Ainv[t-2] -> Ainv)" in p.listing()


def test_partial_gate_acts_only_on_the_state_term():
    """lam > 0: only lam·w is gated by is_y (in parallel with e), so the block stays 2 layers."""
    p = C.sgd_program(2, 0.02, 0.1)
    assert "mul(wprev (2x1) @ is_y (1x1) -> gated_wprev)" in p.listing()
    assert "gated" not in C.sgd_program(2, 0.02, 0.0).listing()   # identity at x = 0: no gate at all

    @ic.algorithm(d=2, x_bound=2.0, y_bound=2.0, max_n=8)
    def leaky(ctx):   # a constant term: gated through the is_y flag, no slot
        w = ctx.zeros(2)
        for x, y in ctx.examples():
            w = ctx.bound(0.9 * w + 0.1 * y * x + 0.01, 5.0)
        return w

    rng = np.random.default_rng(2)
    X, y, xq = rng.uniform(-2, 2, (6, 2)), rng.uniform(-2, 2, 6), rng.uniform(-2, 2, 2)
    w = np.zeros(2)
    for xi, yi in zip(X, y):
        w = 0.9 * w + 0.1 * yi * xi + 0.01
    assert leaky.interpret(ic.tokens.encode(X, y, xq))[0, -1] == pytest.approx(w @ xq, rel=1e-12)
    assert leaky.compile().layers_per_example() == 2


def test_in_place_update_falls_back_when_the_old_state_is_read_after_it():
    @ic.algorithm(d=2, x_bound=1.0, y_bound=1.0, max_n=8)
    def f(ctx):
        s, t = ctx.zeros(2), ctx.zeros(2)
        for x, y in ctx.examples():
            c = ctx.bound(1 + x @ x, (1.0, 3.0))
            q = ((x @ x) * (x @ x)) * s          # reads the old s in the layer where s's division would land
            s = ctx.bound(s + (y * x) / c, 8.0)
            t = ctx.bound(t + 0.01 * q, 8.0)
        return s + t

    assert "+=>" not in f.program().listing()    # s keeps a prev slot: program order stays exact
    rng = np.random.default_rng(0)
    X, y, xq = rng.uniform(-1, 1, (6, 2)), rng.uniform(-1, 1, 6), rng.uniform(-1, 1, 2)
    s, t = np.zeros(2), np.zeros(2)
    for xi, yi in zip(X, y):
        s, t = s + yi * xi / (1 + xi @ xi), t + 0.01 * (xi @ xi) ** 2 * s
    assert f.interpret(ic.tokens.encode(X, y, xq))[0, -1] == pytest.approx((s + t) @ xq, rel=1e-12)
