"""The kit's reductions over the examples: ``Program.count`` and ``Program.sum``.

Interpreter semantics against numpy (exact prefix sums over the ỹ columns), the compiled
model against the interpreter at every sublayer, packing, loops, save/load and misuse.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.errors import ICLConstructError, LayoutError, ShapeError
from iclconstruct.testing import assert_matches_interpreter, regression_tasks

TOL = dict(rtol=1e-6, atol=1e-6)


def sum_program(d, with_count, n_max=8, mlp_count=False):
    """Sums with and without ``count=``; ``mlp_count``: ``n`` is written by an attention first, so the
    count then runs in the MLP (``cancel_mean`` units) rather than in the self head."""
    p = ic.Program(d)
    p.slot("xe", d, bound=10.0)
    p.slot("n", 1, bound=n_max)
    p.slot("s", d, bound=10.0 * n_max)
    p.slot("sy", 1, bound=10.0 * n_max)
    p.slot("out", 1, bound=30.0 * n_max)
    p.mov("x", "xe", offset=1)
    p.mul("xe", "is_y", "xe", shape=(d, 1, 1))
    if mlp_count:
        p.mov("y", "n", offset=1)
    p.count("n")
    p.sum("xe", "s", count="n" if with_count else None)
    p.sum("y", "sy")
    p.aff("out", {"s": np.eye(d)[:1], "sy": 1.0, "n": 1.0})
    p.readout("out", columns="all")
    return p


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.booleans(), st.data())
def test_sum_and_count_interpreter_is_exact(d, with_count, data):
    X, y, xq = data.draw(regression_tasks(d=d, max_n=8))
    tok = ic.tokens.encode(X, y, xq)
    tr = ic.interpret(sum_program(d, with_count), tok)
    n = X.shape[1]
    T = tok.shape[1]
    counts = (np.arange(T) + 1) // 2
    for t in range(T):
        k = counts[t]
        want = X[:, :k, 0].sum(1) + y[:, :k].sum(1) + k
        np.testing.assert_allclose(tr.output[:, t], want, rtol=1e-13, atol=1e-12)
    assert counts[-1] == n


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.booleans(), st.data())
def test_sum_and_count_compiled_match_interpreter(d, with_count, data):
    tok = ic.tokens.encode(*data.draw(regression_tasks(d=d, max_n=8)))
    m = ic.compile(sum_program(d, with_count), max_len=17)
    assert_matches_interpreter(m, tok, **TOL)


def test_sum_shares_a_layer_with_its_averaging_read():
    m = ic.compile(sum_program(2, True), max_len=17)
    # gather (mov + mul) is layer 0; the sum's mean read and product are layer 1
    kinds = [[op.kind for op in plan.mlp_ops] for plan in m.plans]
    assert "sum" in kinds[1]
    assert m.n_layers_unique == 3


def test_count_bound_is_checked_at_run_time():
    p = sum_program(1, True, n_max=2)
    X = np.ones((5, 1))
    with pytest.raises(ic.errors.OutOfRangeError, match="'n'"):
        ic.interpret(p, ic.tokens.encode(X, np.ones(5), np.ones(1)))
    with pytest.raises(ic.errors.OutOfRangeError):
        ic.compile(p, max_len=17)(ic.tokens.encode(X, np.ones(5), np.ones(1)))


def test_sum_inside_a_loop_and_save_load(tmp_path):
    p = ic.Program(1)
    p.slot("a", 1, bound=100.0)
    p.slot("s", 1, bound=100.0)
    p.aff("a", bias=0.0)
    with p.loop(2):
        p.sum("y", "s")
        p.aff("a", {"a": 0.5, "s": 0.1})
    p.readout("a", columns="all")
    m = ic.compile(p, max_len=17)
    tok = ic.tokens.encode(np.ones((4, 1)), np.arange(4.0), np.ones(1))
    assert_matches_interpreter(m, tok, **TOL)
    m.save(tmp_path / "m")
    m2 = ic.load(tmp_path / "m")
    np.testing.assert_allclose(m2(tok), m(tok), rtol=0, atol=0)
    assert [op.kind for op in m2.program.ops] == [op.kind for op in p.ops]


def test_misuse_raises():
    p = ic.Program(2)
    p.slot("a", 2)
    p.slot("b", 1)
    with pytest.raises(ShapeError, match="count"):
        p.count("a")
    with pytest.raises(ShapeError, match="sizes"):
        p.sum("x", "b")
    with pytest.raises(LayoutError, match="overlaps"):
        p.sum("x", "x")
    p.aff("b", bias=1.0)
    with pytest.raises(ICLConstructError, match="count="):
        p.sum("y", "b", count="b")  # b was written by aff, not count
    p.count("b")
    p.aff("b", bias=2.0)  # overwritten: no longer a count
    p.slot("c", 1)
    with pytest.raises(ICLConstructError, match="count="):
        p.sum("y", "c", count="b")


def test_loop_may_not_overwrite_a_count_slot_its_sum_reads_first():
    """From the second iteration on, the sum would multiply by the overwrite, not the count."""
    p = ic.Program(1)
    p.slot("c", 1, bound=10.0)
    p.slot("s", 1, bound=100.0)
    p.count("c")
    with pytest.raises(ICLConstructError, match="count="):
        with p.loop(2):
            p.sum("y", "s", count="c")
            p.aff("c", bias=3.0)
    q = ic.Program(1)  # counting again inside the body, before the sum, is fine
    q.slot("c", 1, bound=10.0)
    q.slot("s", 1, bound=100.0)
    with q.loop(2):
        q.count("c")
        q.sum("y", "s", count="c")
        q.aff("c", bias=3.0)
        q.count("c")
    q.readout("s", columns="all")
    tok = ic.tokens.encode(np.ones((1, 4, 1)), np.arange(1.0, 5.0)[None], np.ones((1, 1)))
    assert_matches_interpreter(ic.compile(q), tok, **TOL)


@pytest.mark.parametrize("block", ["paper", "pre_ln"])
def test_count_from_position_units_is_accurate_at_the_default_max_len(block):
    """Without count= (and for a count in an MLP) the count is (max_len/2)·pos₀: the paper block
    cancels LayerNorm's mean round-off for it (it was 1.5e-5 off at max_len = 1025)."""
    rng = np.random.default_rng(0)
    tok = ic.tokens.encode(rng.uniform(-10, 10, (32, 6, 1)), rng.uniform(-10, 10, (32, 6)), rng.uniform(-10, 10, (32, 1)))
    p = ic.Program(1)
    p.slot("s", 1, bound=60.0)
    p.slot("a", 1, bound=100.0)
    p.slot("c", 1, bound=6.0)
    p.sum("y", "s")
    p.mul("x", "x", "a")
    p.aff("c", {"a": 0.01})
    p.count("c")  # after the aff that reads its old value: an MLP stage
    p.aff("a", {"s": 1.0, "c": 1.0})
    p.readout("a", columns="all")
    m = ic.compile(p, block=block)  # max_len = 1025
    assert any(op.kind == "count" for plan in m.plans for op in plan.mlp_ops)
    assert_matches_interpreter(m, tok, rtol=1e-7, atol=1e-7)


def scaled_sum_program(d, with_count, scale, n_max=8):
    p = ic.Program(d)
    p.slot("xe", d, bound=10.0)
    p.slot("n", 1, bound=n_max)
    p.slot("s", d, bound=10.0 * n_max * abs(scale))
    p.slot("out", 1, bound=10.0 * n_max * abs(scale))
    p.mov("x", "xe", offset=1)
    p.mul("xe", "is_y", "xe", shape=(d, 1, 1))
    p.count("n")
    p.sum("xe", "s", count="n" if with_count else None, scale=scale)
    p.aff("out", {"s": np.eye(d)[:1]})
    p.readout("out", columns="all")
    return p


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3), st.booleans(), st.sampled_from([1.0 / 8, -0.5, 3.0]), st.data())
def test_scaled_sum_is_scale_times_the_sum(d, with_count, scale, data):
    """``sum(..., scale=c)`` is ``c·Σ`` in the interpreter (exact) and in the model (the product's coefficient)."""
    X, y, xq = data.draw(regression_tasks(d=d, max_n=8))
    tok = ic.tokens.encode(X, y, xq)
    p = scaled_sum_program(d, with_count, scale)
    tr = ic.interpret(p, tok)
    counts = (np.arange(tok.shape[1]) + 1) // 2
    for t, k in enumerate(counts):
        np.testing.assert_allclose(tr.output[:, t], scale * X[:, :k, 0].sum(1), rtol=1e-13, atol=1e-12)
    assert_matches_interpreter(ic.compile(p, max_len=17), tok, **TOL)


def test_scaled_sum_save_load_and_old_files(tmp_path):
    import json
    m = ic.compile(scaled_sum_program(2, True, 0.125), max_len=17)
    m.save(tmp_path / "m")
    sums = [o for o in json.dumps(json.loads((tmp_path / "m" / "circuit.json").read_text())).split('"op": ')
            if o.startswith('"sum"')]
    assert len(sums) == 1 and '"scale": 0.125' in sums[0]
    m2 = ic.load(tmp_path / "m")
    assert [op.scale for op in m2.program.ops if op.kind == "sum"] == [0.125]
    tok = ic.tokens.encode(np.ones((3, 2)), np.arange(3.0), np.ones(2))
    np.testing.assert_array_equal(m2(tok), m(tok))
    # an unscaled sum is written without the field, as files from before it existed: they load with scale 1
    ic.compile(sum_program(2, True), max_len=17).save(tmp_path / "old")
    assert '"scale"' not in (tmp_path / "old" / "circuit.json").read_text()
    assert [op.scale for op in ic.load(tmp_path / "old").program.ops if op.kind == "sum"] == [1.0, 1.0]
    # a malformed scale is refused by the file check, naming the field
    f = tmp_path / "m" / "circuit.json"
    f.write_text(f.read_text().replace('"scale": 0.125', '"scale": "big"'))
    with pytest.raises(ic.errors.CheckpointError, match="scale"):
        ic.load(tmp_path / "m")


def test_sum_scale_is_validated():
    p = ic.Program(1)
    p.slot("s", 1, bound=10.0)
    for bad in (float("nan"), float("inf"), None, "2", True):
        with pytest.raises(ic.errors.ArgumentError, match="scale"):
            p.sum("y", "s", scale=bad)
