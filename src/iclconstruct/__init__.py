"""iclconstruct: constructive transformers that run learning algorithms in context.

Build a :class:`Program` from the four primitives (``mov``, ``mul``, ``div``, ``aff``),
run it exactly with :func:`interpret`, and turn it into a real transformer with
:func:`compile`. See ``docs/concepts.md``.
"""
from . import circuits, errors, io, reference, tokens
from .compiler import compile
from .frontend import Algorithm, algorithm
from .numerics.constants import Constants
from .lang.interpreter import Trace, interpret
from .io import load
from .lang.layout import Layout, Slot
from .compiler.model import ConstructedTransformer
from .lang.program import Program

from ._version import __version__

__all__ = [
    "Program",
    "algorithm",
    "Algorithm",
    "Layout",
    "Slot",
    "Constants",
    "compile",
    "interpret",
    "Trace",
    "ConstructedTransformer",
    "errors",
    "circuits",
    "reference",
    "icl",
    "io",
    "load",
    "viz",
    "tokens",
]


def __getattr__(name):
    # optional parts load on first use (they need the [icl] / [plot] extras)
    if name in ("icl", "viz", "testing"):
        import importlib

        mod = importlib.import_module(f".{name}", __name__)
        globals()[name] = mod
        return mod
    raise AttributeError(f"module 'iclconstruct' has no attribute {name!r}")
