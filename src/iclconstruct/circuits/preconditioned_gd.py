"""Preconditioned full-batch GD (Ahn et al. 2023): ``w ← w − 2·lr·P(XᵀXw − Xᵀy)``.

Ahn, Cheng, Daneshmand and Sra (2023) prove that the optimal single linear-attention layer
for in-context regression with inputs ``x ~ N(0, Σ)`` is one step of *preconditioned* GD,
with a preconditioner fitted to ``Σ`` (close to ``Σ⁻¹``), and that deeper trained models
run several such steps. A fixed ``P`` is therefore the natural explanation of a trained
learner when the input covariance is known; ``P = I`` is plain :func:`batch_gd`.
``P·S`` is a constant linear map of the sum ``S``: folded once, then one layer per step.
The sums are carried in units of ``1/max_n`` (``ctx.sum(..., scale=1/max_n)``; the step reads
``w ← w − 2·lr·max_n·P(S̃ w − b̃)``), which keeps the residual column, and with it LayerNorm's
read error (Lemma 6), small (see :mod:`.gd_plus_plus`).
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

__all__ = ["preconditioned_gd", "preconditioned_gd_algorithm"]


def preconditioned_gd_algorithm(d: int, lr: float, steps: int = 1, P=None, *, x_bound=None, y_bound=None,
                                w_bound: Optional[float] = None, max_n: int = 64) -> Algorithm:
    """The front-end algorithm behind :func:`preconditioned_gd`."""
    # the same validators as every entry point (iclconstruct.lang.validate)
    d, steps, w_bound, max_n = check_zoo_args(d, steps, w_bound, max_n)
    lr = as_float(lr, "lr", positive=True)
    P = None if P is None else as_real_array(P, "P")
    Pm = np.eye(d) if P is None else np.asarray(P, dtype=np.float64)
    if Pm.shape != (d, d) or not np.isfinite(Pm).all():
        raise ShapeError(f"P must be a finite ({d}, {d}) matrix; got shape {np.shape(P)}")
    xb, yb = default_bounds(d, x_bound, y_bound)
    wb = 4.0 + 2.0 * math.sqrt(d) if w_bound is None else float(w_bound)

    @algorithm(d=d, x_bound=xb, y_bound=yb, max_n=max_n, name=f"preconditioned_gd(d={d}, steps={steps})")
    def preconditioned_gd(ctx):
        S = ctx.sum(ctx.x.outer(ctx.x), scale=1.0 / max_n)   # XᵀX/max_n
        b = ctx.sum(ctx.y * ctx.x, scale=1.0 / max_n)        # Xᵀy/max_n
        P_ = ctx.const(Pm)
        w = ctx.zeros(d)
        for _ in range(int(steps)):
            w = ctx.bound(w - (2 * lr * max_n) * (P_ @ (S @ w - b)), wb, arg="w_bound")
        return w
    return preconditioned_gd


def preconditioned_gd(d: int, lr: float, steps: int = 1, P=None, *, x_bound=None, y_bound=None,
                      w_bound: Optional[float] = None, max_n: int = 64, constants=None,
                      dtype: torch.dtype = torch.float64, sparse="auto", device=None):
    """Preconditioned GD as a compiled transformer; matches :func:`iclconstruct.reference.preconditioned_gd`.

    Args:
        P: the ``(d, d)`` preconditioner (default ``I``), baked into the weights.
        Others as :func:`batch_gd`.
    """
    alg = preconditioned_gd_algorithm(d, lr, steps, P, x_bound=x_bound, y_bound=y_bound, w_bound=w_bound, max_n=max_n)
    return alg.compile(constants=constants, dtype=dtype, sparse=sparse, device=device)
