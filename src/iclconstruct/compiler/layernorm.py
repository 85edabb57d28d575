"""LayerNorm in front of the MLP: bypassed (Lemma 6) or used to divide (Lemma 8).

Eq. 4 puts ``LayerNorm`` (full column, no affine parameters) in front of every MLP. The
compiler keeps it harmless with two system slots and one invariant:

* ``anchor`` holds ``(+K, −K)`` (:func:`layernorm_bypass`): the pair dominates the column's
  variance, so ``LayerNorm(h) ≈ h/σ`` with a known ``σ ≈ K·√(2/D)``;
* ``bal`` holds minus the sum of all other rows (:func:`balance`): every write is zero-sum,
  so the column mean is exactly 0 and LayerNorm subtracts nothing;
* in a div layer (:func:`division_setup`) the pair ``(+M·c, −M·c)`` replaces the anchors, so
  the MLP reads ``h/|c|``; the next layer's attention restores them (:func:`restore_anchors`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..lang.layout import Layout

__all__ = ["LayerNormBypass", "layernorm_bypass", "balance", "division_setup", "restore_anchors"]


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
    """
    W = np.array(W, dtype=np.float64)
    bal = lay.row("bal")
    W[..., bal] = 0.0
    W[..., bal] = -W.sum(axis=-1)
    return W


def division_setup(ab, lay: Layout, divisor: str, cleared: Sequence[str], M: float) -> float:
    """Lemma 8 set-up in the attention of a div layer; returns the MLP's ``unscale = M·√(2/D)``.

    The self head writes ``pair ← (+M·c, −M·c)`` from the divisor slot ``c``, silences the
    anchors and clears the slots in ``cleared`` (the destinations of overwriting ``div`` ops).
    The MLP then sees ``LayerNorm(h) = h/σ`` with ``σ ≈ M·|c|·√(2/D)``, so scaling ``W_in``
    by ``M·√(2/D)`` makes it read ``h/|c|``, relative error ``‖h‖²/(4M²c²)`` (``Constants.div_error``).
    """
    m = np.zeros((2, ab.D))
    m[0, lay.row(divisor)] = M
    m[1, lay.row(divisor)] = -M
    ab.overwrite("pair", m)
    ab.overwrite("anchor")
    for name in cleared:
        ab.overwrite(name)
    return M * math.sqrt(2.0 / ab.D)


def restore_anchors(ab, lay: Layout, K: float) -> None:
    """After a div layer: the self head writes ``anchor ← (+K, −K)`` and ``pair ← 0`` (Lemma 6 again)."""
    ab.overwrite("anchor", layernorm_bypass(lay, K, ab.D).anchors)
    ab.overwrite("pair")
