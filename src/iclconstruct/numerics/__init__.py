"""Numerics: the approximation constants of the tricks (Lemmas 4–8) and their error terms."""
from .constants import Constants

__all__ = ["Constants"]
