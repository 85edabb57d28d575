"""float32 ridge (gain form, the float32 default) over random (d, n, lam, input scale): resumable soak.

Draws d, n ≤ 64, lam log-uniform in [lo, hi], anisotropic x (per-axis scales 0.2–1.5 times a scale in
[0.3, 1.5], clipped to the default x_bound = 6) — the generator of tests/test_float32_circuits.py —
and records max |pred − ridge|/(1 + |ridge|) over a batch of 2, or the refusal. One JSON line per draw.

Usage: python bench/soak_float32_ridge.py --out bench/results/soak_float32_ridge.jsonl --target 200 \\
           [--lam 0.1,10] [--d 2,8] [--seed 0]
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

import iclconstruct as ic
from iclconstruct.errors import ICLConstructError


def task(rng, d, n, scale, B=2):
    X = rng.standard_normal((B, n + 1, d)) * scale * rng.uniform(0.2, 1.5, size=d)
    X *= min(1.0, 5.99 / np.abs(X).max())
    X, xq = X[:, :n], X[:, n]
    return X, np.einsum("bnd,bd->bn", X, rng.standard_normal((B, d))), xq


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--target", type=int, default=200)
    ap.add_argument("--lam", default="0.1,10")
    ap.add_argument("--d", default="2,8")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    lo, hi = map(float, a.lam.split(","))
    dlo, dhi = map(int, a.d.split(","))
    done = sum(1 for _ in open(a.out)) if os.path.exists(a.out) else 0
    rng = np.random.default_rng(a.seed)
    with open(a.out, "a") as f:
        for i in range(a.target):
            d, n = int(rng.integers(dlo, dhi + 1)), int(rng.integers(4, 65))
            lam = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
            scale, seed = float(rng.uniform(0.3, 1.5)), int(rng.integers(0, 2**31))
            if i < done:
                continue  # resumable: the draws are a fixed sequence
            X, y, xq = task(np.random.default_rng(seed), d, n, scale)
            rec = dict(i=i, d=d, n=n, lam=lam, scale=scale, seed=seed, torch=torch.__version__)
            t = time.time()
            try:
                m = ic.circuits.ridge(d, lam, dtype=torch.float32, max_len=2 * n + 1)
                ref = np.einsum("bd,bd->b", xq, ic.reference.ridge(X, y, lam))
                rec["error"] = float(np.max(np.abs(m.predict(X, y, xq) - ref) / (1 + np.abs(ref))))
                rec["form"] = m.program.meta.get("form")
            except ICLConstructError as e:
                rec["refused"] = f"{type(e).__name__}: {str(e)[:200]}"
            rec["seconds"] = round(time.time() - t, 2)
            f.write(json.dumps(rec) + "\n")
            f.flush()
            print(i, d, n, f"{lam:.3g}", rec.get("error", rec.get("refused")), flush=True, file=sys.stderr)


if __name__ == "__main__":
    main()
