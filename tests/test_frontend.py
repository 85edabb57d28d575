"""The algorithm front end: tracing, shapes, bounds, CSE, liveness, loops and its errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.errors import CausalityError, ContextTooLongError, ICLConstructError, ShapeError
from iclconstruct.frontend import FrontendError
from iclconstruct.testing import assert_matches_interpreter, shifted_tasks

TOL = dict(rtol=1e-6, atol=1e-6)


@ic.algorithm(d=4, x_bound=6.0, y_bound=30.0)
def two_step_gd(ctx):
    S = ctx.sum(ctx.x.outer(ctx.x))   # Σ over the examples seen so far: XᵀX at every prefix
    b = ctx.sum(ctx.y * ctx.x)         # Xᵀy
    w = ctx.zeros(4)
    for _ in range(2):                 # Python loops unroll at trace time
        w = w - 0.004 * (S @ w - b)
    return w


@ic.algorithm(d=4)
def my_sgd(ctx):
    w = ctx.zeros(4)
    for x, y in ctx.examples():        # one weight-tied block per example
        w = ctx.bound(w - 0.02 * x * (x @ w - y), 8.0)
    return w


def prefix_refs(fn, X, y, xq):
    n = len(X)
    return np.array([fn(X[:k], y[:k]) @ (xq if k == n else X[k]) for k in range(n + 1)])


def rel(a, b):
    return float(np.max(np.abs(a - b) / (1.0 + np.abs(b))))


@settings(max_examples=15, deadline=None)
@given(shifted_tasks(4, max_n=64, y_bound=30.0))
def test_issue_example_matches_reference_and_compiles(task):
    X, y, xq = task
    tok = ic.tokens.encode(X, y, xq)
    ref = prefix_refs(lambda A, b: ic.reference.batch_gd(A, b, 0.002, steps=2), X, y, xq)
    got = two_step_gd.interpret(tok)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * (1 + np.abs(ref).max()))
    model = _compiled(two_step_gd)
    assert rel(model(tok)[0], ref) <= 1e-6
    assert two_step_gd.evaluate(X, y, xq) == pytest.approx(ref[-1], rel=1e-12, abs=1e-12)


_MODELS = {}


def _compiled(alg):
    if alg.name not in _MODELS:
        _MODELS[alg.name] = alg.compile()
    return _MODELS[alg.name]


def test_issue_example_layers_and_sublayer_match():
    model = _compiled(two_step_gd)
    assert model.depth(8) == model.depth(256) == 4   # gather, sums, one step, readout (first step folds)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((9, 4))
    assert_matches_interpreter(model, ic.tokens.encode(X, X @ rng.standard_normal(4), rng.standard_normal(4)), **TOL)


@settings(max_examples=10, deadline=None)
@given(shifted_tasks(4, max_n=20, x_bound=6.0, y_bound=50.0))
def test_examples_loop_is_sgd(task):
    X, y, xq = task
    X = X / 2.0  # keep 2·lr·‖x‖² < 1 so that the bound 8 holds
    tok = ic.tokens.encode(X, y / 10.0, xq)
    ref = prefix_refs(lambda A, b: ic.reference.sgd(A, b, 0.01), X, y / 10.0, xq)
    np.testing.assert_allclose(my_sgd.interpret(tok)[0], ref, rtol=1e-12, atol=1e-12)
    assert rel(_compiled(my_sgd)(tok)[0], ref) <= 1e-6


def test_sgd_loop_is_two_layers_per_example():
    m = _compiled(my_sgd)
    assert m.layers_per_example() == 2
    assert m.depth(10) == m.depth(0) + 20


def test_loop_with_two_states_and_a_gate():
    @ic.algorithm(d=3, x_bound=2.0, y_bound=2.0, max_n=16)
    def leaky(ctx):
        w = ctx.const([0.1, 0.2, 0.3])
        b = ctx.zeros(3)
        for x, y in ctx.examples():
            w = ctx.bound(0.9 * w + 0.05 * y * x, 5.0)   # not the identity at x = 0, y = 0: gated
            b = ctx.bound(b + 0.1 * w, 5.0)               # reads the new w
        return w + b

    rng = np.random.default_rng(3)
    X, y, xq = rng.uniform(-2, 2, (7, 3)), rng.uniform(-2, 2, 7), rng.uniform(-2, 2, 3)
    w, b = np.array([0.1, 0.2, 0.3]), np.zeros(3)
    for xi, yi in zip(X, y):
        w = 0.9 * w + 0.05 * yi * xi
        b = b + 0.1 * w
    tok = ic.tokens.encode(X, y, xq)
    assert leaky.interpret(tok)[0, -1] == pytest.approx((w + b) @ xq, rel=1e-12)
    assert leaky.evaluate(X, y, xq) == pytest.approx((w + b) @ xq, rel=1e-12)
    assert_matches_interpreter(leaky.compile(), tok, **TOL)


def test_scalar_prediction_with_query_mean_and_division():
    @ic.algorithm(d=2, x_bound=3.0, y_bound=3.0, max_n=16)
    def shrunk_mean(ctx):
        m = ctx.mean(ctx.y * ctx.x)
        c = 1 + ctx.sum(ctx.x @ ctx.x)           # provably >= 1
        return (m @ ctx.query) / c + 0.5 * ctx.count() / (ctx.count() + 2)

    rng = np.random.default_rng(1)
    X, y, xq = rng.uniform(-3, 3, (6, 2)), rng.uniform(-3, 3, 6), rng.uniform(-3, 3, 2)
    tok = ic.tokens.encode(X, y, xq)
    n = len(X)
    want = (np.mean(y[:, None] * X, 0) @ xq) / (1 + (X * X).sum()) + 0.5 * n / (n + 2)
    assert shrunk_mean.interpret(tok)[0, -1] == pytest.approx(want, rel=1e-12)
    assert shrunk_mean.evaluate(X, y, xq) == pytest.approx(want, rel=1e-12)
    assert_matches_interpreter(shrunk_mean.compile(), tok, **TOL)


def test_cse_and_liveness():
    @ic.algorithm(d=3, max_n=8)
    def twice(ctx):
        a = ctx.sum(ctx.x.outer(ctx.x))
        b = ctx.sum(ctx.x.outer(ctx.x))          # the same expression: the same node, one sum
        assert a is b
        w = ctx.sum(ctx.y * ctx.x)
        for _ in range(3):
            w = ctx.bound(w - 0.001 * (a @ w), 50.0)
        return w

    p = twice.program()
    assert sum(op.kind == "sum" for op in p.ops) == 2
    assert sum(op.kind == "mul" and op.shape == (3, 1, 3) for op in p.ops) == 1
    # liveness: rows of dead values are reused (a row that held two slots is labelled 'a|b')
    assert any("|" in label for label in p.layout.row_labels())
    user = [s for s in p.layout.user_slots() if s.name not in ("y", "x")]
    assert p.layout.size < 14 + sum(s.size for s in user)


def test_bounds_come_from_interval_analysis():
    ctx = ic.frontend.Context(3, 2.0, 5.0, 10)
    x = ctx.x
    assert (x @ x).lo == 0.0 and (x @ x).hi == pytest.approx(12.0)    # a sum of squares is >= 0
    assert ctx.sum(ctx.y * x).bound == pytest.approx(100.0)
    assert ctx.count().bound == 10
    S = ctx.sum(x.outer(x))
    assert S.T is S                                                     # symmetric: no transpose op
    assert np.all(np.diag(S.lo) == 0.0)
    z = ctx.bound(S @ ctx.const([1.0, 0.0, 0.0]), 3.0)
    assert z.bound == 3.0
    assert (np.eye(3) @ x).shape == (3,) and (np.float64(2.0) * x).bound == pytest.approx(4.0)  # numpy on the left


def test_scaled_sum():
    """``ctx.sum(e, scale=c)`` is ``c·Σ e``: bounds scale, a different scale is a different node, and the
    program's sum op carries the scale (the raw sum is never written)."""
    ctx = ic.frontend.Context(3, 2.0, 5.0, 10)
    s = ctx.sum(ctx.y * ctx.x, scale=0.1)
    assert s.bound == pytest.approx(10.0) and ctx.sum(ctx.y * ctx.x, scale=-0.5).lo[0] == pytest.approx(-50.0)
    assert s is ctx.sum(ctx.y * ctx.x, scale=0.1) and s is not ctx.sum(ctx.y * ctx.x)
    with pytest.raises(ICLConstructError, match="scale"):
        ctx.sum(ctx.x, scale=float("nan"))

    @ic.algorithm(d=2, x_bound=3.0, y_bound=3.0, max_n=16)
    def scaled(ctx):
        S = ctx.sum(ctx.x.outer(ctx.x), scale=1 / 16)
        return (S @ ctx.query) @ ctx.sum(ctx.y * ctx.x, scale=1 / 16)

    assert sorted(op.scale for op in scaled.program().ops if op.kind == "sum") == [1 / 16, 1 / 16]
    rng = np.random.default_rng(2)
    X, y, xq = rng.uniform(-3, 3, (7, 2)), rng.uniform(-3, 3, 7), rng.uniform(-3, 3, 2)
    want = (X.T @ X / 16 @ xq) @ (X.T @ y / 16)
    tok = ic.tokens.encode(X, y, xq)
    assert scaled.interpret(tok)[0, -1] == pytest.approx(want, rel=1e-12)
    assert scaled.evaluate(X, y, xq) == pytest.approx(want, rel=1e-12)
    assert_matches_interpreter(scaled.compile(), tok, **TOL)


# ---------------------------------------------------------------------- errors name expression and line
def _raises(exc, fn, match):
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    assert "test_frontend.py:" in msg, msg
    assert match in msg, msg
    assert isinstance(info.value, ICLConstructError)
    return msg


def test_shape_mismatch_error():
    @ic.algorithm(d=3)
    def bad(ctx):
        return ctx.sum(ctx.x.outer(ctx.x)) @ ctx.zeros(2)

    _raises(ShapeError, bad.program, "do not fit")


def test_division_must_be_provably_positive():
    @ic.algorithm(d=3)
    def bad(ctx):
        return ctx.sum(ctx.y * ctx.x) / ctx.sum(ctx.y)

    _raises(FrontendError, bad.program, "not provably positive")


def test_unbounded_expression_error():
    @ic.algorithm(d=8, max_n=64)
    def bad(ctx):
        S = ctx.sum(ctx.x.outer(ctx.x))
        return (S @ S) @ ctx.sum(ctx.y * ctx.x)

    msg = _raises(FrontendError, bad.program, "ctx.bound")
    assert "unbounded" in msg


@pytest.mark.parametrize("case", ["sum_of_aggregate", "query_in_sum", "example_with_aggregate", "loop_reads_all"])
def test_reading_a_future_example_is_refused(case):
    def body(ctx):
        if case == "sum_of_aggregate":
            w = ctx.sum(ctx.y * ctx.x)
            return ctx.sum(ctx.x * (ctx.x @ w))
        if case == "query_in_sum":
            return ctx.sum(ctx.y * (ctx.x @ ctx.query))
        if case == "example_with_aggregate":
            return ctx.x @ ctx.sum(ctx.y * ctx.x)
        w = ctx.zeros(3)
        for x, y in ctx.examples():
            w = w + ctx.sum(ctx.y * ctx.x)
        return w

    _raises(CausalityError, ic.algorithm(d=3)(body).program, "at")


def test_wrong_return_shape_and_per_example_return():
    with pytest.raises(ShapeError, match="weight vector of shape"):
        ic.algorithm(d=3)(lambda ctx: ctx.sum(ctx.x.outer(ctx.x))).program()
    with pytest.raises(FrontendError, match="outside any sum"):
        ic.algorithm(d=3)(lambda ctx: ctx.y * ctx.x).program()


def test_loop_errors():
    @ic.algorithm(d=2)
    def unbounded(ctx):
        w = ctx.zeros(2)
        for x, y in ctx.examples():
            w = w - 0.1 * x * (x @ w - y)
        return w

    _raises(FrontendError, unbounded.program, "ctx.bound(w")

    @ic.algorithm(d=2)
    def inside_used_after(ctx):
        w = ctx.zeros(2)
        for x, y in ctx.examples():
            e = x @ w - y
            w = ctx.bound(w - 0.1 * x * e, 5.0)
        return w * e

    _raises(FrontendError, inside_used_after.program, "inside the ctx.examples() loop body")


def test_data_dependent_branch_and_context_length():
    @ic.algorithm(d=2)
    def branchy(ctx):
        s = ctx.sum(ctx.y)
        return ctx.zeros(2) if s else ctx.zeros(2)

    with pytest.raises(FrontendError, match="truth value"):
        branchy.program()

    @ic.algorithm(d=2, max_n=3)
    def avg(ctx):
        return ctx.mean(ctx.y * ctx.x)

    tok = ic.tokens.encode(np.ones((5, 2)), np.ones(5), np.ones(2))
    with pytest.raises(ContextTooLongError, match="max_n"):
        avg.interpret(tok)
    with pytest.raises(ContextTooLongError, match="max_len"):   # Algorithm.compile(max_len=...) defaults to 2·max_n + 1
        avg.compile()(tok)


def test_runtime_bound_claims_are_checked():
    @ic.algorithm(d=2, x_bound=5.0, y_bound=5.0, max_n=8)
    def liar(ctx):
        return ctx.bound(ctx.sum(ctx.y * ctx.x), 1.0)          # false for most data

    tok = ic.tokens.encode(np.full((4, 2), 3.0), np.full(4, 3.0), np.ones(2))
    with pytest.raises(ic.errors.OutOfRangeError):
        liar.interpret(tok)
    with pytest.raises(ic.errors.OutOfRangeError):
        liar.compile()(tok)


def test_bound_refusals_name_the_source_line_or_the_callers_argument(tmp_path):
    def make(w_bound, arg):
        @ic.algorithm(d=2, x_bound=5.0, y_bound=5.0, max_n=8)
        def sums(ctx):
            return ctx.bound(ctx.sum(ctx.y * ctx.x), w_bound, arg=arg)
        return sums

    tok = ic.tokens.encode(np.full((4, 2), 3.0), np.full(4, 3.0), np.ones(2))
    for arg, expected in ((None, "raise that bound"), ("w_bound", "pass a larger w_bound")):
        alg = make(1.0, arg)
        for run in (alg.interpret, alg.compile()):
            with pytest.raises(ic.errors.OutOfRangeError) as e:
                run(tok)
            assert "test_frontend.py:" in str(e.value) and expected in str(e.value), str(e.value)
    with pytest.raises(FrontendError, match="arg must be an argument name"):
        make(1.0, "not a name").program()
    # the advice travels with saved circuits: the reloaded model names the argument too
    ic.io.save(make(1.0, "w_bound").compile(), tmp_path / "c")
    with pytest.raises(ic.errors.OutOfRangeError, match="pass a larger w_bound"):
        ic.io.load(tmp_path / "c")(tok)
