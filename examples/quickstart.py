"""Quickstart: the paper's two constructions as transformers, checked against numpy solvers."""
import numpy as np

import iclconstruct as ic

rng = np.random.default_rng(0)
d, n = 4, 12
X = rng.standard_normal((8, n, d))                     # 8 tasks, n examples each
y = np.einsum("bnd,bd->bn", X, rng.standard_normal((8, d)))
x_query = rng.standard_normal((8, d))

ridge = ic.circuits.ridge(d, lam=0.5)                  # Theorem 2: Sherman–Morrison, 3 layers per example
print(ridge.summary())
pred = ridge.predict(X, y, x_query)
ref = np.einsum("bd,bd->b", x_query, ic.reference.ridge(X, y, 0.5))
print("ridge circuit vs numpy: max |diff| =", np.abs(pred - ref).max())

lr = 0.4 / (2 * (X ** 2).sum(-1).max())                # 2·lr·‖x‖² <= 1: one-pass SGD is stable
sgd = ic.circuits.sgd(d, lr)                           # Theorem 1: one GD step per example, 2 layers each
per_prefix = sgd(ic.tokens.encode(X, y, x_query))      # prediction after 0, 1, ..., n examples
print("sgd per-prefix predictions of task 0:", per_prefix[0].round(3))
_, cache = sgd.run_with_cache(ic.tokens.encode(X, y, x_query))
print("w after the last layer, ỹ column of the last example:", cache.slot("w", -1)[0, 2 * n - 1].numpy().round(3))
print("reference one-pass SGD:                               ", ic.reference.sgd(X[0], y[0], lr).round(3))
