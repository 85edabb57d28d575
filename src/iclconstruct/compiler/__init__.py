"""The compiler: a :class:`~iclconstruct.lang.program.Program` becomes transformer weights.

Pipeline, one module a pass: ``schedule`` (ops → stages, Lemma 7) → ``builders`` (one weight
builder per lemma) → ``build`` (weights for every layer) → ``model`` (the ``nn.Module``,
Eq. 4) with ``hooks`` (TransformerLens-style hook points and caches).
"""
from .build import compile

__all__ = ["compile"]
