"""Approximation constants of the constructions, each with the error it buys.

Every numeric trick of the constructions (§3 and App. C of the paper) trades a large constant for
accuracy. They live here, in one dataclass, so that a model can report them and a user
can change them. Error formulas below were derived for exact arithmetic and checked
against measurements (``tests/test_builders.py`` checks each formula against the measured
error of its primitive; tables in ``docs/algorithms.md``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from ..errors import ICLConstructError

__all__ = ["Constants"]

_EPS64 = 2.0 ** -52


@dataclass(frozen=True)
class Constants:
    """Named approximation constants (defaults tuned for float64).

    Attributes:
        product_scale: ``N`` of the GeLU product trick (Lemma 4). Each operand is first
            divided by its slot bound ``s`` and then by ``N``; with ``x' = x/s_x``,
            ``y' = y/s_y`` in ``[-1, 1]``
            ``√(π/2)·N²·[GeLU((x'+y')/N) − GeLU(x'/N) − GeLU(y'/N)] = x'y' − x'y'(2x'²+3x'y'+2y'²)/(6N²) + …``
            so one product carries truncation error ``≤ (7/6)·s_x·s_y/N²`` plus round-off
            ``≈ 2.5·ε·N·s_x·s_y``. ``N = 1e5`` gives ``≈2e-10·s_x·s_y`` in float64.
        ln_anchor: ``K`` of the LayerNorm bypass (Lemma 6). Rows ``(+K, −K)`` dominate the
            column variance so the MLP recovers ``h`` linearly from ``LayerNorm(h)``; the
            recovered column is scaled by ``1 − ‖h‖²/(4K²)`` (relative error) and carries
            round-off ``≈ ε·K`` (absolute, the same for every row, so products barely feel
            it). ``1e8``: ``2.5e-13`` relative for ``‖h‖² = 10⁴``, ``≈2e-8`` absolute. The scale
            error multiplies every value an MLP writes, so columns holding large
            intermediates (the ridge circuit's ``u uᵀ``) need a large ``K``; measured on the
            ridge circuit (d = 16, lam = 0.1): K = 1e6 → 2e-4, 1e7 → 2e-6, 1e8 → 5e-8,
            1e9 → 2e-7 (round-off takes over).
        div_scale: ``M`` of division by LayerNorm (Lemma 8). During a ``div`` layer the rows
            ``(+M·c, −M·c)`` replace the anchors, so the MLP reads ``h/|c|`` with relative error
            ``‖h‖²/(4M²c²)`` and absolute round-off ``≈ ε·M`` (same trade-off as ``ln_anchor``).
        div_min: smallest divisor magnitude ``|c|`` accepted by ``div``; smaller raises
            :class:`~iclconstruct.errors.DivisorTooSmallError` (the relative error above grows as ``1/c²``).
        attn_hardness: logit gap ``A`` between the attended position and its neighbours in
            hard attention (§3 of the paper): leaked weight ``≤ 2·exp(−A)`` per neighbour,
            i.e. relative error ``≈ 2e-22`` at ``A = 50``. Logits grow as ``A·T²``, which limits
            contexts to a few thousand tokens in float64 (hundreds in float32).
        bypass_scale: ``None`` (default) carries linear terms through the MLP exactly, with
            the pair identity ``GeLU(z) − GeLU(−z) = z`` (2 units per output). A number ``N_b``
            selects the paper's Lemma 5 instead: one unit ``GeLU(z + N_b) − N_b`` with error
            ``(z + N_b)·Φ(−(z + N_b))`` (below 1e-20 once ``z + N_b > 9.5``), valid for ``|z| < N_b − 9.5``.
        product_order: 2 (default) for the plain product trick, or 4 for Richardson
            extrapolation over the scales ``N`` and ``2N``: ``(4·P_{2N} − P_N)/3`` cancels the
            ``N⁻²`` term, leaving truncation ``≤ 0.35·s_x·s_y/N⁴`` for twice the units — so a
            small ``N`` (little round-off) is accurate, which is what float32 needs.
        ln_eps: ``eps`` inside LayerNorm's square root; its relative effect is ``eps/var``,
            i.e. ``≈ eps·D/(2K²)`` — negligible for the defaults.
    """

    product_scale: float = 1e5
    ln_anchor: float = 1e8
    div_scale: float = 1e8
    div_min: float = 0.1
    attn_hardness: float = 50.0
    bypass_scale: Optional[float] = None
    ln_eps: float = 1e-5
    product_order: int = 2

    def __post_init__(self) -> None:
        for name in ("product_scale", "ln_anchor", "div_scale", "div_min", "attn_hardness"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ICLConstructError(f"Constants.{name} must be a finite positive number; got {v!r}")
        if self.bypass_scale is not None and not (isinstance(self.bypass_scale, (int, float))
                                                  and math.isfinite(self.bypass_scale) and self.bypass_scale > 10):
            raise ICLConstructError(
                f"Constants.bypass_scale must be None (exact pair bypass) or > 10; got {self.bypass_scale!r}"
            )
        if self.product_order not in (2, 4):
            raise ICLConstructError(f"Constants.product_order must be 2 (Lemma 4) or 4 (Richardson); got {self.product_order!r}")
        if not (isinstance(self.ln_eps, (int, float)) and math.isfinite(self.ln_eps) and self.ln_eps >= 0):
            raise ICLConstructError(f"Constants.ln_eps must be a finite number >= 0; got {self.ln_eps!r}")

    @classmethod
    def float64(cls, **overrides) -> "Constants":
        """The default constants (float64)."""
        return cls(**overrides)

    @classmethod
    def float32(cls, **overrides) -> "Constants":
        """Constants for float32 (u ≈ 6e-8): round-off dominates, so every scale is small.

        GeLU's own rounding (``≈ 4u·|z|``) makes a product's round-off grow as ``N``, so the
        product uses Richardson extrapolation (``product_order=4``, truncation ``∝ N⁻⁴``) at
        ``N = 5``; anchors and the division pair at ``1e4``. Chosen by a sweep (N ∈ 3…40,
        K = M ∈ 3e2…1e5) on the SGD circuit (d = 8, lr = 0.03, n = 32: max error/(1 + |ref|)
        5.6e-4, against 1e-2 for the previous N = 300 without extrapolation), the ridge circuit
        (d = 4, lam = 1, n = 32: 1.6e-3) and a mul → div → mul chain over [−10, 10] (5e-4).
        Keep contexts short (``max_len`` ≲ 128): logits grow as ``A·T²``.
        """
        base = dict(product_scale=5.0, product_order=4, ln_anchor=1e4, div_scale=1e4, div_min=0.5, attn_hardness=30.0)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def for_dtype(cls, dtype: torch.dtype, **overrides) -> "Constants":
        if dtype == torch.float64:
            return cls.float64(**overrides)
        if dtype == torch.float32:
            return cls.float32(**overrides)
        raise ICLConstructError(f"dtype must be torch.float64 or torch.float32; got {dtype}")

    def to_dict(self) -> dict:
        return asdict(self)

    # ------------------------------------------------------------------ error model
    def product_error(self, s_x: float, s_y: float, eps: float = _EPS64) -> float:
        """Worst-case error of one scaled product with operand bounds ``s_x, s_y``."""
        n = self.product_scale
        if self.product_order == 4:  # Richardson: truncation (Lemma 4's next term) ∝ N⁻⁴, three times the units' round-off
            return s_x * s_y * (0.35 / n ** 4 + 3 * 2.5 * eps * n)
        return s_x * s_y * (7.0 / (6.0 * n * n) + 2.5 * eps * n)

    def ln_error(self, norm_sq: float, eps: float = _EPS64) -> float:
        """Relative scale error of the LayerNorm bypass for a column of squared norm ``norm_sq``."""
        return norm_sq / (4.0 * self.ln_anchor ** 2) + eps * self.ln_anchor

    def div_error(self, norm_sq: float, c: float, eps: float = _EPS64) -> float:
        """Relative error of ``div`` by ``|c|`` for a column of squared norm ``norm_sq``."""
        return norm_sq / (4.0 * (self.div_scale * c) ** 2) + eps * self.div_scale
