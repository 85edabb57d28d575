"""The attention sublayer's fused evaluation against the per-head definition (TransformerLens' einsums).

``Attention.forward`` multiplies by the heads' weights side by side (a cached flat ``W_QKV``)
and forms the scores with one ``baddbmm``; these tests hold it to the textbook per-head
computation in float64, check that the cached flat weights follow in-place edits and device
moves, and that hooks still see, and may replace, the per-head tensors.
"""
import math

import numpy as np
import pytest
import torch

import iclconstruct as ic
from iclconstruct.compiler.config import ConstructedTransformerConfig
from iclconstruct.compiler.hooks import HookManager
from iclconstruct.compiler.model import Attention


def _reference(att: Attention, h: torch.Tensor, kv=None, mask=None) -> torch.Tensor:
    kv = h if kv is None else kv
    q = torch.einsum("btd,hde->bthe", h, att.W_Q)
    k = torch.einsum("btd,hde->bthe", kv, att.W_K)
    v = torch.einsum("btd,hde->bthe", kv, att.W_V)
    if att.bias:
        q, k = q + att.b_Q, k + att.b_K
    s = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(att.d_head)
    if mask is None:
        T = h.shape[1]
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    p = torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1)
    out = torch.einsum("bhqk,bkhe,hed->bqd", p, v, att.W_O)
    return out + att.b_O if att.bias else out


def _attention(block: str, seed: int = 0) -> Attention:
    cfg = ConstructedTransformerConfig(n_layers=1, d_model=11, n_heads=3, d_head=5, d_mlp=4, d_vocab=3,
                                       max_len=16, segments=((1, 1),), block=block)
    att = Attention(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in att.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return att


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("block", ["paper", "pre_ln"])
def test_fused_attention_equals_per_head_definition(block, fused, monkeypatch):
    if not fused:  # the per-map path of maps too large to copy side by side
        monkeypatch.setattr("iclconstruct.compiler.model.FUSED_QKV_MAX_BYTES", 0)
    att = _attention(block)
    h = torch.randn(2, 9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = att(h, HookManager(), 0)
    ref = _reference(att, h)
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))
    # keys/values from other columns, with an explicit mask (the key/value cache of the pruned runtime)
    kv = torch.randn(2, 6, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mask = torch.rand(4, 6, generator=torch.Generator().manual_seed(3)) > 0.6
    mask[:, 0] = False  # every query sees at least one key
    got = att(h[:, :4], HookManager(), 0, kv=kv, mask=mask)
    ref = _reference(att, h[:, :4], kv=kv, mask=mask)
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))


def test_cached_flat_weights_follow_in_place_edits():
    att = _attention("paper")
    h = torch.randn(1, 7, 11, dtype=torch.float64)
    before = att(h, HookManager(), 0)
    with torch.no_grad():
        att.W_V[1].mul_(-2.0)
        att.W_O[0].zero_()
    after = att(h, HookManager(), 0)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, _reference(att, h), rtol=1e-12, atol=1e-12)
    att.load_state_dict({k: torch.zeros_like(v) for k, v in att.state_dict().items()})
    assert torch.equal(att(h, HookManager(), 0), torch.zeros_like(before))


def test_hooks_see_and_replace_per_head_tensors():
    m = ic.circuits.sgd(3, 0.05, max_len=9, sparse=False)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 4, 3)) * 0.5
    tok = torch.as_tensor(ic.tokens.encode(X, X.sum(-1), rng.standard_normal((2, 3)) * 0.5))
    _, cache = m.run_with_cache(tok, check=False)
    T = tok.shape[1]
    assert cache["blocks.0.attn.hook_q"].shape == (2, T, m.n_heads, m.d_head)
    assert cache["blocks.0.attn.hook_v"].shape == (2, T, m.n_heads, m.d_head)
    pat = cache["blocks.0.attn.hook_pattern"]
    assert pat.shape == (2, m.n_heads, T, T)
    assert torch.allclose(pat.sum(-1), torch.ones_like(pat[..., 0]))
    assert (pat.triu(1) == 0).all()  # causal
    # replacing v by zeros silences layer 0's attention: its output is b_O-free zero
    seen = {}

    def zero_v(x, name):
        return torch.zeros_like(x)

    def grab(x, name):
        seen[name] = x.clone()

    m.add_hook("blocks.0.attn.hook_v", zero_v)
    m.add_hook("blocks.0.hook_attn_out", grab)
    try:
        m(tok, check=False)
    finally:
        m.reset_hooks()
    assert torch.equal(seen["blocks.0.hook_attn_out"], torch.zeros_like(seen["blocks.0.hook_attn_out"]))


def test_unhooked_and_hooked_passes_agree_bit_for_bit():
    """A read-only hook does not change the arithmetic (one code path)."""
    m = ic.circuits.ridge(2, 0.5, max_len=9, sparse=False)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((2, 4, 2))
    tok = torch.as_tensor(ic.tokens.encode(X, X @ np.array([0.3, -0.7]), rng.standard_normal((2, 2))))
    plain = m(tok, check=False)
    out, _ = m.run_with_cache(tok, check=False)
    assert torch.equal(plain, out)


def test_a_hook_replacing_the_pattern_is_used_instead_of_the_fused_kernel():
    """Without hooks the paper block's causal self-attention runs torch's fused kernel; a hook that
    returns a new pattern (or new scores) gets its pattern multiplied into v, as the definition says."""
    att = _attention("paper")
    h = torch.randn(2, 9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    T = h.shape[1]
    uniform = torch.ones(T, T, dtype=torch.float64).tril()
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(2, 3, T, T)
    hooks = HookManager()
    hooks.add("blocks.0.attn.hook_pattern", lambda x, name: uniform.clone())
    got = att(h, hooks, 0)
    v = torch.einsum("btd,hde->bthe", h, att.W_V)
    want = torch.einsum("bhqk,bkhe,hed->bqd", uniform, v, att.W_O)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12 * float(want.abs().max()))
    assert not torch.allclose(got, att(h, HookManager(), 0))
    # a read-only hook on the scores leaves the fused arithmetic bit for bit
    seen = HookManager()
    seen.add("blocks.0.attn.hook_attn_scores", lambda x, name: None)
    assert torch.equal(att(h, seen, 0), att(h, HookManager(), 0))
