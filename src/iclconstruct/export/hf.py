"""Export to Hugging Face ``transformers``: a stock ``GPT2LMHeadModel``.

GPT-2's block is ``ln_1 → attn → + → ln_2 → mlp → +``, the compiler's ``block='pre_ln'``.
The config says everything: ``n_embd`` = residual width (``compile`` pads it to a
multiple of ``d_head`` so that ``n_head·head_dim = n_embd``; missing heads are zero heads),
``n_inner`` = MLP width, ``n_layer`` = the depth for ``n_examples`` examples (loops unrolled),
``activation_function`` = ``Constants.activation``, ``layer_norm_epsilon`` = ``Constants.ln_eps``,
``vocab_size = d + 1``. The circuit's position embedding (position units, the constant row,
the column-type flag, the LayerNorm anchors, the ``bal`` row) is exactly what ``wpe`` adds;
``wte`` holds the token-channel embedding, so ``inputs_embeds = tokens @ wte.weight``. The
readout is ``lm_head`` channel 0, behind ``ln_f`` (whose affine carries its scale).
"""
from __future__ import annotations

import torch

from ._deps import require
from .unroll import unroll

__all__ = ["to_hf"]


def to_hf(model, n_examples: int):
    """``model`` (compiled with ``block='pre_ln'``) as a ``transformers.GPT2LMHeadModel`` (eval mode).

    Run it with ``inputs_embeds`` (:func:`iclconstruct.export.tokens_to_inputs`); logits
    channel 0 is the readout. ``save_pretrained`` / ``from_pretrained`` round-trip it bit for
    bit; the config carries ``iclconstruct`` facts (``n_examples``, readout columns).
    """
    D, dh = model.d_model, model.d_head
    u = unroll(model, n_examples, n_heads=D // dh)  # refuses a paper-block model before anything is imported
    tr = require("transformers")
    if u.n_heads * dh != D or u.n_heads < model.n_heads:
        from ..errors import ExportError

        raise ExportError(
            f"GPT-2 needs n_embd = n_head·head_dim, but width {D} is not a multiple of d_head {dh} with at least "
            f"{model.n_heads} heads; compile without width= (block='pre_ln' pads it) or with width a multiple of {dh}"
        )
    cfg = tr.GPT2Config(
        vocab_size=u.W_E.shape[0], n_positions=u.W_pos.shape[0], n_embd=D, n_layer=len(u.layers), n_head=u.n_heads,
        n_inner=u.d_mlp, activation_function=u.activation, layer_norm_epsilon=u.eps, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, scale_attn_weights=True, tie_word_embeddings=False, use_cache=False,
        iclconstruct=dict(u.meta, library="transformers"),
    )
    hf = tr.GPT2LMHeadModel(cfg).to(u.dtype)
    sd = hf.state_dict()
    cat_heads = lambda W: W.permute(1, 0, 2).reshape(D, -1)  # [H, D, dh] -> [D, H·dh]
    new = {"transformer.wte.weight": u.W_E, "transformer.wpe.weight": u.W_pos,
           "transformer.ln_f.weight": u.ln_final_w, "transformer.ln_f.bias": u.ln_final_b,
           "lm_head.weight": u.W_U.T}
    ones, zeros = torch.ones(D, dtype=u.dtype), torch.zeros(D, dtype=u.dtype)
    for l, w in enumerate(u.layers):
        p = f"transformer.h.{l}."
        new[p + "attn.c_attn.weight"] = torch.cat([cat_heads(w["W_Q"]), cat_heads(w["W_K"]), cat_heads(w["W_V"])], 1)
        new[p + "attn.c_attn.bias"] = torch.cat([w["b_Q"].reshape(-1), w["b_K"].reshape(-1), w["b_V"].reshape(-1)])
        new[p + "attn.c_proj.weight"] = w["W_O"].reshape(-1, D)  # [H·dh, D]
        new[p + "attn.c_proj.bias"] = w["b_O"]
        new[p + "mlp.c_fc.weight"], new[p + "mlp.c_fc.bias"] = w["W_in"], w["b_in"]
        new[p + "mlp.c_proj.weight"], new[p + "mlp.c_proj.bias"] = w["W_out"], w["b_out"]
        for ln in ("ln_1", "ln_2"):
            new[p + ln + ".weight"], new[p + ln + ".bias"] = ones, zeros
    for k, v in new.items():
        sd[k] = v.to(u.dtype).reshape(sd[k].shape).clone()
    hf.load_state_dict(sd, strict=True)
    hf.eval()
    return hf
