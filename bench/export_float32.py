"""Float32 figures of the GPT-2-style block and its exports (table in docs/export.md).

    PYTHONPATH=src python bench/export_float32.py      # needs iclconstruct[tl,hf]; ~1 min

For sgd and ridge (d = 3, n = 6, 5 tasks each), compiled with ``block="pre_ln"`` and
``dtype=torch.float32`` (``Constants.float32()``): max over tasks and prefixes of
|a − b| / (1 + |b|) for native-vs-float64-reference and exported-vs-native.
"""
import numpy as np
import torch

import iclconstruct as ic


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / (1 + np.abs(b))))


def main(d=3, n=6, tasks=5):
    rng = np.random.default_rng(0)
    print("| circuit (float32, pre_ln) | native vs float64 reference | TransformerLens vs native | HF vs native |")
    print("|---|---|---|---|")
    for name in ("sgd", "ridge"):
        worst = [0.0, 0.0, 0.0]
        for _ in range(tasks):
            X = rng.standard_normal((n, d))
            y, xq = X @ rng.standard_normal(d), rng.standard_normal(d)
            if name == "sgd":
                lr = 0.4 / (2 * (X * X).sum(1).max())
                m = ic.circuits.sgd(d, lr, block="pre_ln", dtype=torch.float32, max_len=2 * n + 1)
                ref = [xs @ (ic.reference.sgd(X[:i], y[:i], lr) if i else np.zeros(d))
                       for i, xs in enumerate(np.vstack([X, xq]))]
            else:
                m = ic.circuits.ridge(d, 0.5, block="pre_ln", dtype=torch.float32, max_len=2 * n + 1)
                ref = [xs @ (ic.reference.ridge(X[:i], y[:i], 0.5) if i else np.zeros(d))
                       for i, xs in enumerate(np.vstack([X, xq]))]
            tok = ic.tokens.encode(X, y, xq).astype(np.float32)
            nat = m(tok)[0]
            worst[0] = max(worst[0], rel(nat, ref))
            worst[1] = max(worst[1], rel(ic.export.readout(m.to_transformer_lens(n), tok)[0], nat))
            worst[2] = max(worst[2], rel(ic.export.readout(m.to_hf(n), tok)[0], nat))
        print(f"| {name} | {worst[0]:.1e} | {worst[1]:.1e} | {worst[2]:.1e} |", flush=True)


if __name__ == "__main__":
    main()
