"""Export compiled circuits to the tools interpretability researchers use.

* :func:`to_transformer_lens` — a stock ``transformer_lens.HookedTransformer`` (extra ``[tl]``);
* :func:`to_hf` — a stock Hugging Face ``GPT2LMHeadModel`` (extra ``[hf]``);
* :func:`predict`, :func:`readout`, :func:`tokens_to_inputs` — run either one on examples
  exactly as the native model's ``predict`` / ``forward``.

Only the GPT-2-style block exports (``ic.compile(program, block="pre_ln")``): stock
blocks put a LayerNorm in front of attention too. Weight-tied loops are unrolled for a
fixed number of examples. See ``docs/export.md``.
"""
from .hf import to_hf
from .inputs import export_meta, predict, readout, tokens_to_inputs
from .transformer_lens import to_transformer_lens
from .unroll import Unrolled, unroll

__all__ = ["to_transformer_lens", "to_hf", "predict", "readout", "tokens_to_inputs", "export_meta", "unroll",
           "Unrolled"]
