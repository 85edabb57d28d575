"""Exported (TransformerLens, Hugging Face) vs native residual streams and readouts, float64, pre_ln.

Prints ``max |export − native| / (1 + |native|)`` over every prefix and every user row of
every layer's residual stream (TransformerLens: ``hook_resid_pre/mid/post``, and separately ``hook_attn_out``/``hook_mlp_out``; HF:
block inputs and outputs), for the circuits over a grid and for random programs from
``iclconstruct.testing.programs``. ``python bench/export_agreement.py [--programs N]``.
"""
import argparse
import warnings

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iclconstruct as ic
from iclconstruct.testing import programs, tokens_for

RESID = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")
OUTS = ("hook_attn_out", "hook_mlp_out")


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float((np.abs(a - b) / (1.0 + np.abs(b))).max()) if a.size else 0.0


def agreement(model, tok):
    """(TL readout, HF readout, TL residual, HF residual, TL sublayer outputs): relative differences to native."""
    n = tok.shape[1] // 2
    native, nc = model.run_with_cache(tok)
    user = model.layout.user_rows()
    tlm, hf = model.to_transformer_lens(n), model.to_hf(n)
    _, tc = tlm.run_with_cache(ic.export.tokens_to_inputs(tlm, tok), start_at_layer=0)
    def tl_max(kinds):
        return max(rel(tc[k][..., user], nc[k][..., user]) for k in tc.keys()
                   if k.startswith("blocks.") and k.split(".")[-1] in kinds)

    tl_res, tl_out = tl_max(RESID), tl_max(OUTS)
    posts = []
    hs = [b.register_forward_hook(lambda m, a, o: posts.append(o[0] if isinstance(o, tuple) else o)) for b in hf.transformer.h]
    try:
        with torch.no_grad():
            out = hf(inputs_embeds=ic.export.tokens_to_inputs(hf, torch.as_tensor(tok)), output_hidden_states=True)
    finally:
        for h in hs:
            h.remove()
    hf_res = max(max(rel(out.hidden_states[l][..., user], nc[f"blocks.{l}.hook_resid_pre"][..., user]),
                     rel(posts[l][..., user], nc[f"blocks.{l}.hook_resid_post"][..., user])) for l in range(len(posts)))
    return rel(ic.export.readout(tlm, tok), native), rel(ic.export.readout(hf, tok), native), tl_res, hf_res, tl_out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--programs", type=int, default=100)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    print("| circuit | d | n | TL readout | HF readout | TL residual | HF residual | TL attn/mlp out | native vs "
          "reference |\n|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    R = ic.reference
    for name, d, make, ref in [
            ("sgd lr=0.02 lam=0.1", 8, lambda d: ic.circuits.sgd(d, 0.02, lam=0.1, block="pre_ln"),
             lambda X, y: R.sgd(X, y, 0.02, lam=0.1)),
            ("ridge lam=0.5", 3, lambda d: ic.circuits.ridge(d, 0.5, block="pre_ln"), lambda X, y: R.ridge(X, y, 0.5)),
            ("ridge lam=0.5", 8, lambda d: ic.circuits.ridge(d, 0.5, block="pre_ln"), lambda X, y: R.ridge(X, y, 0.5)),
            ("ridge lam=0.1", 8, lambda d: ic.circuits.ridge(d, 0.1, block="pre_ln"), lambda X, y: R.ridge(X, y, 0.1))]:
        n = 2 * d
        X = rng.standard_normal((n, d))
        y, xq = X @ rng.standard_normal(d), rng.standard_normal(d)
        model = make(d)
        tok = ic.tokens.encode(X, y, xq)
        exact = [ref(X[:k], y[:k]) @ (X[k] if k < n else xq) for k in range(n + 1)]
        r = agreement(model, tok) + (rel(model(tok)[0], exact),)
        print(f"| {name} | {d} | {n} | " + " | ".join(f"{v:.1e}" for v in r) + " |", flush=True)
    worst = [0.0] * 5

    @settings(max_examples=args.programs, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(programs(max_ops=8), st.data())
    def soak(prog, data):
        tok = data.draw(tokens_for(prog, max_n=4))
        if tok.shape[1] < 3:
            return
        r = agreement(ic.compile(prog, block="pre_ln"), tok)
        for i, v in enumerate(r):
            worst[i] = max(worst[i], v)

    soak()
    print(f"| {args.programs} random programs (worst) | ≤ 3 | ≤ 4 | " + " | ".join(f"{v:.1e}" for v in worst) + " | — |")


if __name__ == "__main__":
    main()
