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

__all__ = ["Constants", "ACTIVATIONS", "quartic_coefficient"]

_EPS64 = 2.0 ** -52

#: the MLP activations a construction can use (TransformerLens / Hugging Face names)
ACTIVATIONS = ("gelu", "gelu_new")


def quartic_coefficient(activation: str) -> float:
    """``c₄`` in ``G(z) = z/2 + z²/√(2π) + c₄z⁴ + O(z⁶)`` (Lemma 4's truncation term).

    Exact GeLU: ``c₄ = −1/(6√(2π))``. GPT-2's tanh GeLU, ``G(z) = z/2·(1 + tanh(a(z + b z³)))``
    with ``a = √(2/π)``, ``b = 0.044715``: ``c₄ = (a·b − a³/3)/2`` (0.5 % larger in magnitude).
    """
    if activation == "gelu":
        return -1.0 / (6.0 * math.sqrt(2.0 * math.pi))
    if activation == "gelu_new":
        a = math.sqrt(2.0 / math.pi)
        return (a * 0.044715 - a ** 3 / 3.0) / 2.0
    raise ICLConstructError(f"activation must be one of {', '.join(map(repr, ACTIVATIONS))}; got {activation!r}")


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
            1e9 → 2e-7 (round-off takes over). Programs with small values want a smaller
            ``K``, so in float64 ``compile(constants=None)`` chooses ``K = M`` per program from
            ``0.01``–``10`` × this default by the certificate
            (:func:`iclconstruct.numerics.autoconst.choose_constants`); ``1e8`` is the starting point.
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
            ``(z + N_b)·Φ(−(z + N_b))`` (below 1e-20 once ``z + N_b > 9.5``), valid for ``|z| < N_b − 9.5``;
            with ``activation="gelu_new"`` the tail is ``(z + N_b)·(1 − tanh(a(w + b w³)))/2``,
            ``w = z + N_b``, below 1e-20 once ``w > 8`` (:meth:`bypass_error`).
        product_order: 2 (default) for the plain product trick, or 4 for Richardson
            extrapolation over the scales ``N`` and ``2N``: ``(4·P_{2N} − P_N)/3`` cancels the
            ``N⁻²`` term, leaving truncation ``≤ 0.35·s_x·s_y/N⁴`` for twice the units — so a
            small ``N`` (little round-off) is accurate, which is what float32 needs.
        ln_eps: ``eps`` inside LayerNorm's square root; its relative effect is ``eps/var``,
            i.e. ``≈ eps·D/(2K²)`` — negligible for the defaults.
        pre_ln_anchor: ``K`` of the LayerNorm bypass in the GPT-2-style block
            (``block="pre_ln"``, a LayerNorm in front of attention *and* MLP). There every
            weight reading a LayerNorm output has columns summing to zero (the constant
            term goes into a bias), so the mean and its round-off cancel and ``K`` costs
            round-off only through ``h − μ̂`` (``≈ ε²K`` absolute). ``K`` must also dominate
            the division pair ``±M·c`` that is still in the column when the next attention
            clears it: relative read error there ``≈ (M·c)²/(2K²)``. ``2^55 ≈ 3.6e16``:
            ``≈ 8e-15`` for ``M·c = 1e10``. Ordinary layers: ``‖h‖²/(4K²)`` (``< 1e-29``).
        activation: the MLP's GeLU. ``"gelu"`` (default) is the exact ``x·Φ(x)``;
            ``"gelu_new"`` is GPT-2's ``x/2·(1 + tanh(√(2/π)(x + 0.044715x³)))``. Both have
            the quadratic coefficient ``1/√(2π)`` and no cubic term, so the product trick
            (Lemma 4) and the bypass (Lemma 5) are built identically; only the quartic
            coefficient, and so the truncation error, differs (:meth:`product_error`).
    """

    product_scale: float = 1e5
    ln_anchor: float = 1e8
    div_scale: float = 1e8
    div_min: float = 0.1
    attn_hardness: float = 50.0
    bypass_scale: Optional[float] = None
    ln_eps: float = 1e-5
    product_order: int = 2
    pre_ln_anchor: float = 2.0 ** 55
    activation: str = "gelu"

    def __post_init__(self) -> None:
        for name in ("product_scale", "ln_anchor", "div_scale", "div_min", "attn_hardness", "pre_ln_anchor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ICLConstructError(f"Constants.{name} must be a finite positive number; got {v!r}")
        if self.bypass_scale is not None and not (isinstance(self.bypass_scale, (int, float))
                                                  and math.isfinite(self.bypass_scale) and self.bypass_scale > 10):
            raise ICLConstructError(
                f"Constants.bypass_scale must be None (exact pair bypass) or > 10; got {self.bypass_scale!r}"
            )
        if self.activation not in ACTIVATIONS:
            raise ICLConstructError(
                f"Constants.activation must be one of {', '.join(map(repr, ACTIVATIONS))}; got {self.activation!r}"
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
        base = dict(product_scale=5.0, product_order=4, ln_anchor=1e4, div_scale=1e4, div_min=0.5, attn_hardness=30.0,
                    pre_ln_anchor=2.0 ** 27)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def for_dtype(cls, dtype: torch.dtype, block: str = "paper", **overrides) -> "Constants":
        """Defaults for ``dtype``; for the GPT-2-style block (``block="pre_ln"``) in float64 the
        products are Richardson-extrapolated (``product_order=4``) at ``N = 200``. The block
        exists to be exported, and what differs between an exported model and the native one
        is round-off alone — two equally valid roundings (a stock library's LayerNorm and
        matmuls against ours) — amplified by the product trick to ``≈ 7.5·ε·N·s_x·s_y``
        (three units per product with Richardson, Lemma 4). A small ``N`` keeps that term
        at ``≈ 3.3e-13·s_x·s_y``, while Richardson keeps the truncation at
        ``≤ 0.35·s_x·s_y/N⁴ ≈ 2.2e-10·s_x·s_y``: exported residual streams then agree with the
        native one within ``1e-9·(1 + |ref|)`` (``tests/test_export.py``), at twice the product
        units of the paper block's default (``N = 1e5``, truncation ``≈ 1.2e-10·s_x·s_y``,
        round-off ``≈ 5.5e-11·s_x·s_y``)."""
        if dtype == torch.float64 and block == "pre_ln":
            overrides = {"product_scale": 200.0, "product_order": 4, **overrides}
        if dtype == torch.float64:
            return cls.float64(**overrides)
        if dtype == torch.float32:
            return cls.float32(**overrides)
        if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
            # no constants exist: the best product (Richardson, Lemma 4) errs by min_N 0.35/N⁴ + 7.5·ε·N
            eps = float(torch.finfo(dtype).eps)
            n = (1.4 / (7.5 * eps)) ** 0.2
            best = 0.35 / n ** 4 + 7.5 * eps * n
            raise ICLConstructError(
                f"dtype must be torch.float64 or torch.float32; got {dtype}: with its unit round-off ε = {eps:.3g} "
                f"even the best product (Richardson at N = {n:.2g}) errs by {best:.2g} relative (0.35/N⁴ + 7.5·ε·N), "
                f"above the 1e-3 a float32 model promises; compute in float32 and cast the outputs")
        raise ICLConstructError(f"dtype must be torch.float64 or torch.float32; got {dtype}")

    def to_dict(self) -> dict:
        return asdict(self)

    # ------------------------------------------------------------------ error model
    def product_error(self, s_x: float, s_y: float, eps: float = _EPS64) -> float:
        """Worst-case error of one scaled product with operand bounds ``s_x, s_y``.

        Truncation: ``√(π/2)·|c₄|·(4x³y + 6x²y² + 4xy³)/N²`` at ``|x'| = |y'| = 1``, i.e.
        ``14·√(π/2)·|c₄|/N²`` — ``7/6`` for the exact GeLU, ``1.1724`` for ``"gelu_new"``
        (see :func:`quartic_coefficient`); round-off ``≈ 2.5·ε·N``.
        """
        n = self.product_scale
        if self.product_order == 4:  # Richardson: truncation (Lemma 4's next term) ∝ N⁻⁴, three times the units' round-off
            return s_x * s_y * (0.35 / n ** 4 + 3 * 2.5 * eps * n)
        trunc = 14.0 * math.sqrt(math.pi / 2.0) * abs(quartic_coefficient(self.activation))
        return s_x * s_y * (trunc / (n * n) + 2.5 * eps * n)

    def bypass_error(self, w: float) -> float:
        """Error ``G(w) − w`` magnitude of one Lemma 5 unit at ``w = z + N_b > 0`` (``w·(1 − Φ̃(w))``)."""
        if self.activation == "gelu":
            return w * 0.5 * math.erfc(w / math.sqrt(2.0))
        a = math.sqrt(2.0 / math.pi)
        u = a * (w + 0.044715 * w ** 3)
        return w * math.exp(-2.0 * u) / (1.0 + math.exp(-2.0 * u))  # (1 − tanh u)/2, without cancellation

    def ln_error(self, norm_sq: float, eps: float = _EPS64) -> float:
        """Relative scale error of the LayerNorm bypass for a column of squared norm ``norm_sq``."""
        return norm_sq / (4.0 * self.ln_anchor ** 2) + eps * self.ln_anchor

    def div_error(self, norm_sq: float, c: float, eps: float = _EPS64) -> float:
        """Relative error of ``div`` by ``|c|`` for a column of squared norm ``norm_sq``."""
        return norm_sq / (4.0 * (self.div_scale * c) ** 2) + eps * self.div_scale
