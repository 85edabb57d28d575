"""A compiled GPT-2-style model as a plain stack of layers: the common input of the exporters.

Stock libraries have no weight-tied loops, so a loop body that runs once per example is
copied ``n_examples`` times (``ConstructedTransformer.unrolled``). Everything here is
read off the native model's parameters; nothing is rebuilt.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from ..errors import ExportError
from ..lang.validate import as_n_examples

__all__ = ["Unrolled", "unroll"]


@dataclass
class Unrolled:
    """Per-layer weights in TransformerLens' layout (``W_Q[n_heads, d_model, d_head]`` …).

    Attributes:
        layers: one dict per layer as run, keys ``W_Q W_K W_V W_O b_Q b_K b_V b_O W_in b_in W_out b_out``.
        W_E: ``(d+1, D)`` token channels → residual. W_pos: ``(n_ctx, D)`` position embedding.
        ln_final_w, ln_final_b: the final LayerNorm's affine (it carries the readout's scale).
        W_U: ``(D, d+1)`` unembedding; channel 0 is the readout (the label channel).
        meta: facts the exported model records (``n_examples``, ``readout_columns`` …).
    """

    layers: List[Dict[str, torch.Tensor]]
    W_E: torch.Tensor
    W_pos: torch.Tensor
    ln_final_w: torch.Tensor
    ln_final_b: torch.Tensor
    W_U: torch.Tensor
    n_heads: int
    d_head: int
    d_mlp: int
    d_model: int
    eps: float
    activation: str
    dtype: torch.dtype
    meta: Dict = field(default_factory=dict)


def _check(model, n_examples) -> int:
    if getattr(model, "block_style", None) != "pre_ln":
        raise ExportError(
            f"only the GPT-2-style block exports to stock transformer libraries; this model has block "
            f"{getattr(model, 'block_style', None)!r}. Compile it with ic.compile(program, block='pre_ln') "
            f"(circuits: ic.circuits.ridge(..., block='pre_ln'))"
        )
    return as_n_examples(n_examples, model.max_len, min=1, error=ExportError,
                         advice="lower n_examples or compile with a larger max_len")


def unroll(model, n_examples: int, n_heads: Optional[int] = None) -> Unrolled:
    """Unroll ``model`` (``block='pre_ln'``) for contexts of ``n_examples`` examples (``2n`` or ``2n+1`` tokens).

    ``n_heads`` pads every layer with zero heads (a zero head attends uniformly to zero
    values: it adds nothing), for targets that need ``n_heads·d_head = d_model``.
    """
    n = _check(model, n_examples)
    H = model.n_heads if n_heads is None else int(n_heads)
    D, dh, dt = model.d_model, model.d_head, model.dtype
    layers = []
    for bi in model.unrolled(2 * n + 1):
        blk = model.blocks[bi]
        a, m = blk.attn, blk.mlp
        pad = lambda t: torch.cat([t, torch.zeros((H - t.shape[0],) + tuple(t.shape[1:]), dtype=dt)]) if H > t.shape[0] else t
        layers.append({
            "W_Q": pad(a.W_Q), "W_K": pad(a.W_K), "W_V": pad(a.W_V), "W_O": pad(a.W_O),
            "b_Q": pad(a.b_Q), "b_K": pad(a.b_K), "b_V": torch.zeros(H, dh, dtype=dt), "b_O": a.b_O.detach(),
            "W_in": m.W_in.detach(), "b_in": m.b_in.detach(), "W_out": m.W_out.detach(), "b_out": m.b_out.detach(),
        })
        layers[-1] = {k: v.detach().clone() for k, v in layers[-1].items()}
    lay = model.layout
    one, r = lay.row("one"), lay.row(model.program.readout_slot)
    # final LayerNorm + unembedding read the readout row (Lemma 6 again): with zero-sum
    # unembedding weights e_r − e_one the mean cancels, the ±1 comes back through the bias
    scale = model.constants.pre_ln_anchor * math.sqrt(2.0 / D)
    ln_w = torch.full((D,), scale, dtype=dt)
    ln_b = torch.zeros(D, dtype=dt)
    ln_b[one] = -1.0
    W_U = torch.zeros(D, model.d + 1, dtype=dt)
    W_U[r, 0] += 1.0
    W_U[one, 0] -= 1.0
    meta = {
        "format": "iclconstruct-export", "n_examples": n, "d": model.d, "readout_columns": model.program.readout_columns,
        "readout_slot": model.program.readout_slot, "program": model.program.name, "block": model.block_style,
        "x_bound": float(lay["x"].bound), "y_bound": float(lay["y"].bound),
    }
    return Unrolled(layers=layers, W_E=model.W_E.detach().clone(), W_pos=model.W_pos[: 2 * n + 1].detach().clone(),
                    ln_final_w=ln_w, ln_final_b=ln_b, W_U=W_U, n_heads=H, d_head=dh, d_mlp=model.d_mlp, d_model=D,
                    eps=float(model.constants.ln_eps), activation=model.constants.activation, dtype=dt, meta=meta)
