"""Is a set of approximation constants admissible for a program? (Lemmas 4–6, 8 and hard attention.)

Every refusal here is decided from the error formulas of :class:`~iclconstruct.Constants`
— the same formulas the error budget reports — against the accuracy the compiled model
states for itself: :data:`~iclconstruct.lang.checks.BOUND_SLACK` relative error in float64
(``1e-3`` in float32, the slack of the model's own range checks).

Two kinds of checks:

* :func:`check_constants` (at compile time): the constants' value-independent errors —
  the product trick's relative error ``7/(6N²) + 2.5·ε·N`` (Lemma 4), the attention leak
  ``2·e^{−A}`` and the effect of ``ln_eps`` on LayerNorm's scale. (The paper bypass's
  range ``|z| < N_b − 9.5``, Lemma 5, depends on the values the MLP carries, not only on
  the declared bounds, and is not checked here.)
* :func:`check_layernorm_scale` (at run time, before every MLP): LayerNorm's scale is shared
  by the whole column, so every value an MLP writes carries the relative error
  ``‖h‖²/(4K²)`` of Lemma 6 (``‖h‖²/(4M²c²)`` in a div layer, Lemma 8), where ``‖h‖`` is
  the norm of the column *without* the anchor (or pair) rows. A large value anywhere in
  the column — even in a slot the op does not read — raises it; the check refuses the
  input when the formula exceeds the stated accuracy, naming the slot that dominates.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..errors import ICLConstructError, OutOfRangeError
from ..lang.checks import BOUND_SLACK, bound_advice
from ..lang.layout import Layout
from ..numerics.constants import Constants

__all__ = ["slack_for", "eps_for", "check_constants", "check_layernorm_scale"]


def slack_for(dtype: torch.dtype) -> float:
    """The relative accuracy the compiled model states for itself in ``dtype``."""
    return BOUND_SLACK if dtype == torch.float64 else 1e-3


def eps_for(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


def check_constants(c: Constants, layout: Layout, dtype: torch.dtype, D: int) -> None:
    """Refuse constants whose value-independent errors exceed the model's stated accuracy."""
    slack, eps = slack_for(dtype), eps_for(dtype)
    rel = c.product_error(1.0, 1.0, eps=eps)
    if rel > slack:
        if c.product_order == 4:  # Richardson: 0.35/N⁴ + 7.5·ε·N, least at N = (1.4/(7.5ε))^(1/5)
            formula, best = "Lemma 4 with Richardson extrapolation: 0.35/N⁴ + 7.5·ε·N", (1.4 / (7.5 * eps)) ** 0.2
        else:
            formula, best = "Lemma 4: 7/(6N²) + 2.5·ε·N", (7.0 / (7.5 * eps)) ** (1 / 3)
        raise ICLConstructError(
            f"Constants.product_scale = {c.product_scale:g} gives products a relative error of {rel:.3g} "
            f"({formula}), above the {slack:g} this {str(dtype).replace('torch.', '')} model "
            f"promises; use product_scale near {best:.3g} (the minimum of that error)")
    leak = 2.0 * math.exp(-c.attn_hardness)
    if leak > slack:
        raise ICLConstructError(
            f"Constants.attn_hardness = {c.attn_hardness:g} lets hard attention leak {leak:.3g} of its weight "
            f"(2·e^(-A)), above {slack:g}; use attn_hardness >= {math.log(2.0 / slack):.3g}")
    if not math.isfinite(c.ln_eps):
        raise ICLConstructError(f"Constants.ln_eps must be finite; got {c.ln_eps!r}")
    smallest = min(c.ln_anchor, c.div_scale * c.div_min)
    eff = c.ln_eps * D / (2.0 * smallest ** 2)
    if eff > slack:
        raise ICLConstructError(
            f"Constants.ln_eps = {c.ln_eps:g} changes LayerNorm's scale by {eff:.3g} relative (ln_eps·D/(2K²) with "
            f"D = {D} and K = min(ln_anchor, div_scale·div_min) = {smallest:g}), above {slack:g}; "
            f"lower ln_eps or raise ln_anchor / div_scale")


def check_layernorm_scale(h: torch.Tensor, layout: Layout, c: Constants, dtype: torch.dtype, layer: int,
                          divisor: Optional[str], program=None) -> None:
    """Refuse a column whose norm makes LayerNorm's shared scale err beyond the stated accuracy.

    ``h`` is the residual stream entering the MLP (``(B, T, D)``). Non-div layer: relative
    error ``Constants.ln_error(‖h‖², eps=0) = ‖h‖²/(4K²)``; div layer:
    ``Constants.div_error(‖h‖², |c|, eps=0) = ‖h‖²/(4M²c²)``, with ``M·|c|`` read from the
    ``pair`` rows (``c`` as the layer's attention read it) and ``‖h‖`` the column's norm
    without the anchor and pair rows (Lemmas 6 and 8).
    """
    slack = slack_for(dtype)
    skip = layout.rows("anchor") + layout.rows("pair")
    hh = h if h.dtype == torch.float64 else h.double()
    norm_sq = torch.linalg.vector_norm(hh, dim=-1) ** 2 - (hh[..., skip] ** 2).sum(-1)  # (B, T), no (B, T, D) copy
    if divisor is None:
        rel = norm_sq / (4.0 * c.ln_anchor ** 2)
        what = f"Constants.ln_anchor = {c.ln_anchor:g}"
    else:
        # the pair rows hold ±M·|c| with c read at the layer's input (the divisor slot itself
        # may have been rewritten by this layer's attention)
        mc = layout.view(hh, "pair")[..., 0].abs()
        rel = norm_sq / (4.0 * mc ** 2)
        what = f"Constants.div_scale = {c.div_scale:g}"
    worst = float(rel.max()) if rel.numel() else 0.0
    if not worst > slack:
        return
    b, t = (int(v) for v in torch.nonzero(rel == rel.max())[0])
    col = hh[b, t] ** 2
    # freed slots too: their rows keep their last values until reused (a live slot wins a tie on shared rows)
    names = [s for s in layout.slots() if s.name not in ("anchor", "pair", "bal", "one", "pos", "is_y")]
    top = max(names, key=lambda s: (float(layout.view(col, s.name).sum()), layout.is_live(s.name)))
    advice = bound_advice(program, top.name) if program is not None else None
    raise OutOfRangeError(
        f"layer {layer}: LayerNorm's scale is shared by the whole column, and column {t} (batch {b}) has "
        f"‖h‖² = {float(norm_sq[b, t]):.4g} (mostly slot {top.name!r}): every value this MLP writes would be off by "
        f"{worst:.3g} relative (Lemma {'8' if divisor else '6'}), above the {slack:g} the model promises; "
        + (f"{advice} (smaller values in the column), or raise {what}" if advice else
           f"keep the values in the column smaller (e.g. smaller inputs or a smaller bound on slot {top.name!r}) "
           f"or raise {what}"))
