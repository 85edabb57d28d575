"""The weight builders, one function per lemma, gathered for import in one place.

* hard attention (§3) and the RAW averaging read: :func:`attend_offset`,
  :func:`attend_position`, :func:`averaging_read`; heads of a sublayer: :class:`AttentionBuilder`
  (module :mod:`iclconstruct.compiler.attention`);
* Lemma 4 (products) :func:`product_units`, Lemma 5 (bypass) :func:`bypass_units`; units of a
  sublayer: :class:`MLPBuilder` (module :mod:`iclconstruct.compiler.mlp`);
* Lemma 6 (LayerNorm bypass) :func:`layernorm_bypass` with :func:`balance`, Lemma 8
  (division) :func:`division_setup` and :func:`restore_anchors` (module
  :mod:`iclconstruct.compiler.layernorm`).

Their sparse twins (the same values as entries, for ``compile(..., sparse=True)``) are
:class:`~iclconstruct.compiler.sparse_heads.SparseAttentionBuilder` and
:class:`~iclconstruct.compiler.sparse_mlp.SparseMLPBuilder`, driven by
:mod:`iclconstruct.compiler.sparse_build`.
"""
from ..lang.embedding import position_units
from .attention import AttentionBuilder, HeadWeights, attend_offset, attend_position, averaging_read
from .layernorm import LayerNormBypass, balance, division_setup, layernorm_bypass, restore_anchors
from .mlp import PRODUCT_GAIN, MLPBuilder, MLPWeights, Unit, bypass_units, product_units

__all__ = [
    "attend_offset", "attend_position", "averaging_read", "AttentionBuilder", "HeadWeights",
    "product_units", "bypass_units", "MLPBuilder", "MLPWeights", "Unit", "PRODUCT_GAIN",
    "layernorm_bypass", "LayerNormBypass", "balance", "division_setup", "restore_anchors", "position_units",
]
