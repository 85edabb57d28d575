"""Comparison metrics between learners (Akyürek et al. 2023, §4.1–4.2).

* ``SPD(A1, A2) = E (A1(D)(x') − A2(D)(x'))²`` — squared prediction difference, reported ÷ d.
* ``ILWD(A1, A2) = E_D ‖ŵ_A1 − ŵ_A2‖²`` — implicit linear weight difference, where ``ŵ_A`` is
  the least-squares fit of ``A(D)(·)`` on fresh unlabeled probe inputs (exact ``w`` for linear
  algorithms); reported ÷ d.
* ``MSPD`` — SPD averaged over the under-determined prefixes ``n < d`` (paper Table/Fig. 2).
* ``R²`` of the implicit linear fit (how linear the learner's function is).
* Squared error per prefix ÷ d with percentile-bootstrap confidence intervals (paper Fig. 1).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from ..errors import OutOfRangeError, ShapeError
from .data import Tasks

__all__ = ["spd", "mspd", "bootstrap_ci", "error_curve", "implicit_weights", "ilwd"]


def spd(pred_a, pred_b, d: int, axis=None) -> np.ndarray:
    """Squared prediction difference ÷ d: ``mean((a − b)²)/d`` over ``axis`` (all by default)."""
    a = np.asarray(pred_a, np.float64)
    b = np.asarray(pred_b, np.float64)
    if a.shape != b.shape:
        raise ShapeError(f"pred_a and pred_b must have the same shape; got {a.shape} and {b.shape}")
    if d < 1:
        raise OutOfRangeError(f"d must be >= 1; got {d}")
    return np.mean((a - b) ** 2, axis=axis) / d


def mspd(prefix_pred_a, prefix_pred_b, d: int) -> float:
    """SPD averaged over prefixes ``k = 1 … d−1`` (under-determined region; paper Fig. 2).

    Inputs are ``(B, n)`` prefix predictions (column ``k`` uses ``k`` examples).
    """
    a = np.asarray(prefix_pred_a, np.float64)
    b = np.asarray(prefix_pred_b, np.float64)
    ks = [k for k in range(1, min(d, a.shape[1]))]
    if not ks:
        raise OutOfRangeError(f"MSPD needs prefixes 1..d-1 = 1..{d - 1}; got only {a.shape[1]} columns")
    return float(np.mean(spd(a[:, ks], b[:, ks], d, axis=0)))


def bootstrap_ci(values, n_boot: int = 1000, level: float = 0.95, seed: int = 0, axis: int = 0
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over ``axis`` with a percentile-bootstrap confidence interval: ``(mean, lo, hi)``."""
    v = np.moveaxis(np.asarray(values, np.float64), axis, 0)
    B = v.shape[0]
    if B < 1:
        raise ShapeError("bootstrap_ci needs at least one sample")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, B, size=(n_boot, B))
    means = v[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return v.mean(axis=0), np.quantile(means, alpha, axis=0), np.quantile(means, 1 - alpha, axis=0)


def error_curve(prefix_preds, y, d: int, n_boot: int = 1000, seed: int = 0):
    """Squared error ÷ d at each prefix length with bootstrap CI: ``(mean, lo, hi)`` each ``(n,)``."""
    e = (np.asarray(prefix_preds, np.float64) - np.asarray(y, np.float64)) ** 2 / d
    return bootstrap_ci(e, n_boot=n_boot, seed=seed)


def _repeat_context(X, y, m):
    """Each task's context repeated ``m`` times: ``(B·m, k, d)``, ``(B·m, k)``."""
    return np.repeat(X, m, axis=0), np.repeat(y, m, axis=0)


def implicit_weights(predictor, X, y, n_probe: int = 32, seed: int = 0, probe_scale: float = 1.0
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """``(ŵ (B, d), R² (B,))``: the least-squares linear fit of ``x' ↦ A(X, y)(x')`` (paper §4.2).

    Linear predictors with a ``weights`` method return their exact ``w`` (R² = 1). Otherwise
    ``n_probe ≥ d`` fresh inputs ``x' ~ N(0, probe_scale²·I)`` per task are fed as queries after
    the same context and ``ŵ = argmin Σ (wᵀx' − A(x'))²``; ``R² = 1 − SS_res/SS_tot``.
    """
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64)
    B, k, d = X.shape
    wfn = getattr(predictor, "weights", None)
    if callable(wfn):
        return np.asarray(wfn(X, y), np.float64), np.ones(B)
    if n_probe < d:
        raise OutOfRangeError(f"n_probe must be >= d = {d} to fit an implicit linear weight; got {n_probe}")
    rng = np.random.default_rng(seed)
    P = rng.standard_normal((B, n_probe, d)) * probe_scale
    Xr, yr = _repeat_context(X, y, n_probe)
    f = np.asarray(predictor.predict(Xr, yr, P.reshape(B * n_probe, d)), np.float64).reshape(B, n_probe)
    w_hat = np.einsum("bdn,bn->bd", np.linalg.pinv(P), f)
    res = f - np.einsum("bnd,bd->bn", P, w_hat)
    ss_tot = np.sum((f - f.mean(axis=1, keepdims=True)) ** 2, axis=1)
    r2 = 1.0 - np.sum(res**2, axis=1) / np.maximum(ss_tot, 1e-300)
    return w_hat, r2


def ilwd(predictor_a, predictor_b, tasks: Tasks, n_probe: int = 32, prefixes: Optional[Sequence[int]] = None,
         seed: int = 0) -> np.ndarray:
    """Implicit linear weight difference ÷ d, ``E_D ‖ŵ_A − ŵ_B‖² / d`` (paper §4.2).

    Computed for each context length in ``prefixes`` (default: all ``n`` examples of ``tasks``,
    returning a scalar); with a list of prefix lengths returns an array of the same length.
    """
    scalar = prefixes is None
    ks = [tasks.n_points] if scalar else list(prefixes)
    out = []
    for k in ks:
        if not 0 <= k <= tasks.n_points:
            raise OutOfRangeError(f"prefix length {k} outside [0, {tasks.n_points}]")
        X, y = tasks.X[:, :k], tasks.y[:, :k]
        wa, _ = implicit_weights(predictor_a, X, y, n_probe, seed)
        wb, _ = implicit_weights(predictor_b, X, y, n_probe, seed)
        out.append(np.mean(np.sum((wa - wb) ** 2, axis=1)) / tasks.d)
    return float(out[0]) if scalar else np.asarray(out)
