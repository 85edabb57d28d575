"""Full-batch gradient descent in depth independent of ``n`` (paper §4 "one-step GD"; von Oswald et al. 2023).

Written with the front end (docs/frontend.md), in constant depth for a batch method: the
sums ``S = XᵀX`` and ``b = Xᵀy`` are exact prefix reads (``ctx.sum``), then each step
``w ← w − 2·lr·(S w − b + lam·w)`` is one matrix–vector product in one MLP, so ``k`` steps
cost ``k`` layers whatever the number of examples. Sum-of-squares convention (factor
``2·lr``, no ``1/n``), as :func:`iclconstruct.reference.batch_gd`.

The sums are carried in units of ``1/max_n`` (``ctx.sum(..., scale=1/max_n)``: entries within
``x_bound²`` and ``x_bound·y_bound`` whatever ``n``; the raw sums are never written) and the
step reads ``w ← w − 2·lr·max_n·(S̃ w − b̃ + (lam/max_n)·w)`` — the same update, with a small
residual column, hence a small LayerNorm read error (Lemma 6; see :mod:`.gd_plus_plus`).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..errors import ShapeError
from ..frontend import Algorithm, algorithm
from ..lang.validate import as_float, as_real_array
from .common import check_zoo_args, default_bounds

__all__ = ["batch_gd", "batch_gd_algorithm"]


def batch_gd_algorithm(d: int, lr: float, steps: int = 1, lam: float = 0.0, w0=None, *, x_bound=None, y_bound=None,
                       w_bound: Optional[float] = None, max_n: int = 64) -> Algorithm:
    """The front-end algorithm behind :func:`batch_gd` (``.program()``, ``.interpret()``, ``.compile()``)."""
    # the same validators as every entry point (iclconstruct.lang.validate)
    d, steps, w_bound, max_n = check_zoo_args(d, steps, w_bound, max_n)
    lr = as_float(lr, "lr", positive=True)
    lam = as_float(lam, "lam", nonneg=True)
    w0 = None if w0 is None else as_real_array(w0, "w0")
    w0v = np.zeros(d) if w0 is None else np.asarray(w0, dtype=np.float64).reshape(-1)
    if w0v.shape != (d,) or not np.isfinite(w0v).all():
        raise ShapeError(f"w0 must be a finite vector of shape ({d},); got {np.shape(w0)}")
    xb, yb = default_bounds(d, x_bound, y_bound)
    wb = float(w_bound) if w_bound is not None else max(2.0 * float(np.abs(w0v).max()), 4.0 + 2.0 * math.sqrt(d))

    @algorithm(d=d, x_bound=xb, y_bound=yb, max_n=max_n, name=f"batch_gd(d={d}, lr={lr:g}, steps={steps})")
    def batch_gd(ctx):
        S = ctx.sum(ctx.x.outer(ctx.x), scale=1.0 / max_n)   # XᵀX/max_n over the examples seen so far
        b = ctx.sum(ctx.y * ctx.x, scale=1.0 / max_n)        # Xᵀy/max_n
        w = ctx.const(w0v)
        for _ in range(int(steps)):                  # one MLP per step, independent of n
            w = ctx.bound(w - (2 * lr * max_n) * (S @ w - b + (lam / max_n) * w), wb, arg="w_bound")
        return w
    return batch_gd


def batch_gd(d: int, lr: float, steps: int = 1, lam: float = 0.0, w0=None, *, x_bound=None, y_bound=None,
             w_bound: Optional[float] = None, max_n: int = 64, constants=None, dtype: torch.dtype = torch.float64,
             sparse="auto", device=None):
    """Full-batch GD as a compiled transformer: ``steps`` times ``w ← w − 2·lr·(XᵀXw − Xᵀy + lam·w)``.

    Matches :func:`iclconstruct.reference.batch_gd` on every prefix (the readout at x̃
    column ``i`` uses the first ``i`` examples). ``model.depth(n)`` does not depend on ``n``.

    Args:
        d: input dimension. lr: step (2·lr convention). steps: GD steps. lam: L2 weight.
        w0: start (default 0). x_bound, y_bound: input bounds (defaults as :func:`~iclconstruct.circuits.sgd`).
        w_bound: bound on the iterates (default ``4 + 2√d``; checked at run time).
        max_n: most examples per context. constants, dtype, sparse, device: see :func:`iclconstruct.compile` (``sparse="auto"``: sparse blocks above 20M dense parameters).
    """
    alg = batch_gd_algorithm(d, lr, steps, lam, w0, x_bound=x_bound, y_bound=y_bound, w_bound=w_bound, max_n=max_n)
    return alg.compile(constants=constants, dtype=dtype, sparse=sparse, device=device)
