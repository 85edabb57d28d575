"""``compile(sparse=True)`` builds sparse from the start (paper block): the same weights as the dense
build converted with ``to_sparse()``, buffer for buffer, and the same predictions on every path."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct import errors as E
from iclconstruct.compiler.model import Block
from iclconstruct.runtime.sparse import SparseBlock
from iclconstruct.testing import programs, tokens_for

from test_sparse import task, within

C = ic.circuits

PROGRAMS = {
    "sgd": lambda: C.sgd_program(3, 0.05),
    "sgd_lam": lambda: C.sgd_program(2, 0.01, lam=0.1),
    "ridge": lambda: C.ridge_program(3, 0.5),
    "newton": lambda: C.newton_algorithm(3, 4).program(),
    "batch_gd": lambda: C.batch_gd_algorithm(3, 0.05, steps=2, lam=0.1).program(),
}


def _csr_equal(a, b):
    return (a.shape == b.shape and torch.equal(a.crow_indices(), b.crow_indices())
            and torch.equal(a.col_indices(), b.col_indices()) and torch.equal(a.values(), b.values()))


def assert_same_weights(prog, **kw):
    """Sparse-built ``to_dense()`` equals the dense build bit for bit (signed zeros included); its
    blocks' buffers equal ``to_sparse()``'s."""
    dense = ic.compile(prog, **kw)
    built = ic.compile(prog, sparse=True, **kw)
    assert built.is_sparse and all(isinstance(b, SparseBlock) for b in built.blocks)
    assert built.cfg == dense.cfg
    back = built.to_dense()
    assert all(isinstance(b, Block) for b in back.blocks)
    sd, sb = dense.state_dict(), back.state_dict()
    assert list(sd) == list(sb)
    for k in sd:
        assert sd[k].dtype == sb[k].dtype and torch.equal(sd[k], sb[k]), k
        assert torch.equal(torch.signbit(sd[k]), torch.signbit(sb[k])), k  # signed zeros too: bit for bit
    for a, b in zip(dense.to_sparse().blocks, built.blocks):
        for name in ("Vt", "Ot", "Wint", "Woutt"):
            assert _csr_equal(getattr(a, name), getattr(b, name)), name
        for name in ("Wq", "Wk", "b_in", "b_out", "units"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert [len(c) for c in a.qk_cols] == [len(c) for c in b.qk_cols]
        assert all(torch.equal(x, y) for x, y in zip(a.vo_cols, b.vo_cols))
        assert a.head_slices == b.head_slices and a.shape == b.shape
        assert a.head_labels == b.head_labels and list(a.unit_labels) == list(b.unit_labels)
    for a, b in zip(dense.blocks, back.blocks):
        assert a.mlp.unit_labels == b.mlp.unit_labels and a.attn.head_labels == b.attn.head_labels
    return dense, built


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_sparse_build_has_the_dense_weights(name):
    assert_same_weights(PROGRAMS[name]())


@pytest.mark.parametrize("name", ["sgd", "ridge", "batch_gd"])
def test_sparse_build_float32_and_constant_variants(name):
    """float32; Richardson products (``product_order=4``, six units); the paper's one-unit bypass (``bypass_scale``)."""
    from dataclasses import replace

    assert_same_weights(PROGRAMS[name](), dtype=torch.float32)
    c = ic.numerics.constants.Constants.for_dtype(torch.float64)
    assert_same_weights(PROGRAMS[name](), constants=replace(c, product_order=4))
    assert_same_weights(PROGRAMS[name](), constants=replace(c, bypass_scale=20.0))


@pytest.mark.parametrize("make", [lambda: C.ridge_program(4, 0.5), lambda: C.sgd_program(4, 0.01, lam=0.1)])
def test_sparse_build_predicts_as_dense_on_every_path(make):
    m = ic.compile(make())
    s = ic.compile(make(), sparse=True)
    X, y, xq = task(4, 9)
    tok = ic.tokens.encode(X, y, xq)
    within(s(tok), m(tok))
    within(s.predict_prefixes(X, y), m.predict_prefixes(X, y))
    within(s.predict(X, y, xq), m.predict(X, y, xq))
    st_ = s.stream()
    for k in range(9):
        st_.add(X[:, k], y[:, k])
    within(st_.predict(xq), m(tok)[:, -1])


def test_sparse_build_checks_ranges():
    m = ic.compile(C.ridge_program(1, lam=0.5, w_bound=0.5), sparse=True)
    with pytest.raises(E.OutOfRangeError, match="layer"):
        m(ic.tokens.encode(np.full((1, 4, 1), 2.0), np.full((1, 4), 10.0), None))


def test_auto_decides_before_building():
    p = C.sgd_program(2, 0.02)
    assert not ic.compile(p, sparse="auto").is_sparse
    import iclconstruct.compiler.build as B
    old = B.SPARSE_AUTO_PARAMS
    try:
        B.SPARSE_AUTO_PARAMS = 10
        assert ic.compile(p, sparse="auto").is_sparse
        assert not ic.compile(p, sparse="auto", block="pre_ln").is_sparse  # sparse blocks: paper block only
    finally:
        B.SPARSE_AUTO_PARAMS = old


def test_pre_ln_is_refused():
    """SparseBlock has no LayerNorm in front of attention: a pre_ln model cannot run sparse (it used to
    convert silently and compute garbage)."""
    p = C.sgd_program(2, 0.02)
    with pytest.raises(E.ArgumentError, match="pre_ln"):
        ic.compile(p, sparse=True, block="pre_ln")
    with pytest.raises(E.ArgumentError, match="pre_ln"):
        ic.compile(p, block="pre_ln").to_sparse()


def test_sparse_built_model_saves_and_loads(tmp_path):
    m = ic.compile(C.ridge_program(2, 1.0), sparse=True)
    m.save(tmp_path / "c")  # load recompiles densely and checks the weights bit for bit
    back = ic.load(tmp_path / "c")
    X, y, xq = task(2, 5)
    within(back.predict(X, y, xq), m.predict(X, y, xq))


def test_lazy_unit_labels():
    s = ic.compile(C.ridge_program(2, 1.0), sparse=True)
    d = ic.compile(C.ridge_program(2, 1.0))
    for a, b in zip(s.blocks, d.blocks):
        labs = a.unit_labels
        assert len(labs) == d.d_mlp and labs[0] == b.mlp.unit_labels[0] and labs[-1] == b.mlp.unit_labels[-1]
        assert labs[1:4] == b.mlp.unit_labels[1:4] and list(labs) == b.mlp.unit_labels


@settings(max_examples=25, deadline=None)
@given(programs(), st.data())
def test_random_programs_sparse_build(prog, data):
    dense, built = assert_same_weights(prog)
    tok = data.draw(tokens_for(prog))
    within(built(tok), dense(tok))


def test_save_refuses_a_too_large_sparse_model(tmp_path):
    m = ic.compile(C.ridge_program(2, 1.0), sparse=True)
    with pytest.raises(E.CheckpointError, match="max_dense_bytes"):
        m.save(tmp_path / "c", max_dense_bytes=1000)
    with pytest.raises(E.CheckpointError, match="max_dense_bytes"):
        ic.io.save(m, tmp_path / "c", max_dense_bytes=1000)
    assert not (tmp_path / "c").exists()
    ic.io.save(m, tmp_path / "d")  # the module-level save densifies too (it used to fail on CSR buffers)
    assert not ic.io.load(tmp_path / "d").is_sparse


def test_sparse_build_width_and_gelu_new():
    """``width=`` pads the residual stream; ``activation='gelu_new'`` runs GPT-2's GeLU in the sparse
    blocks too (they used to run the exact GeLU whatever the config said)."""
    p = C.sgd_program(3, 0.05)
    assert_same_weights(p, width=40)
    dense, built = assert_same_weights(p, activation="gelu_new")
    X, y, xq = task(3, 6)
    within(built.predict(X, y, xq), dense.predict(X, y, xq))
    within(dense.to_sparse().predict(X, y, xq), dense.predict(X, y, xq))
    h = torch.randn(1, 3, dense.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 30
    for a, b in zip(dense.blocks, built.blocks):  # off the program's range the two GeLUs differ visibly
        got, want = b.mlp_sublayer(h, dense._null_hooks, 0), a.mlp_sublayer(h, dense._null_hooks, 0)
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-9)


def test_balance_sums_exactly_as_a_full_row_fsum():
    """``balance`` sums only the non-zero entries; the result is that of ``math.fsum`` over the whole
    vector, signed zeros included (cancelling pairs, ±K next to small entries, all-zero rows)."""
    import math

    from iclconstruct.compiler.layernorm import balance

    lay = C.ridge_program(2, 1.0).layout
    bal = lay.row("bal")
    rng = np.random.default_rng(0)
    for t in range(100):
        W = rng.standard_normal((7, lay.size)) * (rng.random((7, lay.size)) < 0.2)
        W[rng.random((7, lay.size)) < 0.3] = -0.0
        W[0], W[1] = 0.0, -0.0
        W[2, :3], W[3, :3], W[4, :2] = [2.0 ** 55, 1e-3, -2.0 ** 55], [1.0, -1.0, -0.0], [-1e-300, 1e-300]
        want = np.array(W)
        want[:, bal] = 0.0
        want[:, bal] = [-math.fsum(v) for v in want]
        got = balance(W, lay)
        assert np.array_equal(got, want) and np.array_equal(np.signbit(got), np.signbit(want))


def test_sparse_built_model_refuses_what_the_dense_refuses():
    """The a-posteriori check (float32 ridge corner input) on every path of a sparse-built model."""
    from test_aposteriori import _refused_everywhere, ridge_model

    dense = ridge_model(2, 1.0, torch.float32)
    built = ic.compile(dense.program, dtype=torch.float32, sparse=True)
    assert built.is_sparse
    _refused_everywhere(built)


def test_circuits_build_large_d_sparse_by_default_and_dense_refuses_before_allocating():
    """The standard d = 20 ridge circuit is sparse by default (``sparse="auto"``) and predicts the
    numpy ridge solution; asking for a dense model whose weights would not fit is refused up front,
    naming ``sparse``, instead of running the machine out of memory."""
    import pytest

    from iclconstruct.errors import ArgumentError
    from iclconstruct.runtime.sparse import SparseBlock

    m = ic.circuits.ridge(20, 0.5, max_len=17)
    assert all(isinstance(b, SparseBlock) for b in m.blocks)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((2, 8, 20)) / np.sqrt(20)
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((2, 20)))
    pred = m.predict_prefixes(X, y)
    ref = np.stack([np.einsum("bd,bd->b", X[:, k], ic.reference.ridge(X[:, :k], y[:, :k], 0.5)) for k in range(8)], 1)
    np.testing.assert_allclose(pred, ref, rtol=1e-6, atol=1e-6)
    assert not any(isinstance(b, SparseBlock) for b in ic.circuits.ridge(4, 0.5, max_len=9).blocks)  # small: dense
    with pytest.raises(ArgumentError, match="sparse=False.*max_dense_bytes"):
        ic.compile(ic.circuits.ridge_program(20, 0.5), sparse=False, max_len=17, max_dense_bytes=10 ** 6)


def test_sparse_models_deep_copy():
    """``copy.deepcopy`` of a sparse model (torch cannot deep-copy CSR tensors by itself): the copy
    predicts the same, and editing it leaves the original alone."""
    import copy

    m = ic.circuits.ridge(3, 0.5, max_len=9, sparse=True)
    c = copy.deepcopy(m)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 4, 3))
    y = X.sum(-1)
    xq = rng.standard_normal((2, 3))
    np.testing.assert_array_equal(c.predict(X, y, xq), m.predict(X, y, xq))
    with torch.no_grad():
        c.blocks[0].Wint.values().mul_(2.0)
    assert not torch.equal(c.blocks[0].Wint.values(), m.blocks[0].Wint.values())
