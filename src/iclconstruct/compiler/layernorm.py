"""LayerNorm in front of the MLP: bypassed (Lemma 6) or used to divide (Lemma 8).

Eq. 4 puts ``LayerNorm`` (full column, no affine parameters) in front of every MLP. The
compiler keeps it harmless with two system slots and one invariant:

* ``anchor`` holds ``(+K, −K)`` (:func:`layernorm_bypass`): the pair dominates the column's
  variance, so ``LayerNorm(h) ≈ h/σ`` with a known ``σ ≈ K·√(2/D)``;
* ``bal`` holds minus the sum of all other rows (:func:`balance`): every write is zero-sum,
  so the column mean is exactly 0 and LayerNorm subtracts nothing;
* in a div layer (:func:`division_setup`) the pair ``(+M·c, −M·c)`` replaces the anchors, so
  the MLP reads ``h/|c|``; the next layer's attention restores them (:func:`restore_anchors`).

The GPT-2-style block (``block="pre_ln"``) has a LayerNorm in front of attention as well.
There every weight that reads a LayerNorm output is folded with :func:`fold_layernorm`
(zero-sum columns plus a bias), the anchors are ``Constants.pre_ln_anchor``, and a div
layer's MLP restores the anchors itself (:func:`restore_anchors_pre_ln`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..lang.layout import Layout

__all__ = ["LayerNormBypass", "layernorm_bypass", "balance", "division_setup", "restore_anchors", "fold_layernorm",
           "restore_anchors_pre_ln"]


@dataclass(frozen=True)
class LayerNormBypass:
    """``anchors``: ``(2, D)`` map of the column onto the ``anchor`` slot; ``unscale``: ``K·√(2/D)``."""

    anchors: np.ndarray
    unscale: float


def layernorm_bypass(lay: Layout, K: float, width: int) -> LayerNormBypass:
    """Lemma 6: two rows ``(+K, −K)`` make LayerNorm a known scaling, undone in ``W_in``.

    With the column mean held at 0 (:func:`balance`) and ``anchor = (+K, −K)``,
    ``var(h) = (2K² + ‖h‖²)/D``, so ``LayerNorm(h) = h/σ`` with ``σ = K·√(2/D)·(1 + ‖h‖²/(4K²) + …)``;
    multiplying ``W_in`` by ``unscale = K·√(2/D)`` recovers ``h`` with relative error
    ``‖h‖²/(4K²)`` (``Constants.ln_error``). The anchors are written as ``±K`` times the
    constant row ``one`` — by the embedding, and again after every div layer.
    """
    m = np.zeros((2, width))
    m[0, lay.row("one")] = K
    m[1, lay.row("one")] = -K
    return LayerNormBypass(m, K * math.sqrt(2.0 / width))


def balance(W: np.ndarray, lay: Layout) -> np.ndarray:
    """Lemma 6's zero mean: write minus the sum of every output vector (last axis) into ``bal``.

    Every sublayer output and the embedding are balanced, so each column sums to 0 and
    LayerNorm's mean subtraction is exactly a no-op (no ``K``-sized cancellation in the MLP).

    The sum is exactly rounded (``math.fsum``): a vector holding the anchors ``±K`` next to
    small entries would lose the small ones in a plain floating-point sum.
    """
    W = np.array(W, dtype=np.float64)
    bal = lay.row("bal")
    W[..., bal] = 0.0
    flat = W.reshape(-1, W.shape[-1])
    # fsum over each vector's non-zero entries only: the same exactly rounded sum (the +0.0 just
    # written on bal makes an all-zero vector sum to +0.0 either way), without a pass over every zero
    r, c = np.nonzero(flat)
    vals = flat[r, c].tolist()
    starts = np.searchsorted(r, np.arange(len(flat) + 1)).tolist()
    sums = [math.fsum(vals[a:b]) for a, b in zip(starts[:-1], starts[1:])]
    W[..., bal] = -np.array(sums, dtype=np.float64).reshape(W.shape[:-1])
    return W


def division_setup(ab, lay: Layout, divisor: str, cleared: Sequence[str], M: float, pre_ln_anchor=None) -> float:
    """Lemma 8 set-up in the attention of a div layer; returns the MLP's ``unscale = M·√(2/D)``.

    The self head writes ``pair ← (+M·c, −M·c)`` from the divisor slot ``c``, silences the
    anchors and clears the slots in ``cleared`` (the destinations of overwriting ``div`` ops).
    The MLP then sees ``LayerNorm(h) = h/σ`` with ``σ ≈ M·|c|·√(2/D)``, so scaling ``W_in``
    by ``M·√(2/D)`` makes it read ``h/|c|``, relative error ``‖h‖²/(4M²c²)`` (``Constants.div_error``).
    In the GPT-2-style block (``pre_ln_anchor = K``) the head reads through a LayerNorm, so
    the anchors, which hold exactly ``±K``, are cleared by subtracting that constant (a bias
    after :func:`fold_layernorm`: exact) instead of the value read.
    """
    m = np.zeros((2, ab.D))
    m[0, lay.row(divisor)] = M
    m[1, lay.row(divisor)] = -M
    ab.overwrite("pair", m)
    if pre_ln_anchor is None:
        ab.overwrite("anchor")
    else:
        ab.self_write("anchor", -layernorm_bypass(lay, pre_ln_anchor, ab.D).anchors)
    for name in cleared:
        ab.overwrite(name)
    return M * math.sqrt(2.0 / ab.D)


def restore_anchors(ab, lay: Layout, K: float) -> None:
    """After a div layer: the self head writes ``anchor ← (+K, −K)`` and ``pair ← 0`` (Lemma 6 again)."""
    ab.overwrite("anchor", layernorm_bypass(lay, K, ab.D).anchors)
    ab.overwrite("pair")


def restore_anchors_pre_ln(mb, ab_next, lay: Layout, K: float) -> None:
    """GPT-2-style block, after a div layer: its MLP adds the anchors back as constants, the next attention clears ``pair``.

    The next attention reads through a LayerNorm too, so the anchors must be back before it:
    the div layer's MLP writes ``(+K, −K)`` through its output bias (exact; its attention set
    them to exactly 0). That attention still sees the pair ``±M·c`` next to them — relative
    read error ``≈ (M·c)²/(2K²)`` — and clears it, leaving ``≈ (M·c)³/(2K²)`` (harmless: the pair
    is read by nothing but LayerNorm, and the next div overwrites it). ``mb`` or ``ab_next`` may be ``None``.
    """
    if mb is not None:
        a = layernorm_bypass(lay, K, mb.D).anchors @ lay.unit("one", 0, mb.D)
        mb.constant("anchor", 0, a[0])
        mb.constant("anchor", 1, a[1])
    if ab_next is not None:
        ab_next.overwrite("pair")


def fold_layernorm(W: np.ndarray, lay: Layout, unscale: float):
    """``(W', b)`` with ``LayerNorm(h) @ W' + b = h @ W`` (Lemma 6 in the form the GPT-2-style block needs).

    With anchors ``(+K, −K)`` dominating the column, ``LayerNorm(h) = (h − μ)/σ`` and
    ``unscale = K·√(2/D) ≈ σ``. Moving each column's sum of ``W`` onto the constant row ``one``
    (``h_one = 1``) makes every column of ``W'`` sum to zero, so the mean ``μ`` and the
    round-off of computing it (``≈ ε·K``, far from small for ``K = 2^55``) cancel; the
    constant this removes comes back exactly through ``b``. Left: the relative error
    ``‖h‖²/(4K²)`` of ``σ ≈ unscale`` on ``h @ W − b``.
    """
    W = np.array(W, dtype=np.float64)
    colsum = W.sum(axis=0)
    W[lay.row("one")] -= colsum
    return unscale * W, colsum
