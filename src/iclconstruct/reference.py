"""Reference learning algorithms in numpy float64 (Akyürek et al., ICLR 2023, §3–4, App. A–C).

These are the classical predictors the paper compares trained in-context learners with
(§4, "Predictors"), written as plain float64 numpy so that circuits and trained models can
be checked against them.

Conventions (fixed once for the whole library; see ``docs/concepts.md``):

* **Sum-of-squares loss, factor 2·lr.** The paper's SGD / GD updates are gradients of
  ``L(w) = Σ_i (wᵀx_i − y_i)² + lam·‖w‖²`` (no 1/n), so one step is
  ``w ← w − 2·lr·(XᵀXw − Xᵀy + lam·w)``. The 1/n-scaled variants are explicitly named
  ``*_mean`` (:func:`batch_gd_mean`, :func:`ridge_mean`).
* **Ridge** adds ``lam`` to ``XᵀX``; the Bayes posterior mean for ``w ~ N(0, τ²I)``,
  noise ``σ²`` is ridge with ``lam = σ²/τ²``.
* **OLS** is the minimum-norm solution (Moore–Penrose pseudo-inverse) when ``n < d``.
* Inputs: ``X`` of shape ``(..., n, d)``, ``y`` of shape ``(..., n)``; any leading batch axes.
  Every solver returns the weight vector ``w`` of shape ``(..., d)`` in float64, except
  :func:`knn`, which returns the prediction ``(...)`` at ``x_query``.
* ``n = 0`` (no examples) is allowed where the answer is defined: OLS/ridge/Bayes/Newton
  give ``w = 0``, SGD/GD return the start ``w0`` (shrunk by ``lam`` for GD);
  :func:`averaging` and :func:`knn` raise :class:`~iclconstruct.errors.ShapeError`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .errors import DivergenceError, NonFiniteError, OutOfRangeError, ShapeError

__all__ = [
    "ols",
    "ridge",
    "ridge_mean",
    "sgd",
    "batch_gd",
    "batch_gd_mean",
    "sherman_morrison",
    "bayes",
    "newton",
    "newton_alpha",
    "gd_plus_plus",
    "preconditioned_gd",
    "knn",
    "averaging",
]


# --------------------------------------------------------------------------- validation
def _finite(a: np.ndarray, name: str) -> np.ndarray:
    if not np.all(np.isfinite(a)):
        raise NonFiniteError(f"{name} contains NaN or infinity; pass finite values")
    return a


def _as64(a, name: str) -> np.ndarray:
    try:
        arr = np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a, dtype=np.float64)
    except (TypeError, ValueError) as exc:  # e.g. ragged lists
        raise ShapeError(f"{name} must be a numeric array; got {type(a).__name__} ({exc})") from None
    return _finite(arr, name)


def _check_Xy(X, y, *, allow_empty: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Validate ``X (..., n, d)``, ``y (..., n)`` and return float64 copies."""
    X = _as64(X, "X")
    y = _as64(y, "y")
    if X.ndim < 2:
        raise ShapeError(f"X must be (n, d) or (..., n, d); got shape {X.shape}")
    if X.shape[-1] < 1:
        raise ShapeError(f"X must have at least one feature (d >= 1); got shape {X.shape}")
    if y.shape != X.shape[:-1]:
        raise ShapeError(
            f"y must have shape X.shape[:-1] = {X.shape[:-1]} (one label per row of X); got {y.shape}"
        )
    if not allow_empty and X.shape[-2] == 0:
        raise ShapeError("this algorithm is undefined for n = 0 examples; pass at least one (x, y) pair")
    return X, y


def _check_w0(w0, X: np.ndarray) -> np.ndarray:
    shape = X.shape[:-2] + X.shape[-1:]
    if w0 is None:
        return np.zeros(shape)
    w0 = _as64(w0, "w0")
    if w0.shape[-1] != X.shape[-1]:
        raise ShapeError(f"w0 must have last dimension d = {X.shape[-1]}; got shape {w0.shape}")
    try:
        return np.broadcast_to(w0, shape).copy()
    except ValueError:
        raise ShapeError(f"w0 of shape {w0.shape} does not broadcast to the weight shape {shape}") from None


def _check_scalar(v, name: str, *, positive: bool = False, nonneg: bool = False) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise OutOfRangeError(f"{name} must be a real number; got {v!r}") from None
    if not np.isfinite(v):
        raise NonFiniteError(f"{name} must be finite; got {v}")
    if positive and v <= 0:
        raise OutOfRangeError(f"{name} must be > 0; got {v}")
    if nonneg and v < 0:
        raise OutOfRangeError(f"{name} must be >= 0; got {v}")
    return v


def _gram(X: np.ndarray) -> np.ndarray:
    return np.einsum("...ni,...nj->...ij", X, X)


def _xty(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.einsum("...ni,...n->...i", X, y)


def _solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.solve(A, b[..., None])[..., 0]


# --------------------------------------------------------------------------- solvers
def ols(X, y) -> np.ndarray:
    """Ordinary least squares ``w = X⁺ y`` (paper §4, "OLS").

    Minimises ``Σ_i (wᵀx_i − y_i)²``; when the minimiser is not unique (``n < d`` or
    rank-deficient ``X``) returns the minimum-norm one via the Moore–Penrose pseudo-inverse.
    ``n = 0`` gives ``w = 0``.
    """
    X, y = _check_Xy(X, y)
    if X.shape[-2] == 0:
        return np.zeros(X.shape[:-2] + X.shape[-1:])
    return np.einsum("...in,...n->...i", np.linalg.pinv(X), y)


def ridge(X, y, lam: float) -> np.ndarray:
    """Ridge regression ``w = (XᵀX + lam·I)⁻¹ Xᵀy`` (paper Eq. 3, §4).

    Minimiser of the sum-of-squares objective ``Σ_i (wᵀx_i − y_i)² + lam·‖w‖²`` (no 1/n;
    see :func:`ridge_mean` for the 1/n-scaled one). ``lam`` must be > 0 (use :func:`ols`
    for ``lam = 0``).
    """
    X, y = _check_Xy(X, y)
    lam = _check_scalar(lam, "lam")
    if lam <= 0:
        raise OutOfRangeError(f"ridge needs lam > 0; got lam = {lam} (use reference.ols for the lam -> 0 limit)")
    d = X.shape[-1]
    return _solve(_gram(X) + lam * np.eye(d), _xty(X, y))


def ridge_mean(X, y, lam: float) -> np.ndarray:
    """1/n-scaled ridge: minimiser of ``(1/n)Σ_i (wᵀx_i − y_i)² + lam·‖w‖²`` = ``ridge(X, y, n·lam)``."""
    X, y = _check_Xy(X, y, allow_empty=False)
    return ridge(X, y, X.shape[-2] * _check_scalar(lam, "lam", positive=True))


def sgd(X, y, lr: float, lam: float = 0.0, w0=None) -> np.ndarray:
    """One pass of stochastic gradient descent over the examples in order (paper Eq. 11, the update of Theorem 1).

    For ``i = 1..n``: ``w ← w − 2·lr·(x_i x_iᵀ w − y_i x_i + lam·w)``, the gradient of
    ``(wᵀx_i − y_i)² + lam‖w‖²`` (sum-of-squares convention, factor 2·lr). ``w0 = 0`` by
    default. As a reference this does **not** guard against divergence: a large ``lr``
    (roughly ``2·lr·‖x_i‖² > 2``) makes ``w`` grow geometrically, possibly to inf.
    """
    X, y = _check_Xy(X, y)
    lr = _check_scalar(lr, "lr", nonneg=True)
    lam = _check_scalar(lam, "lam", nonneg=True)
    w = _check_w0(w0, X)
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(X.shape[-2]):
            x = X[..., i, :]
            r = np.einsum("...i,...i->...", x, w) - y[..., i]
            w = w - 2.0 * lr * (r[..., None] * x + lam * w)
    return w


def batch_gd(X, y, lr: float, steps: int = 1, lam: float = 0.0, w0=None) -> np.ndarray:
    """Full-batch gradient descent (paper §4, "one-step GD"; von Oswald et al. 2023).

    ``steps`` times: ``w ← w − 2·lr·(XᵀXw − Xᵀy + lam·w)`` — the gradient of
    ``Σ_i (wᵀx_i − y_i)² + lam‖w‖²`` (sum-of-squares, factor 2·lr; :func:`batch_gd_mean`
    uses 1/n). ``w0 = 0`` default, so one step gives ``2·lr·Xᵀy``. Divergence for large
    ``lr`` is not guarded against (reference semantics).
    """
    X, y = _check_Xy(X, y)
    lr = _check_scalar(lr, "lr", nonneg=True)
    lam = _check_scalar(lam, "lam", nonneg=True)
    steps = _check_steps(steps)
    w = _check_w0(w0, X)
    S, b = _gram(X), _xty(X, y)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            w = w - 2.0 * lr * (np.einsum("...ij,...j->...i", S, w) - b + lam * w)
    return w


def batch_gd_mean(X, y, lr: float, steps: int = 1, lam: float = 0.0, w0=None) -> np.ndarray:
    """1/n-scaled full-batch GD: ``w ← w − 2·lr·((1/n)(XᵀXw − Xᵀy) + lam·w)``.

    Gradient of ``(1/n)Σ_i (wᵀx_i − y_i)² + lam‖w‖²``; equals :func:`batch_gd` with
    ``lr/n`` and ``n·lam``. Needs ``n >= 1``.
    """
    X, y = _check_Xy(X, y, allow_empty=False)
    n = X.shape[-2]
    lr = _check_scalar(lr, "lr", nonneg=True)
    lam = _check_scalar(lam, "lam", nonneg=True)
    return batch_gd(X, y, lr / n, steps=steps, lam=n * lam, w0=w0)


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise OutOfRangeError(f"steps must be a non-negative integer; got {steps!r}")
    return int(steps)


def sherman_morrison(A_inv, u, v) -> np.ndarray:
    """Sherman–Morrison rank-one update (paper Eq. 5, App. A):

    ``(A + u vᵀ)⁻¹ = A⁻¹ − (A⁻¹ u vᵀ A⁻¹) / (1 + vᵀ A⁻¹ u)``.

    ``A_inv (..., d, d)``, ``u, v (..., d)``. Raises :class:`OutOfRangeError` when
    ``1 + vᵀA⁻¹u`` is (numerically) zero, i.e. ``A + u vᵀ`` is singular.
    """
    A_inv = _as64(A_inv, "A_inv")
    u = _as64(u, "u")
    v = _as64(v, "v")
    if A_inv.ndim < 2 or A_inv.shape[-1] != A_inv.shape[-2]:
        raise ShapeError(f"A_inv must be square (..., d, d); got shape {A_inv.shape}")
    d = A_inv.shape[-1]
    if u.shape[-1:] != (d,) or v.shape[-1:] != (d,):
        raise ShapeError(f"u and v must have last dimension d = {d}; got {u.shape} and {v.shape}")
    Au = np.einsum("...ij,...j->...i", A_inv, u)
    vA = np.einsum("...i,...ij->...j", v, A_inv)
    denom = 1.0 + np.einsum("...i,...i->...", v, Au)
    scale = np.maximum(1.0, np.abs(np.einsum("...i,...i->...", v, Au)))
    if np.any(np.abs(denom) <= 1e-12 * scale):
        raise OutOfRangeError("1 + vᵀA⁻¹u is zero: A + u vᵀ is singular; choose u, v with vᵀA⁻¹u != -1")
    return A_inv - np.einsum("...i,...j->...ij", Au, vA) / denom[..., None, None]


def bayes(X, y, noise_var: float, prior_var: float) -> np.ndarray:
    """Bayes posterior mean for ``w ~ N(0, prior_var·I)``, ``y = Xw + N(0, noise_var)`` (paper Eq. 6).

    Equals ``ridge(X, y, lam = noise_var / prior_var)``; ``noise_var = 0`` is the OLS
    (minimum-norm) limit.
    """
    noise_var = _check_scalar(noise_var, "noise_var", nonneg=True)
    prior_var = _check_scalar(prior_var, "prior_var", positive=True)
    if noise_var == 0.0:
        return ols(X, y)
    return ridge(X, y, noise_var / prior_var)


def newton_alpha(S: np.ndarray) -> np.ndarray:
    """Safe default start scale for :func:`newton`: ``alpha = 1/λ_max(S)²`` (half the bound 2/λ_max²)."""
    lmax = np.linalg.eigvalsh(S)[..., -1]
    with np.errstate(divide="ignore"):
        return np.where(lmax > 0, 1.0 / np.maximum(lmax, 1e-300) ** 2, 0.0)


def newton(X, y, steps: int, alpha=None) -> np.ndarray:
    """Iterative Newton (Newton–Schulz) for the pseudo-inverse (Fu et al. 2023; paper §4 related).

    ``S = XᵀX``, ``M_0 = alpha·S``, ``M ← M(2I − S M)`` for ``steps`` iterations; returns
    ``w = M Xᵀy`` which converges (quadratically, after a warm-up of about
    ``log2(κ(S))`` steps) to the OLS minimum-norm solution. Convergence needs
    ``0 < alpha < 2/λ_max(S)²``; the default is ``1/λ_max(S)²`` per batch element. An
    explicit ``alpha`` outside that range raises :class:`DivergenceError`.
    ``alpha="trace"`` is the rule a fixed circuit can compute in context,
    ``alpha = 1/(n + tr XᵀX)²`` (safe: ``λ_max ≤ tr``), used by :func:`iclconstruct.circuits.newton`
    with ``alpha=None``.
    """
    X, y = _check_Xy(X, y)
    steps = _check_steps(steps)
    d = X.shape[-1]
    S = _gram(X)
    if alpha is None:
        a = newton_alpha(S)
    elif isinstance(alpha, str):
        if alpha != "trace":
            raise OutOfRangeError(f"alpha must be a positive number, None or 'trace'; got {alpha!r}")
        denom = np.asarray(X.shape[-2] + np.trace(S, axis1=-2, axis2=-1), dtype=np.float64)
        a = np.where(denom > 0, 1.0 / np.maximum(denom, 1.0) ** 2, 0.0)  # n = 0: S = 0, w = 0
    else:
        alpha = _check_scalar(alpha, "alpha", positive=True)
        lmax = np.linalg.eigvalsh(S)[..., -1] if X.shape[-2] else np.zeros(S.shape[:-2])
        if np.any(alpha * lmax**2 >= 2.0):
            raise DivergenceError(
                f"newton alpha = {alpha} >= 2/λ_max(XᵀX)² = {2.0 / np.max(lmax) ** 2:.4g}: iteration would "
                "diverge; pass a smaller alpha or alpha=None for the safe default"
            )
        a = np.full(S.shape[:-2], alpha)
    M = a[..., None, None] * S
    two_I = 2.0 * np.eye(d)
    for _ in range(steps):
        M = M @ (two_I - S @ M)
    return np.einsum("...ij,...j->...i", M, _xty(X, y))


def gd_plus_plus(X, y, lr: float, gamma: float, steps: int = 1) -> np.ndarray:
    """GD++ (von Oswald et al. 2023): GD on ``w`` while every input is moved by ``x ← (I − γ·XᵀX)·x``.

    With ``S_0 = XᵀX``, ``b_0 = Xᵀy``, ``H_k = I − γ·S_k`` and ``w = 0``, for ``k = 0..steps−1``::

        w ← w − 2·lr·(S_k w − b_k);   S_{k+1} = H_k S_k H_k;   b_{k+1} = H_k b_k

    (the Gram matrix and ``Xᵀy`` of the transformed inputs ``X_{k+1} = X_k H_k``). The query is
    transformed too, ``q_steps = H_{steps−1} ⋯ H_0 x_q``, and the prediction is ``wᵀ q_steps``;
    returned is the equivalent weight vector ``H_0 ⋯ H_{steps−1} w`` (the ``H_k`` are symmetric),
    so that ``prediction = returned · x_q``.
    """
    X, y = _check_Xy(X, y)
    lr = _check_scalar(lr, "lr", nonneg=True)
    gamma = _check_scalar(gamma, "gamma", nonneg=True)
    steps = _check_steps(steps)
    d = X.shape[-1]
    S, b = _gram(X), _xty(X, y)
    w = np.zeros(S.shape[:-1])
    Hs = []
    for _ in range(steps):
        w = w - 2.0 * lr * (np.einsum("...ij,...j->...i", S, w) - b)
        H = np.eye(d) - gamma * S
        Hs.append(H)
        S = H @ S @ H
        b = np.einsum("...ij,...j->...i", H, b)
    for H in reversed(Hs):
        w = np.einsum("...ij,...j->...i", H, w)
    return w


def preconditioned_gd(X, y, lr: float, steps: int = 1, P=None, w0=None) -> np.ndarray:
    """Preconditioned full-batch GD (Ahn et al. 2023): ``steps`` times ``w ← w − 2·lr·P(XᵀXw − Xᵀy)``.

    ``P`` ``(d, d)`` defaults to ``I`` (then this is :func:`batch_gd`); sum-of-squares convention.
    """
    X, y = _check_Xy(X, y)
    lr = _check_scalar(lr, "lr", nonneg=True)
    steps = _check_steps(steps)
    d = X.shape[-1]
    P = np.eye(d) if P is None else _as64(P, "P")
    if P.shape != (d, d):
        raise ShapeError(f"P must have shape ({d}, {d}); got {P.shape}")
    w = _check_w0(w0, X)
    S, b = _gram(X), _xty(X, y)
    for _ in range(steps):
        w = w - 2.0 * lr * np.einsum("ij,...j->...i", P, np.einsum("...ij,...j->...i", S, w) - b)
    return w


def knn(X, y, x_query, k: int = 3, weights: str = "uniform") -> np.ndarray:
    """k-nearest-neighbour regression (paper §4, "k-NN"): prediction at ``x_query``, shape ``(...)``.

    Averages the labels of the ``min(k, n)`` examples closest to ``x_query`` in Euclidean
    distance; ``weights="inverse_square"`` weights them by ``1/‖x_i − x_query‖²`` (an exact
    match takes the mean of the exactly matching labels). Needs ``n >= 1``.
    """
    X, y = _check_Xy(X, y, allow_empty=False)
    q = _as64(x_query, "x_query")
    if q.shape != X.shape[:-2] + X.shape[-1:]:
        raise ShapeError(f"x_query must have shape {X.shape[:-2] + X.shape[-1:]} to match X; got {q.shape}")
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise OutOfRangeError(f"k must be a positive integer; got {k!r}")
    if weights not in ("uniform", "inverse_square"):
        raise OutOfRangeError(f"weights must be 'uniform' or 'inverse_square'; got {weights!r}")
    k = min(int(k), X.shape[-2])
    d2 = np.sum((X - q[..., None, :]) ** 2, axis=-1)  # (..., n)
    idx = np.argsort(d2, axis=-1, kind="stable")[..., :k]
    dk = np.take_along_axis(d2, idx, axis=-1)
    yk = np.take_along_axis(y, idx, axis=-1)
    if weights == "uniform":
        return yk.mean(axis=-1)
    exact = dk <= 1e-300
    with np.errstate(divide="ignore"):
        wts = np.where(exact.any(axis=-1, keepdims=True), exact.astype(np.float64), 1.0 / np.maximum(dk, 1e-300))
    return np.sum(wts * yk, axis=-1) / np.sum(wts, axis=-1)


def averaging(X, y) -> np.ndarray:
    """Averaging estimator ``w = (1/n) Σ_i y_i x_i`` (paper §4; the 1/n version of one GD step from 0)."""
    X, y = _check_Xy(X, y, allow_empty=False)
    return _xty(X, y) / X.shape[-2]
