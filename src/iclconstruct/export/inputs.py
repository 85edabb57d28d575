"""Feed examples to an exported model exactly as :meth:`ConstructedTransformer.predict` does.

Stock models take no continuous tokens, so the token matrix ``(B, T, d+1)`` of
:func:`iclconstruct.tokens.encode` (Eq. 12) is embedded by hand with the model's own weights:

* TransformerLens: ``resid = tokens @ model.W_E + model.W_pos[:T]``, run as
  ``model(resid, start_at_layer=0)`` (``run_with_cache`` takes the same arguments);
* Hugging Face: ``inputs_embeds = tokens @ model.transformer.wte.weight``, run as
  ``model(inputs_embeds=...)`` (GPT-2 adds ``wpe`` itself).

The prediction is logits channel 0 at the x̃ columns.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from ..errors import ExportError, OutOfRangeError, ShapeError
from ..tokens import encode

__all__ = ["tokens_to_inputs", "readout", "predict", "export_meta"]


def export_meta(exported) -> Dict:
    """What the exporter recorded (``n_examples``, ``d``, ``readout_columns`` …, ``library``)."""
    meta = getattr(exported, "iclconstruct_meta", None)
    if meta is None:
        cfg = getattr(exported, "config", None)
        meta = getattr(cfg, "iclconstruct", None)
        if meta is not None:
            meta = dict(meta, library="transformers")
    if meta is None:
        raise ExportError(
            f"{type(exported).__name__} was not made by iclconstruct's exporters; pass the result of "
            f"model.to_transformer_lens(n_examples) or model.to_hf(n_examples) (or its from_pretrained reload)"
        )
    return meta


def _dtype(exported) -> torch.dtype:
    return next(exported.parameters()).dtype


def _tokens(exported, tokens) -> torch.Tensor:
    meta = export_meta(exported)
    t = torch.as_tensor(np.asarray(tokens)) if not isinstance(tokens, torch.Tensor) else tokens
    if t.dim() == 2:
        t = t.unsqueeze(0)
    d, n = meta["d"], meta["n_examples"]
    if t.dim() != 3 or t.shape[-1] != d + 1:
        raise ShapeError(f"tokens must be (B, T, d+1) = (B, T, {d + 1}); got shape {tuple(t.shape)}")
    if t.shape[1] not in (2 * n, 2 * n + 1):
        raise ExportError(
            f"this export runs exactly n_examples={n} examples (T = {2 * n} or {2 * n + 1} tokens) because its "
            f"weight-tied loops are unrolled; got T = {t.shape[1]}. Export again with model.to_...(n_examples={t.shape[1] // 2})"
        )
    t = t.to(_dtype(exported))
    if not torch.isfinite(t).all():
        from ..errors import NonFiniteError

        raise NonFiniteError("tokens contain NaN or infinity; pass finite inputs")
    for name, ch, bound in (("y", t[..., :1], meta["y_bound"]), ("x", t[..., 1:], meta["x_bound"])):
        if ch.numel() and float(ch.abs().max()) > bound:
            raise OutOfRangeError(
                f"|{name}| reaches {float(ch.abs().max()):.4g} > {bound:g}, the bound the circuit was built for "
                f"(exported models carry no run-time checks, so this would be a silently wrong answer); "
                f"rebuild the circuit with {name}_bound >= {float(ch.abs().max()):.4g}"
            )
    return t


def tokens_to_inputs(exported, tokens) -> torch.Tensor:
    """What the stock model takes for ``tokens`` ``(B, T, d+1)``.

    TransformerLens: the residual stream ``tokens @ W_E + W_pos[:T]`` (run with
    ``start_at_layer=0``); Hugging Face: ``inputs_embeds = tokens @ wte.weight``.
    """
    t = _tokens(exported, tokens)
    if export_meta(exported)["library"] == "transformer_lens":
        return t @ exported.W_E + exported.W_pos[: t.shape[1]]
    return t @ exported.transformer.wte.weight


def _logits(exported, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if export_meta(exported)["library"] == "transformer_lens":
            return exported(inputs, start_at_layer=0)
        return exported(inputs_embeds=inputs).logits


def readout(exported, tokens):
    """The readout at every x̃ column ``(B, ⌈T/2⌉)`` (every column for ``columns='all'`` programs),
    as the native model's ``forward``; numpy in, numpy out."""
    numpy_in = not isinstance(tokens, torch.Tensor)
    out = _logits(exported, tokens_to_inputs(exported, tokens))[..., 0]
    if export_meta(exported)["readout_columns"] == "x":
        out = out[:, 0::2]
    return out.numpy() if numpy_in else out


def predict(exported, X, y, x_query):
    """Prediction for ``x_query`` after the ``n`` examples, as :meth:`ConstructedTransformer.predict`.

    ``X`` ``(n, d)`` or ``(B, n, d)``, ``y`` ``(n,)`` or ``(B, n)``, ``x_query`` ``(d,)`` or
    ``(B, d)``; returns shape ``()`` or ``(B,)``; numpy in, numpy out; torch in, torch out.
    """
    numpy_in = not isinstance(X, torch.Tensor)
    Xa = np.asarray(X, dtype=np.float64) if numpy_in else X
    if Xa.ndim not in (2, 3):
        raise ShapeError(f"X must be (n, d) or (B, n, d); got shape {tuple(Xa.shape)}")
    tok = encode(Xa, y, x_query, dtype=None if numpy_in else _dtype(exported))
    out = readout(exported, tok)[:, -1]
    return out[0] if Xa.ndim == 2 else out
