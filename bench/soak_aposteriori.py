"""Soak test of the ridge a-posteriori bound: is ``|model − ridge| ≤ bound`` on every prediction?

    nohup nice -n 10 python bench/soak_aposteriori.py &      # ≈ 15 minutes on 1 CPU

400 random cases (seed 123): ``d`` 1–5, ``lam`` 0.05–3, ``n`` 1–39, float64 and float32 in
turn, inputs uniform in the box, Gaussian with a planted ``w``, or nearly collinear at the
corners of the box (spread 1e-8–0.3). The model runs with ``check=False`` (so inputs the
range checks would refuse are bounded too); every finite bound is compared with the error
against numpy ridge, and every prediction the check serves with the stated accuracy.
"""
from __future__ import annotations

import time

import numpy as np
import torch

import iclconstruct as ic
from iclconstruct.tokens import encode


def exact_ridge(tok: np.ndarray, lam: float) -> np.ndarray:
    B, T, d1 = tok.shape
    out = np.zeros((B, (T + 1) // 2))
    for c in range(0, T, 2):
        k = c // 2
        w = np.zeros((B, d1 - 1)) if k == 0 else ic.reference.ridge(tok[:, 0:2 * k:2, 1:], tok[:, 1:2 * k:2, 0], lam)
        out[:, k] = np.einsum("bd,bd->b", w, tok[:, c, 1:])
    return out


def main(cases: int = 400, seed: int = 123) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    models = {}
    viol = total = served_bad = refused = 0
    t0 = time.time()
    for it in range(cases):
        d = int(rng.integers(1, 6))
        lam = float(rng.choice([0.05, 0.1, 0.3, 1.0, 3.0]))
        dt = (torch.float64, torch.float32)[it % 2]
        if (d, lam, dt) not in models:
            models[d, lam, dt] = ic.circuits.ridge(d, lam, dtype=dt, max_len=81)
        m = models[d, lam, dt]
        n, B = int(rng.integers(1, 40)), 2
        if it % 3 == 0:
            X, y = rng.uniform(-6, 6, (B, n, d)), rng.uniform(-6, 6, (B, n))
        elif it % 3 == 1:
            X = rng.standard_normal((B, n, d))
            y = np.einsum("bnd,bd->bn", X, rng.standard_normal((B, d)))
        else:
            c = rng.choice([-1, 1], size=(B, 1, d)) * 6
            sp = 10 ** rng.uniform(-8, -0.5)
            X = np.clip(rng.choice([-1, 1], size=(B, n, 1)) * rng.uniform(0.9, 1, (B, n, 1)) * c
                        + rng.uniform(-1, 1, (B, n, d)) * 6 * sp, -6, 6)
            y = rng.uniform(-1, 1, (B, n)) * rng.choice([1, 6, 20])
        xq = np.clip(rng.standard_normal((B, d)) * 3, -6, 6)
        tok = encode(X, y, xq)
        with np.errstate(all="ignore"):
            out = np.asarray(m(tok, check=False), float)
            v = m.verify(tok, check=False)
        ref = exact_ridge(tok, lam)
        err = np.abs(out - ref)
        fin = np.isfinite(v.bounds)
        viol += int((err[fin] > v.bounds[fin]).sum())
        total += int(fin.sum())
        acc = 1e-6 if dt == torch.float64 else 1e-2
        served_bad += int((err[v.ok] > acc * (1 + np.abs(ref[v.ok]))).sum())
        refused += int((~v.ok).sum())
    print(f"bound violated: {viol} of {total} finite bounds; served beyond the stated accuracy: {served_bad}; "
          f"refused: {refused}; {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
