"""Iterative Newton (Newton–Schulz) for least squares, in depth independent of ``n`` (Fu et al. 2023).

``S = XᵀX``, ``M₀ = α·S``, ``M ← M(2I − S M)`` for ``steps`` iterations, ``w = M·Xᵀy``: the
library's first OLS circuit (minimum norm when ``n < d``). Each iteration is two
matrix–matrix products, two layers. The circuit runs the same iteration on the means
``Ŝ = S/n``, ``b̂ = Xᵀy/n`` with ``M̂ = n·M`` (identical iterates up to that scale, and
``M̂ b̂ = M Xᵀy``), so that no bound grows with the context length. The iterates satisfy ``‖S M‖ ≤ 1`` after the first
step (eigenvalues ``μ ← μ(2 − μ)`` map ``(0, 2)`` into ``(0, 1]``), which bounds ``S M`` for
the compiler; ``M`` itself grows to ``S⁺`` and needs a bound (``m_bound``).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..lang.guards import InputGuard
from ..frontend import Algorithm, algorithm
from ..lang.validate import as_float
from .common import check_zoo_args, default_bounds

__all__ = ["newton", "newton_algorithm"]


def newton_algorithm(d: int, steps: int, alpha=None, *, x_bound=None, y_bound=None, m_bound: float = 100.0,
                     w_bound: Optional[float] = None, max_n: int = 64) -> Algorithm:
    """The front-end algorithm behind :func:`newton`."""
    # the same validators as every entry point (iclconstruct.lang.validate)
    d, steps, w_bound, max_n = check_zoo_args(d, steps, w_bound, max_n, min_steps=0)
    alpha = None if alpha is None else as_float(alpha, "alpha", positive=True)
    m_bound = as_float(m_bound, "m_bound", positive=True)
    xb, yb = default_bounds(d, x_bound, y_bound)
    wb = 4.0 + 2.0 * math.sqrt(d) if w_bound is None else float(w_bound)

    @algorithm(d=d, x_bound=xb, y_bound=yb, max_n=max_n, name=f"newton(d={d}, steps={steps})")
    def newton(ctx):
        x, n = ctx.x, ctx.count()
        S = ctx.mean(x.outer(x))                     # XᵀX/n: bounds independent of n; M is n·M_ref
        b = ctx.mean(ctx.y * x)                      # Xᵀy/n, so M b = M_ref Xᵀy
        if alpha is None:                            # α = 1/(n + tr XᵀX)² < 1/λ_max², safe
            a = 1 / (1 + ctx.mean(x @ x))
            M = (a * a) * S
        else:                                        # M_0 = n·α·XᵀX = α·n²·S (α rides on the coef)
            M = alpha * ((n * n) * S)
        for _ in range(int(steps)):                  # two products (two layers) per iteration
            SM = ctx.bound(S @ M, 2.0)
            M = ctx.bound(2 * M - M @ SM, m_bound, arg="m_bound")
        return ctx.bound(M @ b, wb, arg="w_bound")
    return newton


def newton(d: int, steps: int, alpha: Optional[float] = None, *, x_bound=None, y_bound=None, m_bound: float = 100.0,
           w_bound: Optional[float] = None, max_n: int = 64, constants=None, dtype: torch.dtype = torch.float64,
           sparse="auto", device=None):
    """Iterative Newton as a compiled transformer: matches :func:`iclconstruct.reference.newton` on every prefix.

    Args:
        d: input dimension. steps: Newton–Schulz iterations.
        alpha: start scale ``M₀ = α·XᵀX``; must be ``< 2/λ_max(XᵀX)²``: inputs with
            ``max_n·√(α/2)·max‖x_i‖² > 1`` (a sufficient condition) raise
            :class:`~iclconstruct.errors.DivergenceError`. A tiny ``α·n²`` makes tiny
            iterates, which lose relative precision to LayerNorm's absolute round-off
            (``≈1e-9``): the 1e-6 accuracy needs ``α·n²·λ_max(XᵀX/n) ≳ 1e-2`` (predictions not proven within it are
            refused by the a-posteriori check, :mod:`iclconstruct.numerics.recompute`). ``None``: the in-context rule
            ``α = 1/(n + tr XᵀX)²`` — ``reference.newton(..., alpha="trace")``.
        m_bound: bound on the entries of ``n·M`` (they approach ``(XᵀX/n)⁺``, so
            ill-conditioned contexts need more; checked at run time). w_bound: bound on ``w``.
        x_bound, y_bound, max_n, constants, dtype, sparse, device: as :func:`batch_gd`.
    """
    alg = newton_algorithm(d, steps, alpha, x_bound=x_bound, y_bound=y_bound, m_bound=m_bound, w_bound=w_bound,
                           max_n=max_n)
    if alpha is not None:
        alg.program().guard(alpha_guard(float(alpha), max_n))
    return alg.compile(constants=constants, dtype=dtype, sparse=sparse, device=device)


def alpha_guard(alpha: float, max_n: int) -> InputGuard:
    """Refuse inputs on which a fixed ``alpha`` might diverge: ``λ_max(XᵀX) ≤ n·max‖x_i‖²``, so
    ``α·λ_max² < 2`` holds whenever ``max_n·√(α/2)·max‖x_i‖² ≤ 1`` (conservative)."""
    return InputGuard(scale=max_n * math.sqrt(alpha / 2.0), shift=0.0, limit=1.0,
                      expr="max_n·√(alpha/2)·‖x_i‖²", reason="alpha·λ_max(XᵀX)² may reach 2 and Newton's "
                      "iteration diverge (or pass a smaller alpha, or alpha=None for the in-context rule)", param="max_n",
                      value=float(max_n))
