"""The GPT-2-style block (``block="pre_ln"``) and GPT-2's tanh GeLU, on the native model.

Same accuracy tests as the paper block (≤ 1e-6 against the float64 reference), the block
re-derived by hand from its weights, random programs against the interpreter, and the
error constants of ``activation="gelu_new"``. No optional dependency needed.
"""
import math
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct import errors as E
from iclconstruct.testing import assert_matches_interpreter, programs, tokens_for

ACTS = st.sampled_from(["gelu", "gelu_new"])


@st.composite
def gaussian_task(draw, max_d, max_n, min_n=1):
    d = draw(st.integers(1, max_d))
    n = draw(st.integers(min_n, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X = rng.standard_normal((n, d))
    return X, X @ rng.standard_normal(d), rng.standard_normal(d), rng


def within(got, ref, tol=1e-6):
    got, ref = np.asarray(got), np.asarray(ref)
    assert np.all(np.abs(got - ref) <= tol * (1 + np.abs(ref))), (got, ref, np.abs(got - ref).max())


@settings(max_examples=12, deadline=None)
@given(gaussian_task(12, 24), st.floats(0.0, 0.5), st.floats(0.01, 1.0), ACTS)
def test_pre_ln_sgd_matches_reference(task, lam, frac, act):
    X, y, xq, rng = task
    d = X.shape[1]
    sq = (X * X).sum(1).max()
    lr = frac * min(1 / (2 * sq), 1 / (sq + lam))
    w0 = rng.standard_normal(d)
    m = ic.circuits.sgd(d, lr, lam=lam, w0=w0, block="pre_ln", activation=act)
    within(m.predict(X, y, xq), xq @ ic.reference.sgd(X, y, lr, lam=lam, w0=w0))


@settings(max_examples=8, deadline=None)
@given(gaussian_task(6, 12), st.floats(0.1, 10.0), ACTS)
def test_pre_ln_ridge_matches_reference_on_every_prefix(task, lam, act):
    X, y, xq, _ = task
    n, d = X.shape
    m = ic.circuits.ridge(d, lam, block="pre_ln", activation=act)
    out = m(ic.tokens.encode(X, y, xq))[0]
    xs = np.vstack([X, xq])
    for i in range(n + 1):
        within(out[i], xs[i] @ (np.zeros(d) if i == 0 else ic.reference.ridge(X[:i], y[:i], lam)))


@settings(max_examples=15, deadline=None)
@given(programs(), st.data(), ACTS)
def test_pre_ln_random_program_matches_interpreter(prog, data, act):
    tok = data.draw(tokens_for(prog))
    assert_matches_interpreter(ic.compile(prog, block="pre_ln", activation=act), tok)


def test_pre_ln_block_is_gpt2s_block():
    """Re-derive ``h + Attn(LN(h))``, ``+ MLP(LN(·))`` by hand from the stored weights."""
    X = np.array([[1.0, -2.0], [0.5, 0.3], [-1.0, 1.5]])
    y = np.array([0.7, -1.2, 2.0])
    m = ic.circuits.ridge(2, 0.5, block="pre_ln", activation="gelu_new")
    assert m.d_model % m.d_head == 0 and m.d_model // m.d_head >= m.n_heads  # GPT-2: n_embd = n_head·head_dim
    blk = m.blocks[0]
    assert set(dict(blk.named_parameters())) == {
        "attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O", "attn.b_Q", "attn.b_K", "attn.b_O",
        "mlp.W_in", "mlp.b_in", "mlp.W_out", "mlp.b_out"}
    t = torch.as_tensor(ic.tokens.encode(X, y, np.array([0.2, 0.1])))
    ln = lambda x: (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + blk.ln_eps)
    gelu_new = lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    h = t @ m.W_E + m.W_pos[: t.shape[1]]
    for bi in m.unrolled(t.shape[1]):
        b = m.blocks[bi]
        a_in = ln(h)
        q = torch.einsum("btd,hde->bhte", a_in, b.attn.W_Q) + b.attn.b_Q[None, :, None]
        k = torch.einsum("btd,hde->bhte", a_in, b.attn.W_K) + b.attn.b_K[None, :, None]
        v = torch.einsum("btd,hde->bhte", a_in, b.attn.W_V)
        s = q @ k.transpose(-1, -2) / b.attn.d_head ** 0.5
        s = s + torch.triu(torch.full(s.shape[-2:], float("-inf"), dtype=s.dtype), 1)
        mid = h + torch.einsum("bhte,hed->btd", torch.softmax(s, -1) @ v, b.attn.W_O) + b.attn.b_O
        h = mid + gelu_new(ln(mid) @ b.mlp.W_in + b.mlp.b_in) @ b.mlp.W_out + b.mlp.b_out
    np.testing.assert_allclose(h.numpy(), m.residual(t).numpy(), rtol=1e-12, atol=1e-6)
    within(m(t)[0, -1], np.array([0.2, 0.1]) @ ic.reference.ridge(X, y, 0.5))


def test_pre_ln_hooks_include_ln1():
    m = ic.circuits.sgd(2, 0.05, block="pre_ln")
    _, cache = m.run_with_cache(ic.tokens.encode(np.ones((2, 2)), np.ones(2), np.ones(2)))
    for name in ("blocks.0.ln1.hook_scale", "blocks.0.ln1.hook_normalized", "blocks.0.ln2.hook_normalized"):
        assert name in cache, name
    paper = ic.circuits.sgd(2, 0.05)
    _, cache = paper.run_with_cache(ic.tokens.encode(np.ones((2, 2)), np.ones(2), np.ones(2)))
    assert "blocks.0.ln1.hook_normalized" not in cache


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_product_error_constant_of_each_activation(act):
    """Lemma 4's truncation term for each GeLU: measured error / stated bound in (0.5, 1]."""
    c = ic.Constants(activation=act)
    G = (lambda z: torch.nn.functional.gelu(z)) if act == "gelu" else ic.compiler.model.gelu_new
    N = 300.0  # large truncation, far above float64 round-off (ε·N ≈ 7e-14)
    x = torch.linspace(-1, 1, 41, dtype=torch.float64)
    X, Y = torch.meshgrid(x, x, indexing="ij")
    prod = math.sqrt(math.pi / 2) * N * N * (G((X + Y) / N) - G(X / N) - G(Y / N))
    err = float((prod - X * Y).abs().max())
    bound = replace(c, product_scale=N).product_error(1.0, 1.0)
    assert 0.5 * bound < err <= bound, (err, bound)
    other = ic.Constants(activation="gelu" if act == "gelu_new" else "gelu_new", product_scale=N)
    assert other.product_error(1, 1) != bound  # the two constants differ (by 0.5 %)


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_bypass_error_of_each_activation(act):
    """Lemma 5: ``G(w) − w = −bypass_error(w)`` where float64 resolves it; the pair bypass is exact."""
    c = ic.Constants(activation=act)
    G = (lambda z: torch.nn.functional.gelu(z)) if act == "gelu" else ic.compiler.model.gelu_new
    for w in (1.5, 2.0, 3.0):
        got = float(w - G(torch.tensor(w, dtype=torch.float64)))
        assert got == pytest.approx(c.bypass_error(w), rel=1e-9)
    z = torch.linspace(-5, 5, 101, dtype=torch.float64)
    assert float((G(z) - G(-z) - z).abs().max()) < 1e-15
    assert c.bypass_error(9.5 if act == "gelu" else 8.0) < 1e-20


def test_constants_refuse_unknown_activation():
    with pytest.raises(E.ICLConstructError, match="activation"):
        ic.Constants(activation="relu")
    with pytest.raises(E.ICLConstructError, match="activation"):
        ic.compile(ic.circuits.sgd_program(2, 0.1), activation="swish")


def test_paper_block_refuses_export_naming_the_fix():
    m = ic.circuits.sgd(2, 0.05)
    with pytest.raises(E.ExportError, match="block='pre_ln'"):
        m.to_transformer_lens(3)
    with pytest.raises(E.ExportError, match="block='pre_ln'"):
        m.to_hf(3)
    pre = ic.circuits.sgd(2, 0.05, block="pre_ln", max_len=9)
    with pytest.raises(E.ExportError, match="max_len"):
        pre.to_hf(5)


@pytest.mark.parametrize("module, extra, export", [("transformer_lens", "tl", "to_transformer_lens"),
                                                   ("transformers", "hf", "to_hf")])
def test_missing_library_names_the_extra(monkeypatch, module, extra, export):
    monkeypatch.setitem(sys.modules, module, None)  # import of it now raises ImportError
    m = ic.circuits.sgd(2, 0.05, block="pre_ln")
    with pytest.raises(E.MissingExtraError, match=rf"iclconstruct\[{extra}\]"):
        getattr(m, export)(2)


def test_pre_ln_gelu_new_circuit_saves_and_loads(tmp_path):
    m = ic.circuits.ridge(2, 0.5, block="pre_ln", activation="gelu_new")
    m.save(tmp_path / "c")
    again = ic.load(tmp_path / "c")
    assert again.block_style == "pre_ln" and again.constants.activation == "gelu_new"
    assert again.cfg.act_fn == "gelu_new"
    tok = ic.tokens.encode(np.array([[1.0, 0.5], [0.2, -1.0]]), np.array([0.3, 1.1]), np.array([0.4, 0.4]))
    assert m(tok).tobytes() == again(tok).tobytes()
    budget = m.error_budget()
    assert budget["attention_layernorm_rel"] < 1e-12 and budget["attention_after_div_rel"] < 1e-9


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
@pytest.mark.parametrize("N", [20.0, 40.0])
def test_richardson_product_error_of_each_activation(act, N):
    """Richardson products (``product_order=4``, the ``pre_ln`` float64 default): ``(4·P_2N − P_N)/3``
    leaves the sextic term, ``−(1/4)·√(π/2)·c₆·((x+y)⁶ − x⁶ − y⁶)/N⁴`` with ``c₆ = 1/(40√(2π))``
    for the exact GeLU and 1.023 times that for the tanh GeLU: ≈ 0.194/N⁴ and 0.198/N⁴ at
    ``x = y = 1``, under the stated ``0.35/N⁴`` (``Constants.product_error``). Measured at an ``N``
    where truncation (≈ 1e-6) dwarfs round-off (≈ 1e-14)."""
    G = (lambda z: torch.nn.functional.gelu(z)) if act == "gelu" else ic.compiler.model.gelu_new
    x = torch.linspace(-1, 1, 41, dtype=torch.float64)
    X, Y = torch.meshgrid(x, x, indexing="ij")

    def P(M):
        return math.sqrt(math.pi / 2) * M * M * (G((X + Y) / M) - G(X / M) - G(Y / M))

    err = float(((4 * P(2 * N) - P(N)) / 3 - X * Y).abs().max())
    c = ic.Constants(activation=act, product_scale=N, product_order=4)
    bound = c.product_error(1.0, 1.0)
    assert 0.5 * bound < err <= bound, (err, bound)
    a = math.sqrt(2 / math.pi)
    c6 = 1 / (40 * math.sqrt(2 * math.pi)) if act == "gelu" else (a / 2) * (2 * a ** 4 / 15 - a * a * 0.044715)
    assert err == pytest.approx(0.25 * math.sqrt(math.pi / 2) * c6 * 62 / N ** 4, rel=0.02)
