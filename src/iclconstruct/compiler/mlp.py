"""MLP units for ``mul`` and ``aff`` (Lemmas 4 and 5) and the builder of one MLP sublayer.

A *unit* is one hidden neuron ``gain·GeLU(w·h + b)`` added to one output row, with ``w``
an affine function of the un-normalised column ``h``. :func:`product_units` (Lemma 4) and
:func:`bypass_units` (Lemma 5) return the units of one scalar product or one affine term;
:class:`MLPBuilder` places them on slot entries and folds in the inverse of the LayerNorm
in front of the MLP (Lemma 6, or the division of Lemma 8).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from ..lang.layout import Layout
from .layernorm import balance, fold_layernorm

__all__ = ["Unit", "MLPWeights", "MLPBuilder", "product_units", "bypass_units", "PRODUCT_GAIN"]

#: √(π/2): turns the quadratic term of GeLU into a product (Lemma 4)
PRODUCT_GAIN = math.sqrt(math.pi / 2.0)


@dataclass
class Unit:
    """One hidden neuron: ``gain · GeLU(w·h + b)`` added to its output row."""

    w: np.ndarray
    b: float
    gain: float
    label: str
    #: fold the LayerNorm's mean into the weights (their sum moved onto ``one``) even in the paper
    #: block; for units whose input amplifies a read error common to all rows (the count from the
    #: position units: ``(max_len/2)·pos₀``), see :meth:`MLPBuilder.weights`
    cancel_mean: bool = False


@dataclass
class MLPWeights:
    """``W_in (D, m)``, ``b_in (m,)``, ``W_out (m, D)``, ``b_out (D,)`` and a label per unit."""

    W_in: np.ndarray
    b_in: np.ndarray
    W_out: np.ndarray
    b_out: np.ndarray
    labels: List[str]


def product_units(x: np.ndarray, y: np.ndarray, s_x: float, s_y: float, coef: float, N: float,
                  label: str, order: int = 2) -> List[Unit]:
    """Lemma 4: ``coef·x·y`` from three GeLU units, with ``x = x·h``, ``y = y·h`` bounded by ``s_x, s_y``.

    GeLU(z) = z/2 + z²/√(2π) − z⁴/(6√(2π)) + … has no cubic term, so with ``x' = x/s_x``,
    ``y' = y/s_y`` in ``[−1, 1]``::

        x·y ≈ s_x·s_y·√(π/2)·N²·[GeLU((x' + y')/N) − GeLU(x'/N) − GeLU(y'/N)]

    with error ``≤ s_x·s_y·(7/(6N²) + 2.5·ε·N)`` (``Constants.product_error``), ``N`` =
    ``Constants.product_scale``. ``order=4`` (``Constants.product_order``): Richardson
    extrapolation ``(4·P_{2N} − P_N)/3`` over two scales (six units) cancels the ``N⁻²``
    term, leaving truncation ``≤ 0.35·s_x·s_y/N⁴``
    (:func:`iclconstruct.numerics.certificate.product_truncation`).
    """
    if order == 4:
        return (product_units(x, y, s_x, s_y, coef * 4.0 / 3.0, 2.0 * N, label + " [2N]")
                + product_units(x, y, s_x, s_y, -coef / 3.0, N, label + " [N]"))
    a = x / (s_x * N)
    b = y / (s_y * N)
    g = coef * s_x * s_y * PRODUCT_GAIN * N * N
    return [Unit(a + b, 0.0, g, label + " (x+y)"), Unit(a, 0.0, -g, label + " (x)"), Unit(b, 0.0, -g, label + " (y)")]


def bypass_units(z: np.ndarray, beta: float, bypass_scale: Optional[float], label: str) -> Tuple[List[Unit], float]:
    """Lemma 5: the affine term ``z·h + beta`` through GeLU units; returns ``(units, output bias)``.

    Default (``bypass_scale=None``): the exact pair ``GeLU(s) − GeLU(−s) = s``. With
    ``bypass_scale = N_b``: the paper's single unit ``GeLU(s + N_b) − N_b``, error
    ``(s + N_b)·Φ(−(s + N_b))``.
    """
    if bypass_scale is None:
        return [Unit(z, beta, 1.0, label + " (+)"), Unit(-z, -beta, -1.0, label + " (-)")], 0.0
    return [Unit(z, beta + bypass_scale, 1.0, label + " (bypass)")], -bypass_scale


class MLPBuilder:
    """Hidden units of one MLP sublayer, placed on slot entries.

    Args:
        unscale: the factor that undoes the LayerNorm in front of the MLP — ``K·√(2/D)``
            (Lemma 6) in an ordinary layer, ``M·√(2/D)`` in a div layer (Lemma 8), where
            the MLP then reads ``h/|c|``.
        divide: ``True`` in a div layer (the constant row is then not exactly 1 and is not
            folded into the biases).
        pre_ln: the GPT-2-style block: ordinary layers fold the LayerNorm with
            :func:`~iclconstruct.compiler.layernorm.fold_layernorm`; div layers move each unit's
            coefficient sum onto an anchor row (exactly 0 there), which cancels the mean too.
    """

    def __init__(self, layout: Layout, width: int, unscale: float, bypass_scale: Optional[float] = None,
                 divide: bool = False, pre_ln: bool = False):
        self.pre_ln = pre_ln
        self.lay = layout
        self.D = width
        self.unscale = unscale
        self.bypass_scale = bypass_scale
        self.divide = divide
        self.units: List[Tuple[Unit, int]] = []  # (unit, output row)
        self.b_out = np.zeros(width)

    def add(self, dst: str, i: int, units: List[Unit], out_bias: float = 0.0, cancel_mean: bool = False) -> None:
        """Add ``units`` (and ``out_bias``) to entry ``i`` of slot ``dst`` (``cancel_mean``: see :class:`Unit`)."""
        r = self.lay.row(dst, i)
        if cancel_mean:
            for u in units:
                u.cancel_mean = True
        self.units += [(u, r) for u in units]
        self.b_out[r] += out_bias

    def linear(self, dst: str, i: int, z: np.ndarray, label: str, cancel_mean: bool = False) -> None:
        """Add ``z·h`` to entry ``i`` of ``dst`` (Lemma 5)."""
        units, out_bias = bypass_units(z, 0.0, self.bypass_scale, label)
        self.add(dst, i, units, out_bias, cancel_mean=cancel_mean)

    def constant(self, dst: str, i: int, value: float) -> None:
        """Add the constant ``value`` to entry ``i`` of ``dst`` (the output bias: exact)."""
        self.b_out[self.lay.row(dst, i)] += value

    def __len__(self) -> int:
        return len(self.units)

    def weights(self, d_mlp: int) -> MLPWeights:
        """Weights acting on ``LayerNorm(h)``, padded to ``d_mlp`` units."""
        m = len(self.units)
        if m > d_mlp:
            raise ValueError("d_mlp smaller than the number of units")
        one = self.lay.row("one")
        W_in, b_in, W_out = np.zeros((self.D, d_mlp)), np.zeros(d_mlp), np.zeros((d_mlp, self.D))
        for k, (u, r) in enumerate(self.units):
            w, b = np.array(u.w, dtype=np.float64), u.b
            if self.pre_ln and not self.divide:
                wf, bf = fold_layernorm(w[:, None], self.lay, self.unscale)
                W_in[:, k], b_in[k], W_out[k, r] = wf[:, 0], b + bf[0], u.gain
                continue
            if self.pre_ln:  # div layer: the anchors are exactly 0, so this cancels the mean
                w[self.lay.row("anchor")] -= w.sum()
            elif not self.divide and u.cancel_mean:
                # LayerNorm's mean is 0 only up to its round-off (≈ ε·K), an error common to every
                # row; with the coefficient sum moved onto the constant row (exactly 1) and back
                # through the bias, w sums to 0 and that error cancels (as fold_layernorm does)
                colsum = math.fsum(w)
                w[one] -= colsum
                b = b + colsum
            elif not self.divide:  # the constant row is exactly 1: use the bias
                b = b + w[one]
                w[one] = 0.0
            W_in[:, k] = self.unscale * w
            b_in[k] = b
            W_out[k, r] = u.gain
        labels = [u.label for u, _ in self.units] + [""] * (d_mlp - m)
        return MLPWeights(W_in, b_in, balance(W_out, self.lay), balance(self.b_out[None], self.lay)[0], labels)
