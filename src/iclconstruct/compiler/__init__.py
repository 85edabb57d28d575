"""The compiler: a :class:`~iclconstruct.lang.program.Program` becomes transformer weights.

Pipeline, one module a pass: ``schedule`` (ops → layers, Lemma 7) → the lemma functions
(``attention``: hard attention and the averaging read; ``mlp``: Lemmas 4 and 5;
``layernorm``: Lemmas 6 and 8; gathered in ``builders``) → ``build`` (weights for every
layer) → ``model`` (the ``nn.Module``, Eq. 4, shaped by ``config``) with ``hooks``
(TransformerLens-style hook points and caches).
"""
from .build import compile

__all__ = ["compile"]
