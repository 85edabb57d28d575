"""Unit tests of the weight builders, one per lemma, and of every error formula of ``Constants``
against the error measured on its own primitive (float64, exact erf GeLU, real LayerNorm)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.compiler.attention import AttentionBuilder, attend_offset, attend_position, averaging_read
from iclconstruct.compiler.layernorm import balance, division_setup, layernorm_bypass, restore_anchors
from iclconstruct.compiler.mlp import MLPBuilder, bypass_units, product_units
from iclconstruct.lang.embedding import system_rows
from iclconstruct.lang.layout import Layout
from iclconstruct.lang.ops import Read

LAY = Layout(2)
LAY.alloc("a", 1, bound=10.0)
LAY.alloc("b", 1, bound=10.0)
LAY.alloc("w", 3, bound=10.0)
D = LAY.size
gelu = lambda z: torch.nn.functional.gelu(torch.as_tensor(z, dtype=torch.float64)).numpy()


def _column(**values):
    h = np.zeros(D)
    for name, v in values.items():
        LAY.view(h, name)[...] = v
    return h


def _run(units, h):
    return sum(u.gain * float(gelu(u.w @ h + u.b)) for u in units)


# ---------------------------------------------------------------------- Lemma 4
@pytest.mark.parametrize("N", [30.0, 100.0, 1e3])
def test_product_error_formula_bounds_the_measured_error_and_is_tight(N):
    c = ic.Constants(product_scale=N)
    s = 10.0
    g = np.linspace(-s, s, 21)
    err = max(abs(_run(product_units(LAY.unit("a"), LAY.unit("b"), s, s, 1.0, N, "p"), _column(a=x, b=y)) - x * y)
              for x in g for y in g)
    assert err <= c.product_error(s, s)
    assert err >= 0.5 * c.product_error(s, s)  # the truncation term is reached at the corners


@settings(max_examples=50, deadline=None)
@given(st.floats(-10, 10), st.floats(-10, 10), st.floats(-3, 3, allow_subnormal=False))
def test_product_units_multiply(x, y, coef):
    c = ic.Constants()
    units = product_units(LAY.unit("a"), LAY.unit("b"), 10.0, 10.0, coef, c.product_scale, "p")
    assert len(units) == 3
    assert abs(_run(units, _column(a=x, b=y)) - coef * x * y) <= abs(coef) * c.product_error(10.0, 10.0)


# ---------------------------------------------------------------------- Lemma 5
@settings(max_examples=50, deadline=None)
@given(st.floats(-50, 50), st.floats(-5, 5))
def test_exact_pair_bypass(z, beta):
    units, out_bias = bypass_units(LAY.unit("a"), beta, None, "l")
    assert len(units) == 2 and out_bias == 0.0
    assert abs(_run(units, _column(a=z)) - (z + beta)) <= 1e-13 * (1 + abs(z) + abs(beta))


@pytest.mark.parametrize("z", [-8.0, -3.0, 0.0, 5.0])
def test_paper_bypass_error_formula(z):
    nb = 12.0
    units, out_bias = bypass_units(LAY.unit("a"), 0.0, nb, "l")
    err = abs(_run(units, _column(a=z)) + out_bias - z)
    s = z + nb
    formula = s * 0.5 * math.erfc(s / math.sqrt(2))  # (z + N_b)·Φ(−(z + N_b))
    assert err == pytest.approx(formula, rel=1e-3, abs=1e-12)


# ---------------------------------------------------------------------- Lemma 6 and Lemma 8
def _ln(h, eps=0.0):
    return torch.nn.functional.layer_norm(torch.as_tensor(h)[None], (len(h),), eps=eps)[0].numpy()


def _balanced(h):
    return balance(h[None], LAY)[0]


@pytest.mark.parametrize("K", [1e2, 1e3, 1e4])
def test_layernorm_bypass_error_formula(K):
    c = ic.Constants(ln_anchor=K)
    bp = layernorm_bypass(LAY, K, D)
    h = _column(y=3.0, x=[4.0, -2.0], one=1.0, w=[5.0, -7.0, 1.0])
    h[LAY.slice("anchor")] = bp.anchors @ h
    h = _balanced(h)
    assert abs(h.sum()) < 1e-9 and list(LAY.view(h, "anchor")) == [K, -K]
    user = ~LAY.mask(["anchor", "bal"])
    norm_sq = float((h[user] ** 2).sum() + h[LAY.row("bal")] ** 2)
    rel = np.abs(bp.unscale * _ln(h)[user] - h[user]).max() / np.abs(h[user]).max()
    assert rel <= c.ln_error(norm_sq)
    assert rel >= 0.5 * (c.ln_error(norm_sq) - 2.2e-16 * K)  # the truncation term is what is measured


@pytest.mark.parametrize("M, cval", [(1e2, 0.37), (1e3, 2.5), (1e3, -0.8)])
def test_division_error_formula(M, cval):
    c = ic.Constants(div_scale=M)
    lay = LAY
    ab = AttentionBuilder(lay, D, c.attn_hardness, 16)
    unscale = division_setup(ab, lay, "a", ["b"], M)
    h = _column(y=3.0, x=[4.0, -2.0], one=1.0, a=cval, b=9.0, w=[5.0, -7.0, 1.0])
    h[LAY.slice("anchor")] = [1e8, -1e8]
    h = h + ab.self_map @ h  # the self head's write (it attends to its own column)
    assert list(LAY.view(h, "pair")) == [M * cval, -M * cval] and not LAY.view(h, "anchor").any()
    assert LAY.view(h, "b")[0] == 0.0  # the div destination is cleared
    h = _balanced(h)
    keep = ~LAY.mask(["pair", "bal"])
    norm_sq = float((h[keep] ** 2).sum() + h[LAY.row("bal")] ** 2)
    rel = np.abs(unscale * _ln(h)[keep] - h[keep] / abs(cval)).max() / (np.abs(h[keep]).max() / abs(cval))
    assert rel <= c.div_error(norm_sq, abs(cval))
    assert rel >= 0.5 * (c.div_error(norm_sq, abs(cval)) - 2.2e-16 * M)


def test_restore_anchors_undoes_the_division_setup():
    ab = AttentionBuilder(LAY, D, 50.0, 16)
    restore_anchors(ab, LAY, 1e8)
    h = _column(one=1.0, a=3.0)
    h[LAY.slice("pair")] = [5.0, -5.0]
    h = h + ab.self_map @ h
    assert list(LAY.view(h, "anchor")) == [1e8, -1e8] and not LAY.view(h, "pair").any()


def test_balance_zeroes_every_output_sum():
    W = np.random.default_rng(0).standard_normal((4, D))
    B = balance(W, LAY)
    assert np.allclose(B.sum(-1), 0, atol=1e-12) and np.array_equal(np.delete(B, LAY.row("bal"), 1),
                                                                      np.delete(W, LAY.row("bal"), 1))


# ---------------------------------------------------------------------- hard attention
def _pattern(WQ, WK, T, max_len, d_head):
    H = np.zeros((T, D))
    for name, v in system_rows(np.arange(T), max_len).items():
        LAY.view(H, name)[...] = v
    logits = (H @ WQ) @ (H @ WK).T / math.sqrt(d_head)
    logits[np.triu_indices(T, 1)] = -np.inf
    return torch.softmax(torch.as_tensor(logits), -1).numpy()


@pytest.mark.parametrize("A", [5.0, 10.0, 50.0])
def test_attention_leak_is_within_the_error_budget(A):
    T, P, dh = 12, 16, 4
    leak = 2.0 * math.exp(-A)  # ConstructedTransformer.error_budget()["attention_leak"]
    for k in (0, 1, 3):
        pat = _pattern(*attend_offset(LAY, k, hardness=A, max_len=P, d_head=dh, width=D), T, P, dh)
        for t in range(T):
            assert pat[t, max(t - k, 0)] >= 1 - leak
    pat = _pattern(*attend_position(LAY, 4, hardness=A, max_len=P, d_head=dh, width=D), T, P, dh)
    for t in range(T):
        assert pat[t, min(4, t)] >= 1 - leak


def test_averaging_read_weights():
    T, dh = 7, 4
    pat = _pattern(*averaging_read(LAY, 0, hardness=50.0, d_head=dh, width=D), T, 16, dh)
    assert np.allclose(pat, np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None])
    pat = _pattern(*averaging_read(LAY, 2, hardness=50.0, d_head=dh, width=D), T, 16, dh)
    assert np.allclose(pat[0], np.eye(T)[0])  # no ỹ column yet: all visible columns (just 0)
    assert np.allclose(pat[4], [0, 0.5, 0, 0.5, 0, 0, 0])  # the ỹ columns 1 and 3


def test_attention_builder_heads():
    ab = AttentionBuilder(LAY, D, 50.0, 16)
    ab.move(Read("offset", 2), "a", "b")
    ab.move(Read("offset", 0), "a", "b")  # a copy within the column: the self head
    ab.overwrite("w")
    assert ab.n_heads() == 2 and ab.d_head() == 4  # the self head writes b and w (4 rows)
    heads = ab.heads(ab.d_head())
    assert [h.label for h in heads] == ["self", "mov t-2"]
    assert all(np.allclose(h.W_O.sum(-1), 0) for h in heads)  # balanced


def test_mlp_builder_folds_the_constant_row_and_places_units():
    mb = MLPBuilder(LAY, D, unscale=2.0)
    mb.linear("w", 1, LAY.unit("a") + 3.0 * LAY.unit("one"), "l")
    W = mb.weights(4)
    assert W.W_in.shape == (D, 4) and list(W.b_in[:2]) == [3.0, -3.0]
    assert W.W_in[LAY.row("a"), 0] == 2.0 and W.W_in[LAY.row("one"), 0] == 0.0
    assert W.W_out[0, LAY.row("w", 1)] == 1.0 and W.labels[2:] == ["", ""]
    with pytest.raises(ValueError):
        mb.weights(1)
