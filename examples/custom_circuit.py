"""Compose your own circuit from the four primitives, compile it, check it against the interpreter.

The averaging predictor of the paper's §4: w = mean_i(y_i x_i) over the examples seen so far,
prediction wᵀx at each x̃ column.
"""
import numpy as np

import iclconstruct as ic
from iclconstruct.testing import assert_matches_interpreter

d = 3
p = ic.Program(d)
p.slot("xp", d); p.slot("yx", d, bound=100); p.slot("w", d, bound=100); p.slot("pred", 1, bound=3000)
p.mov("x", "xp", offset=1)       # attention: x of the previous column (the example's x, at ỹ columns)
p.mul("y", "xp", "yx")           # MLP (GeLU product trick): y·x, non-zero only at ỹ columns
p.mov("yx", "w", mean="y")       # attention: average over the ỹ columns so far (the RAW read)
p.mul("w", "x", "pred")          # MLP: the prediction wᵀx at every x̃ column
p.readout("pred")
model = ic.compile(p)            # Lemma 7 packs the four ops into 3 real transformer layers
print(model.summary())
rng = np.random.default_rng(0)
X, w = rng.standard_normal((4, 6, d)), rng.standard_normal((4, d))
tokens = ic.tokens.encode(X, np.einsum("bnd,bd->bn", X, w), rng.standard_normal((4, d)))
assert_matches_interpreter(model, tokens)   # every layer, every slot, within 1e-6·(1 + |ref|)
print("predictions at each x̃ column:\n", model(tokens).round(4))
Xq = tokens[:, -1, 1:]
print("vs numpy averaging:", np.abs(model(tokens)[:, -1] - np.einsum("bd,bd->b", Xq, ic.reference.averaging(X, tokens[:, 1::2, 0]))).max())
