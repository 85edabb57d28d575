"""Structured-sparse blocks: same layer (Eq. 4) on the same weights, equal to the dense model."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct import errors as E
from iclconstruct.runtime.sparse import SparseBlock, density
from iclconstruct.testing import programs, tokens_for

TOL = 1e-6  # the circuits' test tolerance; dense and sparse differ only in summation order


def within(got, ref, tol=TOL):
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape
    assert np.all(np.abs(got - ref) <= tol * (1 + np.abs(ref))), np.abs(got - ref).max()


def task(d, n, B=2, seed=0):
    rng = np.random.default_rng(seed)
    X = np.clip(rng.standard_normal((B, n, d)), -3, 3)
    return X, np.einsum("bnd,bd->bn", X, rng.standard_normal((B, d))), np.clip(rng.standard_normal((B, d)), -3, 3)


@pytest.mark.parametrize("make", [lambda: ic.circuits.ridge(4, 0.5), lambda: ic.circuits.sgd(4, 0.01, lam=0.1),
                                  lambda: ic.circuits.ridge(4, 0.5, form="gain")])
def test_sparse_equals_dense_on_every_path(make):
    m = make()
    s = m.to_sparse()
    assert s.is_sparse and not m.is_sparse and all(isinstance(b, SparseBlock) for b in s.blocks)
    assert density(m) < 0.05
    X, y, xq = task(4, 9)
    tok = ic.tokens.encode(X, y, xq)
    within(s(tok), m(tok))
    within(s.predict_prefixes(X, y), m.predict_prefixes(X, y))
    st_ = s.stream()
    for k in range(9):
        st_.add(X[:, k], y[:, k])
    within(st_.predict(xq), m(tok)[:, -1])


def test_to_dense_gives_back_every_entry():
    m = ic.circuits.ridge(3, 0.5)
    back = m.to_sparse().to_dense()
    assert not back.is_sparse
    for a, b in zip(m.blocks, back.blocks):
        for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
            assert na == nb and torch.equal(pa, pb), na
        assert a.attn.head_labels == b.attn.head_labels and a.mlp.unit_labels == b.mlp.unit_labels


def test_compile_sparse_and_save(tmp_path):
    p = ic.circuits.sgd_program(2, 0.02)
    m = ic.compile(p, sparse=True)
    assert m.is_sparse
    with pytest.raises(E.ICLConstructError, match="sparse"):
        ic.compile(p, sparse="yes")
    assert not ic.compile(p, sparse="auto").is_sparse  # small: stays dense
    m.save(tmp_path / "c")
    back = ic.load(tmp_path / "c")
    X, y, xq = task(2, 5)
    within(back.predict(X, y, xq), m.predict(X, y, xq))


def test_sparse_checks_ranges():
    m = ic.circuits.ridge(1, lam=0.5, w_bound=0.5).to_sparse()
    with pytest.raises(E.OutOfRangeError, match="layer"):
        m(ic.tokens.encode(np.full((1, 4, 1), 2.0), np.full((1, 4), 10.0), None))


@settings(max_examples=20)
@given(programs(), st.data())
def test_random_programs_sparse_equals_dense(prog, data):
    m = ic.compile(prog)
    tok = data.draw(tokens_for(prog))
    within(m.to_sparse()(tok), m(tok))
