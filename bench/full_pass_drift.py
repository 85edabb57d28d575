"""How much the full forward pass drifts with the context length (not a test).

For each prefix length k, compare the full pass over the first k examples (+ query x_{k+1})
with the full pass over all n examples at the same x̃ column. In exact arithmetic they are
equal; the difference is the full pass's own float64 noise floor (docs/scale.md §2).

    python bench/full_pass_drift.py
"""
import numpy as np
import torch

import iclconstruct as ic

torch.set_num_threads(1)
rng = np.random.default_rng(0)
for name, m in (("ridge d=4 lam=0.5", ic.circuits.ridge(4, lam=0.5)), ("sgd d=4 lr=0.02", ic.circuits.sgd(4, lr=0.02, lam=0.1))):
    n = 16
    X = rng.standard_normal((4, n, 4))
    y = np.einsum("bnd,bd->bn", X, rng.standard_normal((4, 4)))
    full = m(ic.tokens.encode(X, y, None))
    drift = max(float(np.max(np.abs(m(ic.tokens.encode(X[:, :k], y[:, :k], X[:, k]))[:, -1] - full[:, k])
                              / (1 + np.abs(full[:, k])))) for k in range(1, n))
    pr = m.predict_prefixes(X, y)
    print(f"{name}, n={n}: full(k examples) vs full(n examples): {drift:.1e}; "
          f"pruned vs full(n examples): {float(np.max(np.abs(pr - full) / (1 + np.abs(full)))):.1e}")
