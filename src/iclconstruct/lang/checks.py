"""Runtime range checks shared by the interpreter and the compiled model.

The approximation constants give their stated error only inside the declared bounds of
each slot and for divisors of magnitude at least ``Constants.div_min``; outside them both
execution paths raise the same exceptions, with messages that say what to change.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import DivergenceError, DivisorTooSmallError, NonFiniteError, OutOfRangeError
from .layout import Layout, Slot

__all__ = ["BOUND_SLACK", "check_inputs", "check_divisor", "check_written", "StepStability"]

#: relative slack of the bound checks in float64: a value may exceed its bound by this much
#: (the compiled model's own error) before a check fires
BOUND_SLACK = 1e-6


def check_inputs(layout: Layout, y_absmax: float, x_absmax: float) -> None:
    """Raise if the token inputs leave the program's ``y``/``x`` bounds."""
    for name, m in (("y", y_absmax), ("x", x_absmax)):
        b = layout[name].bound
        if m > b:
            raise OutOfRangeError(
                f"input {name!r} reaches |{name}| = {m:.4g} but the program was built for |{name}| <= {b:g}; "
                f"rebuild it with a larger {name}_bound (larger bounds cost accuracy) or rescale the data"
            )


def check_divisor(where: str, what: str, divisor: str, min_abs: float, div_min: float) -> None:
    """Raise if a ``div`` would divide by a magnitude below ``div_min``."""
    if min_abs < div_min:
        raise DivisorTooSmallError(
            f"{where}: {what} divides by |{divisor}| = {min_abs:.4g} < div_min = {div_min:g}; "
            f"keep the divisor away from 0 or lower Constants.div_min (error grows as 1/c^2)"
        )


def check_written(where: str, what: str, slot: Slot, absmax: float, slack: float = BOUND_SLACK) -> None:
    """Raise if an op wrote a non-finite value or one beyond ``slot``'s declared bound."""
    if not math.isfinite(absmax):
        raise NonFiniteError(f"{where}: {what} produced NaN or infinity in slot {slot.name!r}")
    if absmax > slot.bound * (1 + slack) + slack:
        raise OutOfRangeError(
            f"{where}: {what} wrote |{slot.name}| = {absmax:.4g}, beyond its declared bound {slot.bound:g}; "
            f"declare a larger bound for slot {slot.name!r} (larger bounds cost accuracy) or keep inputs smaller"
        )


@dataclass(frozen=True)
class StepStability:
    """Guard of Theorem 1's step ``w ← (I − 2·lr·(x xᵀ + lam·I))·w + 2·lr·y·x`` (Eq. 11).

    The step's matrix is symmetric with eigenvalues ``1 − 2·lr·lam`` (orthogonal to ``x``)
    and ``1 − 2·lr·(‖x‖² + lam)`` (along ``x``), so it is non-expansive (spectral norm
    ``≤ 1``) exactly when ``2·lr·(‖x‖² + lam) ≤ 2`` (``lam ≥ 0`` makes the other eigenvalue
    safe). Beyond that the iterate's component along ``x`` is multiplied by a factor
    below ``−1`` and one-pass SGD can grow without bound. Both the interpreter and the
    compiled model run this guard (``program.guards``) on the examples' ``x``.
    """

    lr: float
    lam: float = 0.0

    def max_lr(self, x_sq_max: float) -> float:
        """Largest step size that is non-expansive for inputs with ``‖x‖² ≤ x_sq_max``."""
        return 1.0 / (x_sq_max + self.lam) if x_sq_max + self.lam > 0 else math.inf

    def check(self, tokens) -> None:
        """Raise :class:`~iclconstruct.errors.DivergenceError` unless every example's step is non-expansive.

        ``tokens`` is ``(B, T, d+1)`` (numpy or torch); the examples' ``x`` sit at the even
        columns ``0, 2, …`` below ``2·(T // 2)`` (the query, if any, is not a step).
        """
        T = tokens.shape[1]
        xs = tokens[:, 0 : 2 * (T // 2) : 2, 1:]
        if xs.shape[1] == 0 or xs.shape[2] == 0:
            return
        sq = float(np.max(np.asarray((xs * xs).sum(-1), dtype=np.float64)))
        factor = 2.0 * self.lr * (sq + self.lam)
        if factor > 2.0 * (1.0 + 1e-12):
            raise DivergenceError(
                f"2·lr·(‖x_i‖² + lam) reaches {factor:.4g} > 2 (lr={self.lr:g}, lam={self.lam:g}, max ‖x_i‖² = "
                f"{sq:.4g}): the SGD step multiplies w's component along x_i by 1 − 2·lr·(‖x_i‖² + lam) = "
                f"{1.0 - factor:.4g}, so it expands and one-pass SGD can grow without bound; "
                f"use lr <= {self.max_lr(sq):.4g} or smaller inputs"
            )
