"""Theorem 2: ridge regression by Sherman–Morrison updates, one weight-tied block per example.

With ``A₀⁻¹ = I/lam`` and ``w₀ = 0``, each example ``(x, y)`` updates (recursive least squares)::

    u = A⁻¹x,   c = 1 + xᵀu,   A⁻¹ ← A⁻¹ − u uᵀ / c,   w ← w + u·(y − xᵀw) / c

which after ``n`` examples gives ``w = (XᵀX + lam·I)⁻¹ Xᵀy`` exactly (``A⁻¹x`` after the
update is ``u/c``). The circuit carries the rescaled state ``σ·A⁻¹`` with ``σ = max(1, lam)``
(:func:`state_scale`; ``u = σA⁻¹x``, ``c = σ + xᵀu``, the updates unchanged): for ``lam > 1`` the
column then holds values of order one instead of ``1/lam`` (float32 ``lam = 10``: ``≤ 2.4e-4``
instead of ``2.8e-3``); for ``lam ≤ 1`` it is ``A⁻¹`` itself (docs/circuit_ridge.md says why a
smaller ``σ`` is not used). Written with the front end (:func:`ridge_algorithm`, docs/frontend.md):
the divisor ``c`` is declared ``≥ 1`` with a one-sided ``ctx.bound``, and ``A⁻¹``, ``w`` are
updated in place (``state + a/c`` is a ``div`` accumulating into the state slot). The
paper's trace takes 14 primitives (≈14 layers) and ≈3d²+5d+3 rows. Packed (Lemma 7) the
block is **3 layers** and ``2d² + 5d + 2`` user rows:

====  ==========================================  ===============================================
      attention                                   MLP
====  ==========================================  ===============================================
L0    ``A⁻¹ ← A⁻¹(t−2)``, ``w ← w(t−2)``           ``u ← A⁻¹·xe``; ``r ← y − wᵀxe``
L1    —                                           ``c ← σ + xeᵀu``; ``O ← u uᵀ``; ``v ← u·r``
L2    div set-up (``pair ← ±M·c``)                ``A⁻¹ += −O/|c|``; ``w += v/|c|`` (Lemma 8)
====  ==========================================  ===============================================

``c ≥ σ ≥ 1`` always (``A⁻¹`` is positive definite), so the division is well conditioned.
The hand-written program of the same layout is kept as :func:`ridge_program_by_hand`.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..compiler.build import compile
from ..numerics.aposteriori import ridge_spec
from ..numerics.constants import Constants
from ..errors import ICLConstructError, ShapeError
from ..frontend import Algorithm, algorithm
from ..lang.program import Program
from ..lang.validate import as_float
from .common import bound_advice, check_d, default_bounds, gather_examples, predict_from

__all__ = ["ridge", "ridge_program", "ridge_algorithm", "ridge_program_by_hand", "ridge_gain_program", "state_scale",
           "FORMS", "default_form"]

_ADVICE = {"xe": ["x_bound"], "Ainv": ["lam"], "w": ["w_bound"], "wq": ["w_bound"], "u": ["lam", "x_bound"],
           "r": ["y_bound", "w_bound"], "c": ["lam", "x_bound"], "O": ["lam", "x_bound"],
           "v": ["y_bound", "w_bound"], "g": ["lam"], "pred": ["w_bound", "x_bound"]}

#: the two programs of the update: ``"outer"`` (``A⁻¹ −= uuᵀ/c``, 3 layers per example) and
#: ``"gain"`` (the gain vector ``g = u/c`` first, then ``A⁻¹ −= u gᵀ``, 4 layers per example)
FORMS = ("outer", "gain")


def default_form(dtype: torch.dtype) -> str:
    """``"gain"`` for float32 (its column stays small: ``|g| ≤ 1/(2√lam)`` where ``uuᵀ`` reaches
    ``d·x_bound²/lam²``), ``"outer"`` otherwise (one layer per example fewer)."""
    return "gain" if dtype == torch.float32 else "outer"


def state_scale(lam: float) -> float:
    """``σ = max(1, lam)``: the state slot ``Ainv`` carries ``σ·A⁻¹`` (eigenvalues in ``(0, σ/lam]``).

    For ``lam ≥ 1`` the column then holds values of order one whatever ``lam`` (``A⁻¹`` itself
    would shrink as ``1/lam``, below the absolute round-off of the LayerNorm bypass, ``≈ ε·K``);
    for ``lam < 1`` it is ``A⁻¹`` itself (a smaller ``σ`` would make the divisor ``σ + xᵀu``
    smaller than 1, and every quotient's error grows as ``1/c``).
    """
    return max(1.0, lam)


def _args(d, lam, x_bound, y_bound, w_bound):
    """Validated arguments and the slot bounds shared by the front-end and the hand-written program."""
    d = check_d(d)
    lam = as_float(lam, "lam", positive=True)
    xb, yb = default_bounds(d, x_bound, y_bound)
    wb = 4.0 + 2.0 * math.sqrt(d) if w_bound is None else as_float(w_bound, "w_bound", positive=True)
    # the state is B = σ·A⁻¹, σ = max(1, lam) (state_scale): eigenvalues in (0, σ/lam], and B₀ = (σ/lam)·I
    # sits on that bound: 2% headroom keeps the model's own error (float32: ≈1e-4 relative) from
    # tripping the range check spuriously
    sig = state_scale(lam)
    ab = 1.02 * sig / lam
    ub = math.sqrt(d) * xb * sig / lam   # ‖Bx‖ ≤ (σ/lam)‖x‖
    rb = yb + math.sqrt(d) * wb * xb     # |y − wᵀx|
    cl = sig                             # c = σ + xᵀBx = σ·(1 + xᵀA⁻¹x) ≥ σ ≥ 1
    cb = sig * (1.0 + d * xb * xb / lam)
    return d, lam, xb, yb, wb, ab, ub, rb, cl, cb


def ridge_algorithm(d: int, lam: float, *, x_bound: Optional[float] = None, y_bound: Optional[float] = None,
                    w_bound: Optional[float] = None, max_n: int = 512) -> Algorithm:
    """Theorem 2 written with the front end (``.program()``, ``.interpret()``, ``.compile()``); see :func:`ridge`."""
    d, lam, xb, yb, wb, ab, ub, rb, cl, cb = _args(d, lam, x_bound, y_bound, w_bound)

    # the bounds grow as 1/lam by construction (the caller chooses lam): no max_bound
    sig = state_scale(lam)
    # for lam < 1 the bounds grow as 1/lam by construction (the caller chooses lam): no max_bound
    @algorithm(d=d, x_bound=xb, y_bound=yb, max_n=max_n, max_bound=math.inf, name=f"ridge(d={d}, lam={lam:g})")
    def ridge(ctx):
        A, w = ctx.const(np.eye(d) * (sig / lam)), ctx.zeros(d)   # slot Ainv holds σ·A⁻¹, σ = max(1, lam)
        for x, y in ctx.examples():                  # one weight-tied block (3 layers) per example
            x = ctx.name(x, "xe")
            u = ctx.name(ctx.bound(A @ x, ub, arg="lam"), "u")                # σ·A⁻¹x
            r = ctx.name(ctx.bound(y - x @ w, rb, arg="w_bound"), "r")
            c = ctx.name(ctx.bound(sig + x @ u, (cl, cb), arg="lam"), "c")   # σ·(1 + xᵀA⁻¹x) ≥ σ ≥ 1
            A = ctx.name(ctx.bound(A - ctx.name(u.outer(u), "O") / c, ab, arg="lam"), "Ainv")
            w = ctx.name(ctx.bound(w + ctx.name(u * r, "v") / c, wb, arg="w_bound"), "w")
        return ctx.name(ctx.name(w, "wq") @ ctx.query, "pred")   # x̃ column i: x_iᵀ w_{i−1}
    return ridge


def ridge_program(d: int, lam: float, *, x_bound: Optional[float] = None, y_bound: Optional[float] = None,
                  w_bound: Optional[float] = None) -> Program:
    """The Sherman–Morrison ridge program (see :func:`ridge`), lowered by the front end from :func:`ridge_algorithm`."""
    p = ridge_algorithm(d, lam, x_bound=x_bound, y_bound=y_bound, w_bound=w_bound).program()
    d, lam, xb, yb, wb, *_ = _args(d, lam, x_bound, y_bound, w_bound)
    advice = dict(p.meta.get("bound_advice", {}))
    advice.update({k: v for k, v in bound_advice("ridge", _ADVICE).items() if k in p.layout})
    p.meta = {**p.meta, "circuit": "ridge", "form": "outer", "d": d, "lam": lam, "x_bound": xb, "y_bound": yb, "w_bound": wb,
              "bound_advice": advice,
              # the a-posteriori accuracy check (numerics.aposteriori): the readout is refused unless
              # |pred − ridge| is proven ≤ accuracy·(1 + |ridge|) from the weights in slot wq
              "aposteriori": ridge_spec(lam, "wq")}
    return p


def _hand_program(d: int, lam: float, xb: float, yb: float, wb: float, b: dict, extra, a0: float) -> Program:
    """The slots both hand-written forms share (``xe``, the state ``Ainv``, ``w``; ``u``, ``r``, ``c``
    with bounds ``b``), then ``extra`` ``(name, size, bound)`` and ``pred``; the examples gathered into
    ``xe`` and the state initialised to ``A⁻¹ = a0·I``, ``w = 0``."""
    p = Program(d, x_bound=xb, y_bound=yb, name=f"ridge(d={d}, lam={lam:g})")
    for name, size, bound in [("xe", d, xb), ("Ainv", d * d, b["Ainv"]), ("w", d, wb), ("u", d, b["u"]),
                              ("r", 1, b["r"]), ("c", 1, b["c"])] + list(extra) + [("pred", 1, math.sqrt(d) * wb * xb)]:
        p.slot(name, size, bound=bound)
    gather_examples(p, "xe")
    p.aff("Ainv", bias=(np.eye(d) * a0).reshape(-1))
    p.aff("w", bias=np.zeros(d))
    return p


def ridge_program_by_hand(d: int, lam: float, *, x_bound: Optional[float] = None, y_bound: Optional[float] = None,
                          w_bound: Optional[float] = None) -> Program:
    """The hand-written Sherman–Morrison ridge program (slots and ops placed by hand; kept for tests)."""
    d, lam, xb, yb, wb, _, _, rb, _, _ = _args(d, lam, x_bound, y_bound, w_bound)
    # this layout carries A⁻¹ itself (the paper's state; its slots grow as 1/lam)
    ab, ub, cb = 1.02 / lam, math.sqrt(d) * xb / lam, 1.0 + d * xb * xb / lam
    p = _hand_program(d, lam, xb, yb, wb, dict(Ainv=ab, u=ub, r=rb, c=cb), [("O", d * d, ub * ub), ("v", d, ub * rb)],
                      a0=1.0 / lam)
    with p.loop("examples"):
        p.mov("Ainv", "Ainv", offset=2)
        p.mov("w", "w", offset=2)
        p.mul("Ainv", "xe", "u", shape=(d, d, 1))
        p.mul("w", "xe", "r", shape=(1, d, 1), coef=-1.0, plus={"y": 1.0})
        p.mul("xe", "u", "c", shape=(1, d, 1), bias=1.0)
        p.mul("u", "u", "O", shape=(d, 1, d))
        p.mul("u", "r", "v", shape=(d, 1, 1))
        p.div("O", "c", "Ainv", coef=-1.0, accumulate=True, min_abs=1.0)   # c = 1 + xᵀA⁻¹x ≥ 1
        p.div("v", "c", "w", accumulate=True, min_abs=1.0)
    p.free("u")
    p.slot("wq", d, bound=wb)
    predict_from(p, "w", "wq", "pred")
    p.meta = {"circuit": "ridge", "d": d, "lam": lam, "x_bound": xb, "y_bound": yb, "w_bound": wb,
              "bound_advice": bound_advice("ridge", _ADVICE),
              # the a-posteriori accuracy check (numerics.aposteriori): the readout is refused unless
              # |pred − ridge| is proven ≤ accuracy·(1 + |ridge|) from the weights in slot wq
              "aposteriori": ridge_spec(lam, "wq")}
    return p


def ridge_gain_program(d: int, lam: float, *, x_bound: Optional[float] = None, y_bound: Optional[float] = None,
                       w_bound: Optional[float] = None) -> Program:
    """The gain-vector form of the Sherman–Morrison update (recursive least squares' gain ``g``).

    Per example::

        u = σA⁻¹x,   r = y − xᵀw,   c = σ + xᵀu,   g = u/c,   σA⁻¹ ← σA⁻¹ − u gᵀ,   w ← w + g·r

    the same recursion as :func:`ridge_program` (``u gᵀ = uuᵀ/c``; ``g = A⁻¹_new·x`` is the updated
    inverse applied to ``x``) with the division moved before the products. Every value it keeps in the
    column is small: ``‖g‖ = ‖A⁻¹x‖/(1 + xᵀA⁻¹x) ≤ √β/(√lam·(1 + β)) ≤ 1/(2√lam)`` with
    ``β = xᵀA⁻¹x``, where the outer form's ``O = uuᵀ`` reaches ``d·x_bound²/lam²``; the divisor ``c``
    (up to ``σ(1 + d·x_bound²/lam)``) is cleared to 0 by the attention of the division layer, after
    the division set-up has read it. That is what float32 needs (LayerNorm anchors ``K = 1e4`` must
    dominate the column, Lemma 6): ``lam = 0.1`` runs in float32 (docs/algorithms.md). **4 layers
    per example** (``u, r`` | ``c`` | ``g = u/|c|`` | ``A⁻¹, w``), ``d² + 4d + 3`` algorithm rows
    (the outer form: ``2d² + 4d + 2``; ``g`` replaces ``v`` and the ``d × d`` slot ``O`` is gone), so
    about half the width and fewer parameters (d = 16, dense float64: 8.5M against 15.6M).
    """
    d, lam, xb, yb, wb, ab, ub, rb, cl, cb = _args(d, lam, x_bound, y_bound, w_bound)
    sig = state_scale(lam)
    gb = 0.5 / math.sqrt(lam)   # exact ‖g‖ ≤ 1/(2√lam) (σ cancels: g = A⁻¹x/(1 + xᵀA⁻¹x))
    p = _hand_program(d, lam, xb, yb, wb, dict(Ainv=ab, u=ub, r=rb, c=cb), [("g", d, gb)], a0=sig / lam)
    with p.loop("examples"):
        p.mov("Ainv", "Ainv", offset=2)
        p.mov("w", "w", offset=2)
        p.mul("Ainv", "xe", "u", shape=(d, d, 1))
        p.mul("w", "xe", "r", shape=(1, d, 1), coef=-1.0, plus={"y": 1.0})
        p.mul("xe", "u", "c", shape=(1, d, 1), bias=sig)
        p.div("u", "c", "g", min_abs=sig)   # c = σ(1 + xᵀA⁻¹x) ≥ σ
        p.aff("c", bias=np.zeros(1))   # clear the divisor (the division set-up has read it)
        p.mul("u", "g", "Ainv", shape=(d, 1, d), coef=-1.0, plus={"Ainv": 1.0})
        p.mul("g", "r", "w", shape=(d, 1, 1), plus={"w": 1.0})
    p.free("u")
    p.slot("wq", d, bound=wb)
    predict_from(p, "w", "wq", "pred")
    p.meta = {"circuit": "ridge", "form": "gain", "d": d, "lam": lam, "x_bound": xb, "y_bound": yb, "w_bound": wb,
              "bound_advice": bound_advice("ridge", {k: v for k, v in _ADVICE.items() if k in p.layout}),
              "aposteriori": ridge_spec(lam, "wq")}
    return p


def ridge(d: int, lam: float, *, x_bound: Optional[float] = None, y_bound: Optional[float] = None,
          w_bound: Optional[float] = None, constants: Optional[Constants] = None, dtype: torch.dtype = torch.float64,
          max_len: int = 1025, block: str = "paper", activation: Optional[str] = None,
          sparse="auto", device=None, form: Optional[str] = None):
    """Theorem 2 as a compiled transformer: ridge regression, one Sherman–Morrison update per example.

    Matches :func:`iclconstruct.reference.ridge` (``(XᵀX + lam·I)⁻¹Xᵀy``) on every prefix;
    ``n = 1`` is Theorem 2 exactly.

    Args:
        d: input dimension. lam: ridge weight, ``> 0``.
        x_bound, y_bound, w_bound: magnitude bounds the constants are tuned for (defaults
            suit ``x, w ~ N(0, I)``: 6, 10(√d + 1), 4 + 2√d); inputs or iterates beyond them raise.
        constants, dtype, max_len, block, activation, sparse, device: see :func:`iclconstruct.compile`
            (``block="pre_ln"``: the GPT-2-style block that exports to TransformerLens / Hugging Face;
            ``sparse="auto"``, the default here, builds large circuits — from d ≈ 17 — with sparse
            blocks from the start: ridge at d = 64 takes seconds and under 1 GB, where dense weights
            would need ≈ 54 GB; ``model.to_dense()`` gives the dense model).
        form: ``"outer"`` (:func:`ridge_program`, 3 layers per example) or ``"gain"``
            (:func:`ridge_gain_program`, 4 layers per example, small column values); default
            :func:`default_form` — ``"gain"`` for float32, ``"outer"`` otherwise.
    """
    if form is None:
        form = default_form(dtype)
    if form not in FORMS:
        raise ICLConstructError(f"form must be one of {', '.join(map(repr, FORMS))} (or None: by dtype); got {form!r}")
    build = ridge_program if form == "outer" else ridge_gain_program
    p = build(d, lam, x_bound=x_bound, y_bound=y_bound, w_bound=w_bound)
    return compile(p, constants=constants, dtype=dtype, max_len=max_len, block=block, activation=activation,
                   sparse=sparse, device=device)
