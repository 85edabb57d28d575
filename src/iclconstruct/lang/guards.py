"""Input guards as data: conditions on the examples that a program refuses to run outside.

Some algorithms are only correct (or only stay within their slots' bounds) for some inputs:
one-pass SGD with step ``lr`` diverges once ``2·lr·‖x_i‖²`` passes 1 (Eq. 11). A program
states such a condition as a :class:`InputGuard` record (``program.guard(...)``); the
record is saved with the program, and :func:`iclconstruct.lang.checks.check_guards`
enforces it — the same code in the interpreter and in the compiled model.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .. import errors
from ..errors import ICLConstructError

__all__ = ["InputGuard"]


@dataclass(frozen=True)
class InputGuard:
    """Refuse inputs whose examples have ``scale·(max_i ‖x_i‖² + shift) > limit``.

    The maximum runs over the ``x`` of every example, i.e. every x̃ column followed by its
    ỹ column (the query is not an example). The refusal raises the exception ``error``
    (a class name of :mod:`iclconstruct.errors`) with the message
    ``"{expr} reaches v > limit: {reason}; use {param} <= …"``, where the suggested value of
    ``param`` (whose current value is ``value``, and which ``scale`` is proportional to)
    is the largest one that satisfies the guard on this input.

    Attributes:
        scale, shift, limit: the condition.
        expr: the guarded quantity as the user knows it, e.g. ``"2·lr·‖x_i‖²"``.
        reason: what goes wrong beyond the limit.
        param, value: the caller's argument the advice is about, and its value.
        error: the exception class raised.
    """

    scale: float
    shift: float
    limit: float
    expr: str
    reason: str
    param: str
    value: float
    error: str = "DivergenceError"

    def __post_init__(self) -> None:
        for name in ("scale", "shift", "limit", "value"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ICLConstructError(f"InputGuard.{name} must be a finite number; got {v!r}")
            object.__setattr__(self, name, float(v))
        if not (self.scale > 0 and self.limit > 0):
            raise ICLConstructError(f"InputGuard: scale and limit must be > 0; got {self.scale!r}, {self.limit!r}")
        for name in ("expr", "reason", "param", "error"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ICLConstructError(f"InputGuard.{name} must be a non-empty string")
        cls = getattr(errors, self.error, None)
        if not (isinstance(cls, type) and issubclass(cls, ICLConstructError)):
            raise ICLConstructError(f"InputGuard.error must name an exception of iclconstruct.errors; got {self.error!r}")

    def quantity(self, sq_norm_max: float) -> float:
        """``scale·(sq_norm_max + shift)``: the guarded value for the largest ``‖x_i‖²``."""
        return self.scale * (sq_norm_max + self.shift)

    def refusal(self, sq_norm_max: float) -> ICLConstructError:
        """The exception (not raised) for an input whose largest ``‖x_i‖²`` is ``sq_norm_max``."""
        v = self.quantity(sq_norm_max)
        best = self.value * self.limit / v
        return getattr(errors, self.error)(
            f"{self.expr} reaches {v:.4g} > {self.limit:g}: {self.reason}; use {self.param} <= {best:.4g}"
        )

    def to_dict(self) -> dict:
        return asdict(self)
