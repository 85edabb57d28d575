"""Theorem 1: one step of gradient descent per example, as a weight-tied block.

Per example ``(x, y)`` (the paper's 2·lr sum-of-squares convention, Eq. 11)::

    w ← w − 2·lr·(x (xᵀw − y) + lam·w)

Written with the front end (:func:`sgd_algorithm`, docs/frontend.md). The paper's trace uses
nine primitives (≈9 layers) and ≈4+4d rows per step. Packed (Lemma 7), the block the front
end lowers it to is **2 layers**:

====  ===========================================  ===========================================
      attention                                    MLP
====  ===========================================  ===========================================
L0    ``wprev ← w(t−2)``                            ``e ← xeᵀwprev − y``; ``gated_wprev ← is_y·wprev``
L1    —                                             ``w ← wprev − 2·lr·(xe·e + lam·gated_wprev)``
====  ===========================================  ===========================================

(``gated_wprev``: the regulariser acts only at ỹ columns, so that x̃ columns keep ``w0``;
the front end gates only the update's terms that do not vanish at ``x = 0``; none when
``lam = 0``). The hand-written program of the same shape, in the step's units
``u = √(2·lr)·x``, is kept as :func:`sgd_program_by_hand`.

Stability (:func:`stability_guards`, an :class:`~iclconstruct.lang.guards.InputGuard`): the step's matrix
``I − 2·lr·(x xᵀ + lam·I)`` has eigenvalues ``1 − 2·lr·lam`` and ``1 − 2·lr·(‖x‖² + lam)``,
so it is non-expansive exactly when ``2·lr·(‖x‖² + lam) ≤ 2``; the paper's step sizes
``lr ∈ {0.01, 0.03}`` at ``d = 8`` satisfy it for ``‖x‖² ≤ 33`` (``0.03``). The interpreter
and the model both refuse inputs that break it.

"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..compiler.build import compile
from ..numerics.constants import Constants
from ..errors import ICLConstructError, ShapeError
from ..lang.guards import InputGuard
from ..frontend import Algorithm, algorithm
from ..lang.program import Program
from ..lang.validate import as_float, as_real_array
from .common import bound_advice, check_d, default_bounds, gather_examples, predict_from

__all__ = ["sgd", "sgd_program", "sgd_algorithm", "sgd_program_by_hand", "stability_guards"]


def _args(d, lr, lam, w0, x_bound, y_bound, w_bound):
    """The validated arguments shared by the front-end and the hand-written program."""
    d = check_d(d)
    lr = as_float(lr, "lr", positive=True)
    lam = as_float(lam, "lam", nonneg=True)
    w0v = np.zeros(d) if w0 is None else as_real_array(w0, "w0").reshape(-1)
    if w0v.shape != (d,):
        raise ShapeError(f"w0 must have shape ({d},); got {np.shape(w0)}")
    xb, yb = default_bounds(d, x_bound, y_bound)
    wb = as_float(w_bound, "w_bound", positive=True) if w_bound is not None else max(2.0 * float(np.abs(w0v).max(initial=0.0)), 4.0 + 2.0 * math.sqrt(d))
    return d, lr, lam, w0v, xb, yb, wb


def sgd_algorithm(d: int, lr: float, lam: float = 0.0, w0=None, *, x_bound: Optional[float] = None,
                  y_bound: Optional[float] = None, w_bound: Optional[float] = None, max_n: int = 512) -> Algorithm:
    """Theorem 1 written with the front end (``.program()``, ``.interpret()``, ``.compile()``); see :func:`sgd`."""
    d, lr, lam, w0v, xb, yb, wb = _args(d, lr, lam, w0, x_bound, y_bound, w_bound)
    # the stability guard keeps 2·lr·‖x‖² <= 2, so |x_i| <= ‖x‖ <= 1/√lr: a large lr (tiny inputs) shrinks the
    # operands' bounds as it grows the step, and does not multiply the products' error
    xg = min(xb, 1.0 / math.sqrt(lr))
    eb = min(xb * math.sqrt(d), 1.0 / math.sqrt(lr)) * math.sqrt(d) * wb + yb   # |xᵀw − y| <= ‖x‖·√d·wb + yb

    # the bounds come from the caller's arguments, not from the product trick's comfort zone: no max_bound
    @algorithm(d=d, x_bound=xb, y_bound=yb, max_n=max_n, max_bound=math.inf, name=f"sgd(d={d}, lr={lr:g}, lam={lam:g})")
    def sgd(ctx):
        w = ctx.const(w0v)
        for x, y in ctx.examples():                  # one weight-tied block (2 layers) per example
            x = ctx.name(ctx.bound(x, xg, arg="x_bound"), "xe")
            e = ctx.name(ctx.bound(x @ w - y, eb, arg="w_bound"), "e")
            w = ctx.name(ctx.bound(w - 2 * lr * (x * e + lam * w), wb, arg="w_bound"), "w")
        return ctx.name(w @ ctx.query, "pred")      # x̃ column i: x_iᵀ w_{i−1}
    return sgd


def sgd_program(d: int, lr: float, lam: float = 0.0, w0=None, *, x_bound: Optional[float] = None,
                y_bound: Optional[float] = None, w_bound: Optional[float] = None) -> Program:
    """The one-pass SGD program (see :func:`sgd`), lowered by the front end from :func:`sgd_algorithm`."""
    alg = sgd_algorithm(d, lr, lam, w0, x_bound=x_bound, y_bound=y_bound, w_bound=w_bound)
    d, lr, lam, w0v, xb, yb, wb = _args(d, lr, lam, w0, x_bound, y_bound, w_bound)
    p = alg.program()
    for g in stability_guards(lr, lam):
        p.guard(g)
    advice = dict(p.meta.get("bound_advice", {}))
    advice.update({k: v for k, v in bound_advice("sgd", {
        "xe": ["x_bound"], "w": ["w_bound"], "wprev": ["w_bound"], "gated_wprev": ["w_bound"], "wq": ["w_bound"],
        "e": ["w_bound", "y_bound"], "pred": ["w_bound", "x_bound"]}).items() if k in p.layout})
    p.meta = {**p.meta, "circuit": "sgd", "d": d, "lr": float(lr), "lam": float(lam), "w0": w0v.tolist(),
              "x_bound": xb, "y_bound": yb, "w_bound": wb, "bound_advice": advice,
              # the step w ↦ (I − 2·lr·(x xᵀ + lam·I))·w + 2·lr·y·x is non-expansive in the 2-norm
              # whenever the guard passes: the certificate carries w's error with Lipschitz constant 1
              "contraction": {"slots": ["w"], "lipschitz": 1.0}}
    return p


def sgd_program_by_hand(d: int, lr: float, lam: float = 0.0, w0=None, *, x_bound: Optional[float] = None,
                        y_bound: Optional[float] = None, w_bound: Optional[float] = None) -> Program:
    """The hand-written one-pass SGD program (slots and ops placed by hand; kept for tests and comparison)."""
    d, lr, lam, w0v, xb, yb, wb = _args(d, lr, lam, w0, x_bound, y_bound, w_bound)
    r = math.sqrt(2.0 * lr)
    # work in the step's natural units: u = √(2·lr)·x has ‖u‖ <= √2 whenever the step is
    # non-expansive (2·lr·(‖x‖² + lam) <= 2), so a large lr does not multiply the products' error
    ub = min(r * xb, math.sqrt(2.0))          # |u_i| <= √(2·lr)·|x_i| and <= ‖u‖ <= √2
    un = min(r * xb * math.sqrt(d), math.sqrt(2.0))  # ‖u‖
    eb = un * math.sqrt(d) * wb + r * yb
    p = Program(d, x_bound=xb, y_bound=yb, name=f"sgd(d={d}, lr={lr:g}, lam={lam:g})")
    p.slot("u", d, bound=max(xb, ub))  # holds the raw x for one sublayer (gather_examples)
    p.slot("w", d, bound=wb)
    p.slot("wprev", d, bound=wb)
    p.slot("e", 1, bound=eb)
    if lam > 0:
        p.slot("dec", d, bound=wb)
    p.slot("pred", 1, bound=math.sqrt(d) * wb * xb)
    gather_examples(p, "u", scale=r)  # u = √(2·lr)·x at ỹ columns, 0 at x̃
    p.aff("w", bias=w0v)
    with p.loop("examples"):
        p.mov("w", "wprev", offset=2)
        p.mul("wprev", "u", "e", shape=(1, d, 1), plus={"y": -r})   # e = uᵀw − √(2·lr)·y
        plus = {"wprev": 1.0}
        if lam > 0:
            p.mul("wprev", "is_y", "dec", shape=(d, 1, 1))
            plus["dec"] = -2.0 * lr * lam
        p.mul("u", "e", "w", shape=(d, 1, 1), coef=-1.0, plus=plus)   # w − u·e − 2·lr·lam·dec
    predict_from(p, "w", "wprev", "pred")
    for g in stability_guards(lr, lam):
        p.guard(g)
    p.meta = {"circuit": "sgd", "d": d, "lr": float(lr), "lam": float(lam), "w0": w0v.tolist(),
              "x_bound": xb, "y_bound": yb, "w_bound": wb,
              "bound_advice": bound_advice("sgd", {
                  "u": ["x_bound"], "w": ["w_bound"], "wprev": ["w_bound"], "dec": ["w_bound"],
                  "e": ["w_bound", "y_bound"], "pred": ["w_bound", "x_bound"]}),
              # the step w ↦ (I − 2·lr·(x xᵀ + lam·I))·w + 2·lr·y·x is non-expansive in the 2-norm
              # whenever the guard passes: the certificate carries w's error with Lipschitz constant 1
              "contraction": {"slots": ["w"], "lipschitz": 1.0}}
    return p


def sgd(d: int, lr: float, lam: float = 0.0, w0=None, *, x_bound: Optional[float] = None,
        y_bound: Optional[float] = None, w_bound: Optional[float] = None, constants: Optional[Constants] = None,
        dtype: torch.dtype = torch.float64, max_len: int = 1025, block: str = "paper", activation: Optional[str] = None,
        sparse="auto", device=None):
    """Theorem 1 as a compiled transformer: one-pass SGD over the context.

    Matches :func:`iclconstruct.reference.sgd` (``w ← w − 2·lr·(x xᵀw − y x + lam·w)``,
    examples in order, starting at ``w0``); the readout at x̃ column ``i`` is ``x_iᵀ w_{i−1}``.

    Args:
        d: input dimension. lr: step size (2·lr convention). lam: L2 weight (≥ 0).
        w0: initial weights (default 0), baked into the weights.
        x_bound, y_bound, w_bound: magnitude bounds the constants are tuned for (defaults
            suit ``x, w ~ N(0, I)``: 6, 10(√d + 1), 4 + 2√d); inputs or iterates beyond them raise.
        constants, dtype, max_len, block, activation, sparse, device: see :func:`iclconstruct.compile`
            (``sparse="auto"``, the default here: sparse blocks above 20M dense parameters). ``max_len``
            tokens is the longest context: ``(max_len − 1) / 2`` examples. ``block="pre_ln"``:
            the GPT-2-style block that exports to TransformerLens and Hugging Face.

    ``predict`` (and :func:`iclconstruct.interpret` on the program) raises
    :class:`~iclconstruct.errors.DivergenceError` if ``2·lr·(‖x_i‖² + lam) > 2`` for some
    example: the step is then expansive along ``x_i`` and the iterates can grow without bound.
    """
    p = sgd_program(d, lr, lam, w0, x_bound=x_bound, y_bound=y_bound, w_bound=w_bound)
    return compile(p, constants=constants, dtype=dtype, max_len=max_len, block=block, activation=activation,
                   sparse=sparse, device=device)


def stability_guards(lr: float, lam: float = 0.0):
    """The inputs on which one-pass SGD with step ``lr`` (Eq. 11) is stable, as a guard record.

    The step ``w ← (I − 2·lr·(x xᵀ + lam·I))·w + 2·lr·y·x`` has a symmetric matrix with
    eigenvalues ``1 − 2·lr·lam`` (orthogonal to ``x``) and ``1 − 2·lr·(‖x‖² + lam)`` (along
    ``x``), so it is non-expansive exactly when ``2·lr·(‖x_i‖² + lam) ≤ 2``; beyond that the
    component along ``x_i`` is multiplied by a factor below −1 and the iterates can grow
    without bound. That is the one condition refused (by the interpreter and the model alike).
    """
    return [
        InputGuard(scale=2.0 * lr, shift=lam, limit=2.0, expr="2·lr·(‖x_i‖² + lam)", param="lr", value=lr,
                   reason=f"the SGD step (lr={lr:g}, lam={lam:g}) multiplies w's component along x_i by "
                          f"1 − 2·lr·(‖x_i‖² + lam) < −1, so it expands and one-pass SGD can grow without bound"),
    ]
