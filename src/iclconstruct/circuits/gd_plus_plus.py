"""GD++ (von Oswald et al. 2023): gradient descent while the inputs are transformed too.

Their trained linear-attention layers do a GD step on ``w`` *and* move every input token
(the examples and the query) by a curvature-correction step ``x ← (I − γ·XᵀX)·x``. With
``S_k, b_k, q_k`` the Gram matrix, ``Xᵀy`` and query of the inputs after ``k`` transforms
(``H_k = I − γ·S_k``; ``X_{k+1} = X_k H_k``)::

    w   ← w − 2·lr·(S_k w − b_k)
    S_{k+1} = H_k S_k H_k,   b_{k+1} = H_k b_k,   q_{k+1} = H_k q_k

for ``k = 0 .. steps−1``, prediction ``wᵀ q_steps``. All of it is products of ``d×d``
matrices read from two prefix sums: depth independent of ``n`` (two layers per step).

The sums are carried in units of ``1/max_n`` — ``S̃ = S/max_n``, ``b̃ = b/max_n`` (entries
within ``x_bound²`` and ``x_bound·y_bound`` whatever ``n``), formed by ``ctx.sum(..., scale=1/max_n)``
so the raw sums are never written — and the step is rewritten in those units::

    H_k = I − (γ·max_n)·S̃_k,   w ← w − 2·lr·max_n·(S̃_k w − b̃_k),
    S̃_{k+1} = H_k S̃_k H_k,     b̃_{k+1} = H_k b̃_k,                 q_{k+1} = H_k q_k

(the same algorithm). With the raw sums (entries up to ``max_n·x_bound²``) the residual
column's squared norm reached ~3e7 on shifted data, and LayerNorm's read error (Lemma 6,
relative ``‖h‖²/(4K²)``) cost up to 4.3e-6 at d = 8 (``docs/reliability.md``).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..frontend import Algorithm, algorithm
from ..lang.validate import as_float
from .common import check_zoo_args, default_bounds

__all__ = ["gd_plus_plus", "gd_plus_plus_algorithm"]


def gd_plus_plus_algorithm(d: int, lr: float, gamma: float, steps: int = 1, *, x_bound=None, y_bound=None,
                           w_bound: Optional[float] = None, max_n: int = 64) -> Algorithm:
    """The front-end algorithm behind :func:`gd_plus_plus`."""
    # the same validators as every entry point (iclconstruct.lang.validate)
    d, steps, w_bound, max_n = check_zoo_args(d, steps, w_bound, max_n)
    lr = as_float(lr, "lr", nonneg=True)
    gamma = as_float(gamma, "gamma", nonneg=True)
    xb, yb = default_bounds(d, x_bound, y_bound)
    wb = 4.0 + 2.0 * math.sqrt(d) if w_bound is None else float(w_bound)
    sb, bb = xb * xb, xb * yb          # bounds of S̃ = XᵀX/max_n and b̃ = Xᵀy/max_n
    g, a = gamma * max_n, 2 * lr * max_n  # γ and 2·lr in the units of S̃, b̃

    @algorithm(d=d, x_bound=xb, y_bound=yb, max_n=max_n, name=f"gd_plus_plus(d={d}, steps={steps})")
    def gd_plus_plus(ctx):
        S = ctx.sum(ctx.x.outer(ctx.x), scale=1.0 / max_n)   # S̃ = XᵀX/max_n, never XᵀX itself
        b = ctx.sum(ctx.y * ctx.x, scale=1.0 / max_n)        # b̃ = Xᵀy/max_n
        q, w = ctx.query, ctx.zeros(d)
        for _ in range(int(steps)):
            w = ctx.bound(w - a * (S @ w - b), wb, arg="w_bound")
            H = ctx.eye(d) - g * S                   # the curvature correction of the inputs
            HS = ctx.bound(H @ S, sb)
            S, b, q = ctx.bound(HS @ H, sb), ctx.bound(H @ b, bb), ctx.bound(H @ q, xb * math.sqrt(d))
        return w @ q
    return gd_plus_plus


def gd_plus_plus(d: int, lr: float, gamma: float, steps: int = 1, *, x_bound=None, y_bound=None,
                 w_bound: Optional[float] = None, max_n: int = 64, constants=None, dtype: torch.dtype = torch.float64,
                 sparse="auto", device=None):
    """GD++ as a compiled transformer; matches :func:`iclconstruct.reference.gd_plus_plus` on every prefix.

    ``gamma`` should stay below ``2/λ_max(XᵀX)`` (then ``‖H_k‖ ≤ 1`` and the transformed
    data stay within the bounds; otherwise the run-time checks raise). Other arguments as
    :func:`batch_gd`.
    """
    alg = gd_plus_plus_algorithm(d, lr, gamma, steps, x_bound=x_bound, y_bound=y_bound, w_bound=w_bound, max_n=max_n)
    return alg.compile(constants=constants, dtype=dtype, sparse=sparse, device=device)
