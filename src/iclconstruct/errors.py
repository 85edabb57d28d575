"""Exception types of iclconstruct.

Every error the library raises on bad input is an :class:`ICLConstructError`; the
subclasses also derive from the matching builtin (``ValueError``, ``KeyError`` ...)
so generic handlers keep working. Messages name the argument and say what to change.
"""
from __future__ import annotations


class ICLConstructError(Exception):
    """Base class of all iclconstruct errors."""


class LayoutError(ICLConstructError, ValueError):
    """Residual-stream layout misuse (overlap, width overflow, reuse of a freed slot)."""


class SlotOverlapError(LayoutError):
    """Two live slots would share rows."""


class WidthOverflowError(LayoutError):
    """A slot does not fit in the configured residual width."""


class UnknownSlotError(ICLConstructError, KeyError):
    """A slot name that the layout does not know (or that was freed)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class UnwrittenSlotError(ICLConstructError, ValueError):
    """An op reads a slot that no earlier op (or the embedding) has written."""


class ShapeError(ICLConstructError, ValueError):
    """Array or op shapes do not agree."""


class CausalityError(ICLConstructError, ValueError):
    """An op would read from a later token position."""


class NonFiniteError(ICLConstructError, ValueError):
    """Input contains NaN or infinity."""


class OutOfRangeError(ICLConstructError, ValueError):
    """A value left the range for which the approximation constants give their stated error."""


class DivisorTooSmallError(OutOfRangeError):
    """A ``div`` divisor is too close to zero for the configured constants."""


class PrecisionError(OutOfRangeError):
    """A prediction's a-posteriori error bound exceeds the model's stated accuracy
    (:mod:`iclconstruct.numerics.aposteriori`): the model refuses instead of answering wrongly."""


class ContextTooLongError(ICLConstructError, ValueError):
    """More tokens than the model's position units support."""


class CheckpointError(ICLConstructError, ValueError):
    """A checkpoint or saved circuit is corrupted, mismatched or of an unknown format."""


class DivergenceError(OutOfRangeError):
    """An iterative algorithm's parameters make it diverge (e.g. SGD step size too large)."""


class ExportError(ICLConstructError, ValueError):
    """A model cannot be exported as asked (block style, context length, target library version)."""


class MissingExtraError(ICLConstructError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


class ArgumentError(ICLConstructError, ValueError, TypeError):
    """An argument of the wrong type or outside its allowed range (None, a string, NaN, a complex number ...)."""
