"""Export to TransformerLens: a stock ``HookedTransformer`` (``normalization_type="LN"``).

The circuit maps onto ``HookedTransformerConfig`` one to one: ``d_model`` = the residual
width, ``n_heads``/``d_head``/``d_mlp`` as compiled, ``act_fn`` = ``Constants.activation``,
``eps`` = ``Constants.ln_eps``, ``n_layers`` = the depth for ``n_examples`` examples (weight-
tied loops unrolled), ``d_vocab = d_vocab_out = d + 1`` (the token channels). Weights load
through ``load_state_dict`` in TransformerLens' own layout (``W_Q[n_heads, d_model, d_head]``
…); the LayerNorms keep unit weights and zero biases except the final one, which carries
the readout (``unembed`` channel 0 is the prediction).

Continuous tokens enter the residual stream directly: ``model(resid, start_at_layer=0)``
with ``resid = tokens @ model.W_E + model.W_pos[:T]`` (:func:`iclconstruct.export.tokens_to_inputs`).
"""
from __future__ import annotations

import torch

from ..errors import ExportError
from ._deps import require
from .unroll import unroll

__all__ = ["to_transformer_lens"]


def to_transformer_lens(model, n_examples: int):
    """``model`` (compiled with ``block='pre_ln'``) as a ``transformer_lens.HookedTransformer``.

    Needs ``transformer-lens<4`` (``pip install 'iclconstruct[tl]'``); TransformerLens 4 removed
    ``HookedTransformer``. The result runs contexts of exactly ``n_examples`` examples
    (``2n`` tokens, or ``2n+1`` with a query); ``run_with_cache`` names its activations as the
    native model does (``blocks.{l}.hook_resid_post`` …, ``l`` the layer as run).
    """
    u = unroll(model, n_examples)  # refuses a paper-block model before anything is imported
    tl = require("transformer_lens")
    try:
        HookedTransformer, HookedTransformerConfig = tl.HookedTransformer, tl.HookedTransformerConfig
    except (ImportError, AttributeError) as exc:
        raise ExportError(
            f"transformer_lens {getattr(tl, '__version__', '?')} has no HookedTransformer (TransformerLens 4 removed it); "
            f"install a 3.x release: pip install 'iclconstruct[tl]' (transformer-lens<4), or export with "
            f"model.to_hf(n_examples) and wrap that"
        ) from exc
    cfg = HookedTransformerConfig(
        n_layers=len(u.layers), d_model=u.d_model, n_ctx=u.W_pos.shape[0], d_head=u.d_head, n_heads=u.n_heads,
        d_mlp=u.d_mlp, d_vocab=u.W_E.shape[0], d_vocab_out=u.W_U.shape[1], act_fn=u.activation,
        normalization_type="LN", eps=u.eps, positional_embedding_type="standard", dtype=u.dtype,
        default_prepend_bos=False, init_weights=False, model_name=f"iclconstruct:{u.meta['program']}", device="cpu",
    )
    tlm = HookedTransformer(cfg)
    sd = tlm.state_dict()
    ones, zeros = torch.ones(u.d_model, dtype=u.dtype), torch.zeros(u.d_model, dtype=u.dtype)
    new = {"embed.W_E": u.W_E, "pos_embed.W_pos": u.W_pos, "ln_final.w": u.ln_final_w, "ln_final.b": u.ln_final_b,
           "unembed.W_U": u.W_U, "unembed.b_U": torch.zeros(u.W_U.shape[1], dtype=u.dtype)}
    for l, w in enumerate(u.layers):
        for k, v in w.items():
            sub = "mlp" if k in ("W_in", "b_in", "W_out", "b_out") else "attn"
            new[f"blocks.{l}.{sub}.{k}"] = v
        for ln in ("ln1", "ln2"):
            new[f"blocks.{l}.{ln}.w"], new[f"blocks.{l}.{ln}.b"] = ones, zeros
    missing = [k for k in new if k not in sd]
    if missing:  # pragma: no cover - a TransformerLens layout this exporter does not know
        raise ExportError(f"this transformer_lens version names its weights differently (no {missing[:3]}); "
                          f"install the version iclconstruct[tl] pins")
    for k, v in new.items():
        sd[k] = v.to(sd[k].dtype).reshape(sd[k].shape)
    tlm.load_state_dict(sd, strict=True)
    tlm.eval()
    tlm.iclconstruct_meta = dict(u.meta, library="transformer_lens")
    return tlm
