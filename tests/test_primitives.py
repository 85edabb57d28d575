"""Each primitive alone, compiled, matches the interpreter within 1e-6·(1 + |ref|) on inputs in [-10, 10]."""
import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.testing import assert_matches_interpreter, regression_tasks

TOL = dict(rtol=1e-6, atol=1e-6)


def tok_of(task):
    return ic.tokens.encode(*task)


@given(st.integers(1, 4), st.sampled_from(["offset", "position", "mean", "mean_x", "mean_y"]), st.integers(0, 5),
       st.data())
def test_mov(d, how, k, data):
    p = ic.Program(d)
    p.slot("dst", d)
    kw = {"offset": {"offset": k}, "position": {"position": k}, "mean": {"mean": True}, "mean_x": {"mean": "x"},
          "mean_y": {"mean": "y"}}[how]
    p.mov("x", "dst", **kw)
    p.slot("out", 1)
    p.aff("out", {"dst": np.eye(d)[:1]})
    p.readout("out", columns="all")
    tok = tok_of(data.draw(regression_tasks(d=d)))
    assert_matches_interpreter(ic.compile(p), tok, **TOL)


@given(st.sampled_from([(1, 3, 1), (3, 1, 3), (2, 2, 1), (1, 2, 2), (2, 1, 1), (1, 1, 3), (2, 3, 2)]), st.data())
def test_mul(shape, data):
    a, b, c = shape
    d = max(a * b, b * c)
    p = ic.Program(d)
    p.slot("A", a * b, bound=10)
    p.slot("B", b * c, bound=10)
    p.slot("C", a * c, bound=100.0 * b)
    p.aff("A", {"x": np.eye(d)[: a * b]})
    p.aff("B", {"x": np.eye(d)[::-1][: b * c]})
    p.mul("A", "B", "C", shape=shape)
    p.slot("out", 1, bound=100.0 * b)
    p.aff("out", {"C": np.eye(a * c)[:1]})
    p.readout("out", columns="all")
    tok = tok_of(data.draw(regression_tasks(d=d)))
    assert_matches_interpreter(ic.compile(p), tok, **TOL)


@given(st.integers(1, 3), st.floats(0.5, 10.0), st.sampled_from([-1.0, 1.0]), st.booleans(), st.data())
def test_div(d, c0, sign, accumulate, data):
    p = ic.Program(d)
    p.slot("c", 1, bound=11.0)
    # divisor: a dominant constant plus a small data-dependent part, so |c| >= c0/2
    p.aff("c", {"y": 0.05 * c0 / 10.0}, bias=sign * c0)
    p.slot("q", d, bound=10.0 / (0.5 * c0) + 10.0)
    if accumulate:
        p.aff("q", {"x": 0.5})
    p.div("x", "c", "q", accumulate=accumulate, coef=0.5 if accumulate else 1.0)
    p.slot("out", 1, bound=p.layout["q"].bound)
    p.aff("out", {"q": np.eye(d)[:1]})
    p.readout("out", columns="all")
    tok = tok_of(data.draw(regression_tasks(d=d)))
    assert_matches_interpreter(ic.compile(p), tok, **TOL)


@given(st.integers(1, 4), st.integers(1, 3), st.data())
def test_aff(d, k, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    p = ic.Program(d)
    p.slot("out", k, bound=40.0)
    W1 = rng.uniform(-1, 1, (k, d)) / d
    W2 = rng.uniform(-1, 1, (k, 1))
    p.aff("out", {"x": W1, "y": W2}, bias=rng.uniform(-5, 5, k))
    p.slot("r", 1, bound=40.0)
    p.aff("r", {"out": np.eye(k)[:1]})
    p.readout("r", columns="all")
    tok = tok_of(data.draw(regression_tasks(d=d)))
    assert_matches_interpreter(ic.compile(p), tok, **TOL)


def test_mul_with_plus_terms_in_one_layer():
    p = ic.Program(2)
    p.slot("o", 1, bound=300)
    p.mul("x", "x", "o", plus={"y": 2.0}, bias=1.0)
    p.readout("o", columns="all")
    m = ic.compile(p)
    assert m.n_layers_unique == 1
    rng = np.random.default_rng(0)
    tok = ic.tokens.encode(rng.uniform(-10, 10, (2, 3, 2)), rng.uniform(-10, 10, (2, 3)), rng.uniform(-10, 10, (2, 2)))
    assert_matches_interpreter(m, tok)
    ref = np.einsum("btd,btd->bt", tok[..., 1:], tok[..., 1:]) + 2 * tok[..., 0] + 1
    np.testing.assert_allclose(m(tok), ref, rtol=1e-6, atol=1e-6)


def test_float32_primitives_have_documented_error():
    """float32 with Constants.float32(): measured max relative error recorded in docs/algorithms.md."""
    p = ic.Program(2)
    p.slot("s", 1, bound=200)
    p.slot("c", 1)
    p.slot("q", 2, bound=20)
    p.slot("o", 1, bound=400)
    p.mul("x", "x", "s")
    p.aff("c", {"y": 0.05}, bias=2.0)
    p.div("x", "c", "q")
    p.mul("q", "x", "o", shape=(1, 2, 1), plus={"s": 0.5})
    p.readout("o", columns="all")
    m32 = ic.compile(p, dtype=torch.float32, max_len=64)
    rng = np.random.default_rng(0)
    tok = ic.tokens.encode(rng.uniform(-10, 10, (8, 5, 2)), rng.uniform(-10, 10, (8, 5)), rng.uniform(-10, 10, (8, 2)))
    ref = ic.interpret(p, tok).output
    out = m32(torch.as_tensor(tok, dtype=torch.float32)).double().numpy()
    rel = np.abs(out - ref) / (1 + np.abs(ref))
    assert out.dtype == np.float64 and rel.max() < 2e-3  # measured ≈4e-4


def test_mean_over_y_columns_is_the_averaging_predictor():
    rng = np.random.default_rng(1)
    d, n = 3, 5
    p = ic.Program(d)
    p.slot("xp", d); p.slot("yx", d, bound=100); p.slot("w", d, bound=100); p.slot("pred", 1, bound=3000)
    p.mov("x", "xp", offset=1)
    p.mul("y", "xp", "yx")
    p.mov("yx", "w", mean="y")
    p.mul("w", "x", "pred")
    p.readout("pred")
    m = ic.compile(p)
    X, y, xq = rng.standard_normal((2, n, d)), rng.standard_normal((2, n)), rng.standard_normal((2, d))
    np.testing.assert_allclose(m.predict(X, y, xq), np.einsum("bd,bd->b", xq, ic.reference.averaging(X, y)),
                               rtol=1e-6, atol=1e-6)
