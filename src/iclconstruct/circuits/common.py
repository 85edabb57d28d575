"""Pieces shared by the algorithm circuits: the example-gathering prologue and the readout.

Wavefront schedule (used by both circuits). Every column runs the same weight-tied
block. The ỹ column of example ``k`` reads the state (``w``, ``A⁻¹``) of the ỹ column two
positions back (example ``k − 1``) and applies one update with its own example. After
``b`` blocks the ỹ columns of examples ``1..b`` hold their exact states, so ``n`` blocks
give every prefix at once. x̃ columns see the example ``xe = 0`` and ``y = 0``, an
identity update, so they keep the initial state — which is also what the first ỹ column
reads (its read of "two back" clamps to column 0).
"""
from __future__ import annotations

import math

from ..lang.program import Program
from ..lang.validate import MAX_D, as_float, as_int

__all__ = ["gather_examples", "predict_from", "default_bounds", "check_d", "check_zoo_args", "bound_advice"]


def bound_advice(circuit: str, slots: dict) -> dict:
    """``program.meta['bound_advice']`` for a circuit: per slot, the caller's arguments its bound comes from.

    A circuit derives its slots' bounds from its own arguments (``x_bound``, ``w_bound``,
    ``lam`` …); when a value overflows one, the range check says which argument to change
    instead of naming a slot the caller never declared.
    """
    out = {}
    for slot, args in slots.items():
        first = args[0]
        if first == "lam":
            out[slot] = (f"slot {slot!r} of iclconstruct.circuits.{circuit} grows as 1/lam: at this lam the "
                         f"construction cannot serve this input to its stated accuracy — pass a larger lam "
                         f"or smaller inputs")
        else:
            names = " and ".join(f"{a}=" for a in args)
            out[slot] = (f"slot {slot!r} of iclconstruct.circuits.{circuit} is sized from {names}: pass a larger "
                         f"{first} (larger bounds cost accuracy) or smaller inputs")
    return out


def check_d(d) -> int:
    """The input dimension ``d`` as a positive ``int`` (refuses None, NaN, strings, 0, 2.5 ...)."""
    return as_int(d, "d", min=1, max=MAX_D)


def check_zoo_args(d, steps, w_bound, max_n, *, min_steps: int = 1):
    """``(d, steps, w_bound, max_n)`` of a zoo circuit, validated as every entry point validates them."""
    return (check_d(d), as_int(steps, "steps", min=min_steps),
            None if w_bound is None else as_float(w_bound, "w_bound", positive=True), as_int(max_n, "max_n", min=1))


def default_bounds(d: int, x_bound, y_bound):
    """Defaults for ``N(0, I)`` inputs and weights: ``|x_i| ≤ 6`` and ``|y| ≤ 10·(√d + 1)``.

    ``y = wᵀx`` is a sum of products of Gaussians, whose tails are heavier than a
    Gaussian's (for ``d = 1``, ``P(|wx| > 8) ≈ 1e-4``); the ``+1`` covers small ``d``.
    """
    xb = 6.0 if x_bound is None else as_float(x_bound, "x_bound", positive=True)
    yb = 10.0 * (math.sqrt(d) + 1.0) * xb / 6.0 if y_bound is None else as_float(y_bound, "y_bound", positive=True)
    return xb, yb


def gather_examples(p: Program, xe: str, scale: float = 1.0) -> None:
    """``xe ← scale·x`` of the previous column at ỹ columns, 0 at x̃ columns (one layer).

    ``mov`` from offset 1 brings ``x_k`` to the ỹ column of example ``k``; at x̃ columns it
    brings the zero x-rows of a ỹ column, except at column 0, which reads itself — the
    product with the ``is_y`` flag zeroes that.
    """
    p.mov("x", xe, offset=1)
    p.mul(xe, "is_y", xe, shape=(p.d, 1, 1), coef=scale)


def predict_from(p: Program, w: str, scratch: str, out: str) -> None:
    """``out ← w(t−1)ᵀ x(t)``: each x̃ column predicts with the state of the ỹ column before it."""
    p.mov(w, scratch, offset=1)
    p.mul(scratch, "x", out, shape=(1, p.d, 1))
    p.readout(out, columns="x")
