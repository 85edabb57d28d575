"""Exported models (TransformerLens ``HookedTransformer``, Hugging Face ``GPT2LMHeadModel``) against the native one.

Both stock libraries run the same real-number function as the native model, so the
only differences are round-off: their LayerNorm and matmuls round differently from
ours, and the GeLU product trick (Lemma 4) amplifies a rounding of its pre-activation to
``≈ 7.5·ε·N·s_x·s_y`` (Richardson, ``N = 200``: the ``pre_ln`` default of
``Constants.for_dtype``). Every comparison — readout at every prefix, the residual stream
and the sublayer outputs of every layer, through each library's own hooks — is held to the
issue's ``1e-9·(1 + |ref|)``. Skipped when the library is not installed
(``pip install 'iclconstruct[tl,hf]'``).
"""
import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct import errors as E
from iclconstruct.testing import programs, tokens_for

def close(got, ref, what=""):
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    fin = np.isfinite(ref)
    assert np.array_equal(fin, np.isfinite(got)), what
    bad = np.abs(got - ref)[fin] > 1e-9 * (1 + np.abs(ref[fin]))
    assert not bad.any(), (what, float(np.abs(got - ref)[fin].max()))


def task(d, n, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, X @ rng.standard_normal(d), rng.standard_normal(d)


def circuits():
    d, n = 3, 5
    X, y, xq = task(d, n, 7)
    sq = (X * X).sum(1).max()
    sgd = ic.circuits.sgd(d, 0.4 / (2 * sq), lam=0.1, w0=np.full(d, 0.3), block="pre_ln")
    ridge = ic.circuits.ridge(d, 0.5, block="pre_ln", activation="gelu_new")
    gain = ic.circuits.ridge(d, 0.5, block="pre_ln", form="gain")  # the float32 default's program, here in float64
    return [("sgd", sgd, X, y, xq), ("ridge", ridge, X, y, xq), ("ridge_gain", gain, X, y, xq)]


CASES = circuits()
IDS = [c[0] for c in CASES]

# ------------------------------------------------------------------ TransformerLens


@pytest.fixture(scope="module")
def tl_lib():
    return pytest.importorskip("transformer_lens")


def tl_compare(model, tok):
    n = tok.shape[1] // 2
    tlm = model.to_transformer_lens(n)
    assert isinstance(tlm, pytest.importorskip("transformer_lens").HookedTransformer)
    native, ncache = model.run_with_cache(tok)
    close(ic.export.readout(tlm, tok), native, "readout")  # every prefix in one pass
    logits, tcache = tlm.run_with_cache(ic.export.tokens_to_inputs(tlm, tok), start_at_layer=0)
    assert logits.shape == (tok.shape[0], tok.shape[1], model.d + 1)
    L = model.depth(n) if model.layers_per_example() else model.depth()
    assert tlm.cfg.n_layers == len(model.unrolled(tok.shape[1])) and L <= tlm.cfg.n_layers
    for l in range(tlm.cfg.n_layers):
        for name in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out"):
            key = f"blocks.{l}.{name}"
            user = model.layout.user_rows()  # the slots the program defines
            close(tcache[key][..., user], ncache[key][..., user], key)
        for name in ("ln1.hook_normalized", "ln2.hook_normalized", "attn.hook_pattern", "ln1.hook_scale"):
            key = f"blocks.{l}.{name}"
            close(tcache[key], ncache[key], key)
    return tlm


@pytest.mark.parametrize("name, model, X, y, xq", CASES, ids=IDS)
def test_transformer_lens_matches_native(tl_lib, name, model, X, y, xq):
    tok = ic.tokens.encode(X, y, xq)
    tlm = tl_compare(model, tok)
    close(ic.export.predict(tlm, X, y, xq), model.predict(X, y, xq), "predict")
    # the weights sit in TransformerLens' own layout
    assert tlm.blocks[0].attn.W_Q.shape == (model.n_heads, model.d_model, model.d_head)
    assert tlm.cfg.normalization_type == "LN" and tlm.cfg.act_fn == model.constants.activation


@settings(max_examples=4, deadline=None)
@given(programs(max_ops=8), st.data())
def test_transformer_lens_random_program(tl_lib, prog, data):
    tok = data.draw(tokens_for(prog, max_n=4))
    assume(tok.shape[1] >= 3)
    model = ic.compile(prog, block="pre_ln")
    tl_compare(model, tok)


# ------------------------------------------------------------------ Hugging Face


@pytest.fixture(scope="module")
def hf_lib():
    return pytest.importorskip("transformers")


def hf_compare(model, tok):
    n = tok.shape[1] // 2
    hf = model.to_hf(n)
    native, ncache = model.run_with_cache(tok)
    close(ic.export.readout(hf, tok), native, "readout")
    # residual stream through transformers' own mechanisms: hidden_states (the input of each
    # block) and forward hooks on the blocks (their outputs)
    posts = []
    handles = [blk.register_forward_hook(lambda mod, args, out: posts.append(out[0] if isinstance(out, tuple) else out))
               for blk in hf.transformer.h]
    try:
        with torch.no_grad():
            out = hf(inputs_embeds=ic.export.tokens_to_inputs(hf, torch.as_tensor(tok)), output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    user = model.layout.user_rows()
    assert len(out.hidden_states) == hf.config.n_layer + 1 and len(posts) == hf.config.n_layer
    for l in range(hf.config.n_layer):
        close(out.hidden_states[l][..., user], ncache[f"blocks.{l}.hook_resid_pre"][..., user], f"pre {l}")
        close(posts[l][..., user], ncache[f"blocks.{l}.hook_resid_post"][..., user], f"post {l}")
    return hf


@pytest.mark.parametrize("name, model, X, y, xq", CASES, ids=IDS)
def test_hf_matches_native(hf_lib, name, model, X, y, xq):
    hf = hf_compare(model, ic.tokens.encode(X, y, xq))
    close(ic.export.predict(hf, X, y, xq), model.predict(X, y, xq), "predict")
    cfg = hf.config
    assert cfg.n_embd == cfg.n_head * (cfg.n_embd // cfg.n_head) == model.d_model
    assert cfg.activation_function == model.constants.activation and cfg.vocab_size == model.d + 1


@settings(max_examples=4, deadline=None)
@given(programs(max_ops=8), st.data())
def test_hf_random_program(hf_lib, prog, data):
    tok = data.draw(tokens_for(prog, max_n=4))
    assume(tok.shape[1] >= 3)
    model = ic.compile(prog, block="pre_ln")
    hf_compare(model, tok)


def test_hf_save_pretrained_round_trip_is_bit_for_bit(hf_lib, tmp_path):
    name, model, X, y, xq = CASES[1]
    hf = model.to_hf(X.shape[0])
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    again = hf_lib.GPT2LMHeadModel.from_pretrained(tmp_path)
    assert next(again.parameters()).dtype == torch.float64
    tok = ic.tokens.encode(X, y, xq)
    a, b = ic.export.readout(hf, tok), ic.export.readout(again, tok)
    assert a.tobytes() == b.tobytes()
    assert ic.export.predict(again, X, y, xq).tobytes() == ic.export.predict(hf, X, y, xq).tobytes()


# ------------------------------------------------------------------ the predict API


def test_predict_shapes_and_refusals(hf_lib):
    name, model, X, y, xq = CASES[0]
    n = X.shape[0]
    hf = model.to_hf(n)
    assert np.shape(ic.export.predict(hf, X, y, xq)) == ()
    Xb, yb, xqb = np.stack([X, -X]), np.stack([y, -y]), np.stack([xq, xq])
    out = ic.export.predict(hf, Xb, yb, xqb)
    assert isinstance(out, np.ndarray) and out.shape == (2,)
    close(out, model.predict(Xb, yb, xqb), "batched")
    tout = ic.export.predict(hf, torch.as_tensor(Xb), torch.as_tensor(yb), torch.as_tensor(xqb))
    assert isinstance(tout, torch.Tensor) and tout.shape == (2,)
    with pytest.raises(E.ExportError, match="n_examples=5"):
        ic.export.predict(hf, X[:3], y[:3], xq)
    with pytest.raises(E.OutOfRangeError, match="x_bound"):
        ic.export.predict(hf, X * 100, y, xq)
    with pytest.raises(E.ShapeError, match="d\\+1"):
        ic.export.readout(hf, np.zeros((1, 11, 7)))
    with pytest.raises(E.ExportError, match="to_hf"):
        ic.export.predict(torch.nn.Linear(2, 2), X, y, xq)
