"""Activation patching on a constructed circuit: the prediction moves exactly where the algebra says.

The ridge circuit's query column copies ``w`` from the last ỹ column in its last layer and
reads out ``x_qᵀw``. Patching the ``w`` slot there with another task's ``w`` must therefore
give ``x_qᵀw_B`` — up to the error of that last product (``Constants.product_error``).
Done three ways: the native model's hooks, TransformerLens' ``run_with_hooks`` and nnsight
tracing the exported Hugging Face model (the last two skip without their library).
"""
import numpy as np
import pytest

import iclconstruct as ic

D, N, LAM = 3, 6, 0.5


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    tasks = []
    for _ in range(2):
        X = rng.standard_normal((N, D))
        tasks.append((X, X @ rng.standard_normal(D)))
    xq = rng.standard_normal(D)
    model = ic.circuits.ridge(D, LAM, block="pre_ln")
    (XA, yA), (XB, yB) = tasks
    tokA, tokB = ic.tokens.encode(XA, yA, xq), ic.tokens.encode(XB, yB, xq)
    T = tokA.shape[1]
    L = len(model.unrolled(T)) - 1  # the readout layer: mov(w[t-1] -> wq), mul(wq·x -> pred)
    lay = model.layout
    err = D * model.constants.product_error(lay["wq"].bound, lay["x"].bound)
    return model, tokA, tokB, xq, T, L, lay.rows("w"), err, (XB, yB)


def expect(yhat, xq, wB, err):
    assert abs(yhat - xq @ wB) <= 1e-9 * (1 + abs(xq @ wB)) + err, (yhat, xq @ wB, err)


def test_native_hooks(setup):
    model, tokA, tokB, xq, T, L, w_rows, err, (XB, yB) = setup
    name = f"blocks.{L}.hook_resid_pre"
    _, cacheB = model.run_with_cache(tokB)
    wB = cacheB[name][0, T - 2, w_rows]

    def patch(h, _name):
        h = h.clone()
        h[:, T - 2, w_rows] = wB
        return h

    before = model(tokA)[0, -1]
    model.add_hook(name, patch)
    try:
        after = model(tokA)[0, -1]
    finally:
        model.reset_hooks()
    expect(after, xq, wB.numpy(), err)
    assert abs(after - before) > 1e-3  # it really moved
    assert abs(after - xq @ ic.reference.ridge(XB, yB, LAM)) < 1e-6  # to task B's ridge prediction


def test_transformer_lens_run_with_hooks(setup):
    pytest.importorskip("transformer_lens")
    model, tokA, tokB, xq, T, L, w_rows, err, _ = setup
    tl = model.to_transformer_lens(N)
    name = f"blocks.{L}.hook_resid_pre"
    _, cacheB = tl.run_with_cache(ic.export.tokens_to_inputs(tl, tokB), start_at_layer=0)
    wB = cacheB[name][0, T - 2, w_rows]

    def patch(h, hook):
        h[:, T - 2, w_rows] = wB
        return h

    out = tl.run_with_hooks(ic.export.tokens_to_inputs(tl, tokA), start_at_layer=0, fwd_hooks=[(name, patch)])
    expect(float(out[0, -1, 0]), xq, wB.numpy(), err)


def test_nnsight_traces_the_hf_export(setup):
    nnsight = pytest.importorskip("nnsight")
    pytest.importorskip("transformers")
    model, tokA, tokB, xq, T, L, w_rows, err, _ = setup
    hf = model.to_hf(N)
    traced = nnsight.NNsight(hf)
    with traced.trace(inputs_embeds=ic.export.tokens_to_inputs(hf, tokB)):
        hB = traced.transformer.h[L - 1].output.save()  # = the input of the readout layer
    wB = hB[0, T - 2, w_rows].detach()
    with traced.trace(inputs_embeds=ic.export.tokens_to_inputs(hf, tokA)):
        traced.transformer.h[L - 1].output[:, T - 2, w_rows] = wB
        logits = traced.lm_head.output.save()
    expect(float(logits[0, -1, 0]), xq, wB.numpy(), err)
