"""The compiled model: real Eq. 4 layers, hooks and caches, packing, unchanged rows, bypass variants."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.testing import assert_matches_interpreter, programs, tokens_for


def prog():
    p = ic.Program(2)
    p.slot("xp", 2)
    p.slot("s", 1, bound=300)
    p.slot("c", 1)
    p.slot("q", 2, bound=20)
    p.mov("x", "xp", offset=1)
    p.mul("x", "xp", "s", shape=(1, 2, 1))
    p.aff("c", {"y": 0.1}, bias=2.0)
    p.div("x", "c", "q")
    p.readout("s", columns="all")
    return p


def tok(B=2, n=3, d=2, seed=0):
    rng = np.random.default_rng(seed)
    return ic.tokens.encode(rng.uniform(-10, 10, (B, n, d)), rng.uniform(-10, 10, (B, n)), rng.uniform(-10, 10, (B, d)))


def test_layers_are_the_papers_layers():
    m = ic.compile(prog())
    blk = m.blocks[0]
    assert set(dict(blk.named_parameters())) == {
        "attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O", "mlp.W_in", "mlp.b_in", "mlp.W_out", "mlp.b_out"}
    assert blk.attn.W_Q.shape == (m.n_heads, m.d_model, m.d_head)
    # re-implement Eq. 4 by hand from the weights and compare
    t = torch.as_tensor(tok())
    h = t @ m.W_E + m.W_pos[: t.shape[1]]
    for b in m.blocks:
        q = torch.einsum("btd,hde->bhte", h, b.attn.W_Q)
        k = torch.einsum("btd,hde->bhte", h, b.attn.W_K)
        v = torch.einsum("btd,hde->bhte", h, b.attn.W_V)
        s = q @ k.transpose(-1, -2) / b.attn.d_head ** 0.5
        s = s + torch.triu(torch.full(s.shape[-2:], float("-inf"), dtype=s.dtype), 1)
        a = torch.einsum("bhte,hed->btd", torch.softmax(s, -1) @ v, b.attn.W_O)
        mid = h + a
        ln = (mid - mid.mean(-1, keepdim=True)) / torch.sqrt(mid.var(-1, unbiased=False, keepdim=True) + b.ln_eps)
        h = mid + torch.nn.functional.gelu(ln @ b.mlp.W_in + b.mlp.b_in) @ b.mlp.W_out + b.mlp.b_out
    np.testing.assert_allclose(h.numpy(), m.residual(t).numpy(), rtol=1e-12, atol=1e-6)


def test_packing_lemma7():
    m = ic.compile(prog())
    # mov + aff in attention and mul in the MLP of layer 0; div needs its own layer
    assert m.n_layers_unique == 2
    assert m.depth() == 2


def test_run_with_cache_names_and_slot_reader():
    m = ic.compile(prog())
    t = tok()
    out, cache = m.run_with_cache(t)
    for name in ("hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_pattern",
                 "blocks.0.attn.hook_q", "blocks.0.hook_attn_out", "blocks.0.hook_resid_mid",
                 "blocks.0.ln2.hook_normalized", "blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post",
                 "blocks.1.hook_resid_post"):
        assert name in cache, name
    assert cache["blocks.0.attn.hook_pattern"].shape == (2, m.n_heads, t.shape[1], t.shape[1])
    ref = ic.interpret(m.program, t)
    np.testing.assert_allclose(cache.slot("q", -1).numpy(), ref.slot("q"), rtol=1e-6, atol=1e-6)
    assert cache.slot_by_layer("s").shape == (2, 2, t.shape[1], 1)
    np.testing.assert_allclose(out, m(t))
    with pytest.raises(KeyError):
        cache.slot("nope")


def test_hooks_can_patch_activations():
    m = ic.compile(prog())
    t = tok()
    m.add_hook("blocks.1.hook_resid_post", lambda x, name: x * 0)
    try:
        patched = m(t)
    finally:
        m.reset_hooks()
    assert np.allclose(patched, 0)
    assert not np.allclose(m(t), 0)


@given(programs(), st.data())
def test_rows_outside_write_set_unchanged_in_every_layer(p, data):
    t = data.draw(tokens_for(p))
    m = ic.compile(p)
    _, cache = m.run_with_cache(t)
    lay = m.layout
    user = set(lay.user_rows())
    for l, bi in enumerate(m.unrolled(t.shape[1])):
        plan = m.plans[bi]
        written = {r for op in plan.ops for r in lay[op.writes()].rows}
        keep = sorted(user - written)
        pre = cache[f"blocks.{l}.hook_resid_pre"].numpy()[..., keep]
        post = cache[f"blocks.{l}.hook_resid_post"].numpy()[..., keep]
        assert np.all(np.abs(post - pre) <= 1e-6 * (1 + np.abs(pre))), f"layer {l} changed rows it does not write"


def test_paper_bypass_lemma5_variant():
    c = ic.Constants(bypass_scale=20.0)
    p = ic.Program(2)
    p.slot("a", 2, bound=30)
    p.slot("s", 1, bound=400)
    p.mul("x", "x", "s")
    p.mul("x", "s", "a", shape=(2, 1, 1), coef=0.01, plus={"x": 1.0})
    p.readout("s", columns="all")
    assert_matches_interpreter(ic.compile(p, constants=c), tok())


def test_summary_and_error_budget():
    m = ic.compile(prog())
    s = m.summary()
    for word in ("width D", "MLP width", "heads", "parameters", "div(x / |c| -> q)", "xp"):
        assert word in s
    budget = m.error_budget()
    assert 0 < budget["product_abs_max"] < 1e-5 and budget["attention_leak"] < 1e-20
    assert m.n_params() == sum(p.numel() for p in m.parameters())
    assert "layer 0" in repr(m) and "d_model" in m.extra_repr()


def test_torch_in_torch_out_numpy_in_numpy_out():
    m = ic.compile(prog())
    t = tok()
    assert isinstance(m(t), np.ndarray)
    assert isinstance(m(torch.as_tensor(t)), torch.Tensor)


def test_div_layer_whose_divisor_rows_a_mov_reuses_is_not_refused():
    """Regression (hypothesis): a div and a mov into the freed divisor's rows share a layer. The
    batched LayerNorm check must read M·|c| from the pair rows (c as the attention read it), not
    from the divisor's rows, which already hold the mov's value (0 here) when the MLP runs."""
    p = ic.Program(1, name="div-then-reuse")
    p.slot("c", 1, bound=2.0)
    p.slot("q", 1, bound=1.0)
    p.aff("c", bias=[1.5])
    p.div("is_y", "c", "q", coef=0.2)
    p.free("c")
    p.slot("r", 1, bound=1.0, at=p.layout["q"].start - 1)
    p.mov("is_y", "r", offset=0)
    p.readout("q")
    m = ic.compile(p)
    assert any(plan.divisor == "c" and plan.attn_ops for plan in m.plans), "the div and the mov must share a layer"
    t = torch.tensor([[[0.0, 2.7], [1.0, 0.0], [0.0, -1.0]]], dtype=torch.float64)
    np.testing.assert_allclose(m(t), ic.interpret(p, t).output, atol=1e-8)
