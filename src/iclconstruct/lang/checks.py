"""Runtime range checks shared by the interpreter and the compiled model.

The approximation constants give their stated error only inside the declared bounds of
each slot and for divisors of magnitude at least ``Constants.div_min``; outside them both
execution paths raise the same exceptions, with messages that say what to change.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ..errors import DivisorTooSmallError, NonFiniteError, OutOfRangeError
from .guards import InputGuard
from .layout import Layout, Slot

__all__ = ["bound_advice", "BOUND_SLACK", "GUARD_SLACK", "check_inputs", "check_guards", "check_divisor", "check_written",
           "example_sq_norm_max"]

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


#: absolute slack of :class:`~iclconstruct.lang.guards.InputGuard` limits (round-off of ``‖x‖²``)
GUARD_SLACK = 1e-12


def example_sq_norm_max(tokens: np.ndarray) -> Optional[float]:
    """Largest ``‖x_i‖²`` over the examples of ``tokens`` ``(B, T, d+1)`` (``None`` without examples).

    Examples are the x̃ columns followed by their ỹ column: ``0, 2, …, 2(T//2) − 2``.
    """
    xs = np.asarray(tokens, dtype=np.float64)[:, 0 : 2 * (tokens.shape[1] // 2) : 2, 1:]
    return float((xs * xs).sum(-1).max()) if xs.size else None


def check_guards(guards: Sequence[InputGuard], tokens: np.ndarray) -> None:
    """Raise the first guard's refusal whose condition ``tokens`` violate."""
    if not guards:
        return
    sq = example_sq_norm_max(tokens)
    if sq is None:  # no example: nothing to refuse
        return
    for g in guards:
        if g.quantity(sq) > g.limit + GUARD_SLACK:
            raise g.refusal(sq)


def check_divisor(where: str, what: str, divisor: str, min_abs: float, div_min: float, declared: float = 0.0,
                  tol: float = 0.0, advice: Optional[str] = None) -> None:
    """Raise if a ``div`` would divide by a magnitude below ``div_min``, or below ``declared − tol``:
    ``declared`` is the lower bound the program states for ``|divisor|`` (``Div.min_abs``), ``tol``
    the accuracy the caller allows the divisor (then it is wrong by more than that)."""
    if declared - tol > div_min and min_abs < declared - tol:
        raise DivisorTooSmallError(
            f"{where}: {what} divides by |{divisor}| = {min_abs:.6g}, below the {declared:g} the program states "
            f"for every input (less {tol:.3g}, the stated accuracy): the divisor is wrong by more than that; "
            + (advice or "use dtype=torch.float64 or inputs further inside the declared bounds"))
    if min_abs < div_min:
        raise DivisorTooSmallError(
            f"{where}: {what} divides by |{divisor}| = {min_abs:.4g} < div_min = {div_min:g}; "
            f"keep the divisor away from 0 or lower Constants.div_min (error grows as 1/c^2)"
        )


def check_written(where: str, what: str, slot: Slot, absmax: float, slack: float = BOUND_SLACK,
                  advice: Optional[str] = None) -> None:
    """Raise if an op wrote a non-finite value or one beyond ``slot``'s declared bound.

    ``advice`` says what the caller can change when the slot's bound is not theirs to
    declare (a circuit derives it from its arguments: ``program.meta['bound_advice']``).
    """
    fix = advice or (f"declare a larger bound for slot {slot.name!r} (larger bounds cost accuracy) or keep "
                     f"inputs smaller")
    if not math.isfinite(absmax):
        raise NonFiniteError(f"{where}: {what} produced NaN or infinity in slot {slot.name!r}; {fix}")
    if absmax > slot.bound * (1 + slack) + slack:
        raise OutOfRangeError(
            f"{where}: {what} wrote |{slot.name}| = {absmax:.4g}, beyond its declared bound {slot.bound:g}; {fix}"
        )


def bound_advice(program, slot: str) -> Optional[str]:
    """What to change when ``slot`` of ``program`` overflows, if the program says (circuits do)."""
    adv = (getattr(program, "meta", None) or {}).get("bound_advice")
    return adv.get(slot) if isinstance(adv, dict) and isinstance(adv.get(slot), str) else None
